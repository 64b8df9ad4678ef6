"""``qdebug merge``: shard traces (``qdebug trace --shard K/N``) into the trace of one whole run.

Statistics are sums over samples, so shards merge exactly: per-sample statistics are
concatenated in sample order and pooled again batch by batch (the batches of the whole run),
pooled op statistics and per-channel sums add, ranges take min/max. Every pooled metric, the
worst samples and the culprits are derived again from those sums by the trace writer itself.
User metrics: a per-sample metric's means merge weighted by each shard's samples (exact);
one of the pooled statistics or of the whole set needs its function, so it is kept as NaN
with the reason.

Shards are untrusted files: every array of theirs is read through ``Trace``'s checked reads
(kind, shape, declared size, what a trace may read in all); raw h5py only lists the groups
and datasets a shard has. Pure h5py + numpy: no TensorFlow.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import h5py
import numpy as np

from qdebug import metrics, user_metrics
from qdebug.analysis import worst_samples
from qdebug.analysis.culprits import find_culprits
from qdebug.analysis.kernels import KERNEL_ATTRS, merged_kernel_attrs
from qdebug.shards.shard_file import Shard, check_cover, check_same, damaged, open_shard, refuse
from qdebug.shards.slicing import SHARD_ATTRS
from qdebug.store.writer import TraceWriter, check_target

#: Worst samples a trace keeps (the tracer's ``Measurer.worst_k``).
WORST_K = 8
#: Root attributes a merged trace does not copy from its first shard.
_DROP = {
    "format", "schema_version", "complete", "n_samples", "n_stored", "created", "command_line",
    "instrumentation_mismatched_samples", "instrumentation_max_abs_diff", "segments",
    "instrumentation_checked_samples",
    "warnings", *SHARD_ATTRS, *KERNEL_ATTRS,  # the kernel numbers are pooled, not copied
}


def merge_traces(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    store_samples: int | None = None,
    command_line: str = "",
) -> Path:
    """Merge shard traces into ``out`` (written atomically) and return its path.

    Args:
        paths: shard traces of one model and conversion, covering every sample once.
        store_samples: how many samples keep activations (default: the shards' ``--store-samples``).
        command_line: recorded as the merged trace's ``command_line``.

    Raises:
        ShardMismatchError: shards of different models/conversions, overlapping or missing
            slices, or a trace that is not a shard. Nothing is written then.
        TraceFileError: a damaged or unreadable shard.
    """
    out = Path(out)
    check_target(out)
    if not paths:
        raise refuse("no shard traces given")
    with ExitStack() as stack:
        shards = []
        for p in paths:
            shard = open_shard(Path(p))
            stack.callback(shard.trace.close)
            shards.append(shard)
        check_same(shards)
        ordered = check_cover(shards)
        target = out.resolve()
        for s in ordered:
            if s.path.resolve() == target:
                raise refuse(f"--out {out} is one of the shards", "write the merge elsewhere")
        budget = store_samples if store_samples is not None else max(
            s.info.store_samples for s in ordered
        )
        return _write(ordered, out, budget, command_line)
    raise AssertionError("unreachable")  # pragma: no cover


def _write(shards: list[Shard], out: Path, budget: int, command_line: str) -> Path:
    t0 = shards[0].trace
    input_names = list(t0.meta.input_names)
    attrs = {k: v for k, v in t0.meta.raw.items() if k not in _DROP}  # copied as recorded
    attrs["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    attrs["command_line"] = _utf8(command_line or "qdebug merge " + " ".join(
        str(s.path) for s in shards
    ))
    attrs["merged_from"] = [
        {"file": _utf8(str(s.path)), "shard": str(s.info.spec), "start": s.info.start,
         "count": s.info.count, "command_line": s.trace.meta.command_line}
        for s in shards
    ]
    writer = TraceWriter(
        out,
        attrs=attrs,
        layers=t0.layers,
        outputs=t0.outputs,
        input_names=input_names,
        tflite=t0.tflite_bytes(),
        float_islands=t0.float_islands,
        store_samples=budget,
        ops=t0.ops,
        rank_culprits=find_culprits,
    )
    with writer:
        # per-sample means merge exactly, weighted by samples (user_metrics.merge_stored)
        writer.add_custom(user_metrics.merge_parts([s.trace for s in shards]))
        with ExitStack() as stack:
            files = [stack.enter_context(h5py.File(s.path, "r")) for s in shards]
            for s, f in zip(shards, files, strict=True):
                _copy_statistics(s, f, writer)
            _copy_stored(shards, writer, budget, input_names)
            if "analysis" in files[0]:
                writer.write_analysis(
                    _analysis(shards, files, input_names), _weights(shards[0], files[0])
                )
            _merge_labels(shards, writer)
            _merge_layer_worst(shards, writer, budget, input_names)
        warnings: list[str] = []
        for s in shards:
            for w in s.trace.meta.warnings:
                if w not in warnings:
                    warnings.append(w)
        diffs = [s.trace.meta.instrumentation_max_abs_diff for s in shards]
        return writer.commit(
            instrumentation_mismatched_samples=sum(
                s.trace.meta.instrumentation_mismatched_samples for s in shards
            ),
            instrumentation_max_abs_diff=max(0.0 if math.isnan(d) else d for d in diffs),
            instrumentation_checked_samples=sum(
                s.trace.meta.instrumentation_checked_samples for s in shards
            ),
            segments=t0.meta.segments,
            warnings=warnings,
            **merged_kernel_attrs([s.trace.meta for s in shards]),
        )


def _utf8(text: str) -> str:
    """``text`` as UTF-8 can store it: a file name that is not UTF-8 (bytes Python keeps as
    surrogates) is recorded with U+FFFD where its bytes were not text."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _copy_statistics(s: Shard, f: h5py.File, writer: TraceWriter) -> None:
    """Per-sample statistics and top-1 flags in the batches the shard was traced in (the
    batches of the whole run: pooled sums then add up in the same order); the shard's pooled
    op statistics once (ops have no per-sample rows)."""
    t = s.trace
    layers, outs = "metrics/layers/per_sample", "metrics/outputs/per_sample"
    n, bs = s.info.count, s.info.batch_size
    wide, n_out = (n, len(t.layers)), (n, len(t.outputs))
    ops: dict[str, np.ndarray] | None = None
    if t.ops:
        pooled = "metrics/ops/pooled"
        ops = {k: t.read_vector(f"{pooled}/stat_{k}", len(t.ops))[None, :]
               for k in metrics.STATS if "stat_" + k in f[pooled]}
    layer_stats = [k for k in metrics.STATS if k in f[layers]]
    out_stats = [k for k in metrics.STATS if k in f[outs]]
    for a in range(0, n, bs):
        rows = slice(a, min(n, a + bs))
        writer.add_batch(
            {k: t.read_part(f"{layers}/{k}", wide, rows) for k in layer_stats},
            {k: t.read_part(f"{outs}/{k}", n_out, rows) for k in out_stats},
            np.nan_to_num(t.read_part("metrics/outputs/top1_match", n_out, rows)).astype(np.int8),
            ops if a == 0 and ops else None,
        )


def _copy_stored(
    shards: list[Shard], writer: TraceWriter, budget: int, input_names: list[str]
) -> None:
    """The first ``budget`` stored samples, in sample order (those a whole run stores)."""
    left = budget
    for s in shards:
        t = s.trace
        if left <= 0:
            break
        layers = [i for i in range(len(t.layers)) if t.has_activations(i)]
        for sample in t.stored_samples[:left].tolist():
            ins = t.inputs(sample)
            missing = [n for n in input_names if n not in ins]
            if missing:
                raise damaged(t.path, f"stored sample {sample} lacks input(s) {missing}")
            values: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            local: dict[int, np.ndarray] = {}
            for i in layers:
                act = t.activation(i, sample)
                values[i] = (act.float, act.raw)
                if act.float_local is not None:
                    local[i] = act.float_local
            writer.store_sample(sample, [ins[n] for n in input_names], values, local)
            left -= 1


def _vector(s: Shard, key: str, length: int | None = None) -> np.ndarray:
    """A checked 1-D numeric dataset of the shard as float64."""
    return s.trace.read_vector(key, length)


def _analysis(shards: list[Shard], files: list[h5py.File], names: list[str]) -> dict[str, Any]:
    """``/analysis`` of the whole run: channel sums add, ranges min/max, ``segment_check`` from
    the shard holding sample 0, worst samples chosen again from every shard's worst list."""
    n_layers = len(shards[0].trace.layers)
    out: dict[str, Any] = {}
    for key, pick in (("float_min", np.fmin), ("float_max", np.fmax),
                      ("int8_min", np.fmin), ("int8_max", np.fmax)):
        vals = [_vector(s, f"analysis/ranges/{key}", n_layers) for s in shards]
        out[key] = pick.reduce(vals)
    out["segment_check"] = _vector(shards[0], "analysis/segment_check", n_layers)
    channels: dict[int, SimpleNamespace] = {}
    for s, f in zip(shards, files, strict=True):
        group = f.get("analysis/channels")
        if not isinstance(group, h5py.Group):
            raise damaged(s.path, "analysis/channels is missing")
        for name in group:
            if not (name.isdigit() and int(name) < n_layers):
                raise damaged(s.path, f"analysis/channels/{name} names no layer")
            key = f"analysis/channels/{name}"
            f2 = _vector(s, f"{key}/sum_f2")
            e2 = _vector(s, f"{key}/sum_e2", len(f2))
            clipped = _vector(s, f"{key}/clipped", len(f2))
            saturated = (
                _vector(s, f"{key}/saturated", len(f2))
                if f"{key}/saturated" in f
                else None
            )
            cur = channels.get(int(name))
            if cur is None:
                channels[int(name)] = SimpleNamespace(
                    sum_f2=f2, sum_e2=e2, clipped=clipped, saturated=saturated
                )
            elif len(cur.sum_f2) != len(f2):
                raise refuse(f"{s.path}: layer {name} has {len(f2)} channels, not "
                              f"{len(cur.sum_f2)}")
            else:
                cur.sum_f2, cur.sum_e2, cur.clipped = (
                    cur.sum_f2 + f2, cur.sum_e2 + e2, cur.clipped + clipped)
                # Saturation counts (schema 1.2) add up when every shard has them.
                cur.saturated = (
                    cur.saturated + saturated
                    if cur.saturated is not None and saturated is not None
                    else None
                )
    out["channels"] = dict(sorted(channels.items()))
    out["worst_index"], out["worst_inputs"] = _worst(shards, files, names)
    return out


def _worst(
    shards: list[Shard], files: list[h5py.File], names: list[str]
) -> tuple[np.ndarray, list[list[np.ndarray]]]:
    """The ``WORST_K`` samples of lowest first-output SQNR among every shard's worst, ranked as
    the tracer ranks them (SQNR recomputed from the per-sample statistics; ties: lower index)."""
    found: list[tuple[tuple[float, int], int, list[np.ndarray]]] = []
    for s, f in zip(shards, files, strict=True):
        idx, inputs = s.trace.worst_samples()
        if not len(idx) or not s.trace.outputs:
            continue
        rows = idx - s.info.start
        if rows.min() < 0 or rows.max() >= s.info.count:
            raise damaged(s.path, "worst samples lie outside the shard's slice")
        if any(n not in inputs for n in names):
            raise damaged(s.path, "the worst samples' inputs are incomplete")
        g = "metrics/outputs/per_sample"
        shape = (s.trace.n_samples, len(s.trace.outputs))
        stats = {k: s.trace.read_part(f"{g}/{k}", shape, (slice(None), 0))[rows]
                 for k in metrics.ACCUMULATED_STATS if k in f[g]}
        sqnr = metrics.derive(stats)["sqnr_db"]
        for j, sample in enumerate(idx.tolist()):
            value = float(sqnr[j])
            key = (-value if np.isfinite(value) else -1e9, -sample)
            found.append((key, sample, [inputs[n][j] for n in names]))
    found.sort(key=lambda t: t[0], reverse=True)
    chosen = found[:WORST_K]
    return np.array([t[1] for t in chosen], dtype=np.int64), [t[2] for t in chosen]


def _weights(s: Shard, f: h5py.File) -> list[SimpleNamespace]:
    """The weight statistics of the first shard (weights are the same in every shard)."""
    g = "analysis/weights"
    layer = _vector(s, f"{g}/layer").astype(np.int64)
    n = len(layer)
    tensor = s.trace.read_strings(f"{g}/tensor_name", n)
    axis = _vector(s, f"{g}/channel_axis", n).astype(np.int64)
    sqnr = _vector(s, f"{g}/sqnr_db", n)
    max_err = _vector(s, f"{g}/max_abs_error", n)
    outliers = s.trace.read_strings(f"{g}/outlier_channels", n)
    rows = []
    for j in range(n):
        if not 0 <= layer[j] < len(s.trace.layers):
            raise damaged(s.path, f"{g}/layer names a layer the trace does not have")
        ch = s.trace.weight_channels(int(layer[j])) or {
            "sqnr_db": np.zeros(0), "range": np.zeros(0)
        }
        try:
            out_ch = json.loads(outliers[j])
        except ValueError as exc:
            raise damaged(s.path, f"{g}/outlier_channels is not JSON") from exc
        rows.append(SimpleNamespace(
            layer=int(layer[j]), tensor_name=tensor[j], channel_axis=int(axis[j]),
            sqnr_db=float(sqnr[j]), max_abs_error=float(max_err[j]), outlier_channels=out_ch,
            channel_sqnr_db=ch["sqnr_db"], channel_range=ch["range"],
        ))
    return rows


def _merge_layer_worst(
    shards: list[Shard], writer: TraceWriter, budget: int, input_names: list[str]
) -> None:
    """``/samples/layer_worst`` of the whole run (``worst_samples.merge``); the samples the
    merged trace stores (the first ``budget`` the shards store) need no kept input."""
    stored = np.concatenate([s.trace.stored_samples for s in shards])[:budget]
    worst = worst_samples.merge([s.trace for s in shards], set(stored.tolist()), input_names)
    if worst is not None:
        writer.write_layer_worst(worst)


def _merge_labels(shards: list[Any], writer: TraceWriter) -> None:
    """``/labels`` of the shards, in sample order, when every shard has them."""
    parts = [s.trace.labels() for s in shards]
    if not parts or any(p is None for p in parts):
        return
    first = parts[0]
    assert first is not None
    label, float_pred, int8_pred = (
        np.concatenate([p[k] for p in parts if p is not None])
        for k in ("label", "float_pred", "int8_pred")
    )
    writer.write_labels(label, float_pred, int8_pred, first["output"], first["source"])
