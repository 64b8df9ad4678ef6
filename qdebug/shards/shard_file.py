"""The shard traces ``qdebug merge`` reads, opened as untrusted files, and whether they are the
slices of one run: the same model, conversion, kernels and data, and every sample exactly once."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qdebug.errors import ShardMismatchError, TraceFileError
from qdebug.shards.slicing import ShardInfo, shard_info
from qdebug.store.reader import Trace

#: Root attributes every shard must share: same model, conversion, kernels and data.
SAME_ATTRS = (
    "model_sha256", "converter", "tflite_source", "kernels", "litert_version", "view",
    "input_names", "data_source", "calib_source", "keras_flavour",
)

@dataclass
class Shard:
    path: Path
    trace: Trace
    info: ShardInfo
    sha256: str


def refuse(message: str, hint: str = "") -> ShardMismatchError:
    return ShardMismatchError(
        message, hint or "merge the shards of one `qdebug trace … --shard K/N` command"
    )


def damaged(path: Path, detail: str) -> TraceFileError:
    return TraceFileError(
        f"{path} is a damaged trace: {detail}",
        "re-create it with `qdebug trace`, or ask for the file again",
    )


def open_shard(path: Path) -> Shard:
    trace = Trace(path)
    try:
        try:
            info = shard_info(trace.meta)
        except ValueError as exc:
            raise damaged(trace.path, str(exc)) from exc
        if info is None:
            raise refuse(
                f"{path} is not a shard trace (it has no shard attribute)",
                "trace slices with `qdebug trace … --shard K/N`, then merge those",
            )
        if info.count != trace.n_samples:
            raise damaged(trace.path, f"shard_count {info.count} but n_samples {trace.n_samples}")
        stored = trace.stored_samples
        if len(stored) and (stored.min() < info.start or stored.max() >= info.end):
            raise damaged(trace.path, "stored samples lie outside the shard's slice")
        sha = hashlib.sha256(trace.tflite_bytes()).hexdigest()
        recorded = trace.meta.int8_tflite_sha256
        if recorded and recorded != sha:
            raise damaged(trace.path, "the .tflite bytes do not match their recorded sha256")
    except BaseException:
        trace.close()
        raise
    return Shard(Path(path), trace, info, sha)


def _rows(records: Sequence[Any]) -> list[str]:
    return [json.dumps(asdict(r), sort_keys=True) for r in records]


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "…"


#: Keys of a ``SAME_ATTRS`` attribute that the shards of one run may record differently: how
#: the calibration was made is decided in each process by the time it measures, and the INT8
#: model it made is compared by its sha256 anyway.
_MAY_DIFFER = {"converter": ("calibration",)}


def _comparable(key: str, value: Any) -> Any:
    drop = _MAY_DIFFER.get(key, ())
    if drop and isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in drop}
    return value


def _differences(a: Shard, b: Shard) -> Iterator[str]:
    """What makes ``b`` another model, conversion or run than ``a`` (first found first)."""
    ta, tb = a.trace, b.trace
    if ta.schema_version != tb.schema_version:
        yield f"trace schemas {ta.schema_version} vs {tb.schema_version}"
    if a.sha256 != b.sha256:
        yield f"INT8 models (.tflite sha256 {a.sha256[:12]}… vs {b.sha256[:12]}…)"
    for what, x, y in (
        ("layer tables", ta.layers, tb.layers),
        ("op tables", ta.ops, tb.ops),
        ("outputs", ta.outputs, tb.outputs),
    ):
        if _rows(x) != _rows(y):
            yield what
    for key in SAME_ATTRS:  # as recorded, whatever their type
        va, vb = _comparable(key, ta.meta.raw.get(key)), _comparable(key, tb.meta.raw.get(key))
        if va != vb:
            yield f"{key} ({_short(va)} vs {_short(vb)})"
    if a.info.total != b.info.total:
        yield f"sample counts ({a.info.total} vs {b.info.total} samples in the data)"
    if a.info.batch_size != b.info.batch_size:
        yield f"batch sizes ({a.info.batch_size} vs {b.info.batch_size})"


def check_same(shards: list[Shard]) -> None:
    first = shards[0]
    for other in shards[1:]:
        for difference in _differences(first, other):
            raise refuse(f"cannot merge {other.path} with {first.path}: different {difference}")


def check_cover(shards: list[Shard]) -> list[Shard]:
    """The shards in sample order; refused when slices overlap or leave samples out."""
    ordered = sorted(shards, key=lambda s: (s.info.start, s.info.spec.k))

    def where(s: Shard) -> str:
        return f"{s.path} (shard {s.info.spec}, samples {s.info.start}–{s.info.end - 1})"

    for a, b in itertools.pairwise(ordered):
        if b.info.start < a.info.end:
            raise refuse(
                f"cannot merge {where(b)} with {where(a)}: their slices overlap",
                "give each slice once",
            )
    total = ordered[0].info.total
    edges = [0] + [x for s in ordered for x in (s.info.start, s.info.end)] + [total]
    for lo, hi in zip(edges[::2], edges[1::2], strict=True):
        if lo < hi:
            n = ordered[0].info.spec.n
            raise refuse(
                f"samples {lo}–{hi - 1} of {total} are in no shard given",
                f"merge all {n} shards, 1/{n} … {n}/{n}",
            )
    return ordered
