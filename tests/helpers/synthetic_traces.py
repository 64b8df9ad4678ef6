"""Synthetic traces written with the real TraceWriter: a chain of Dense-like layers whose int8
values are the float values plus chosen noise, so tests control exactly which layer gets worse."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from qdebug import metrics, sums
from qdebug.analysis.culprits import find_culprits
from qdebug.store import LayerRecord, OutputRecord, TraceWriter
from qdebug.store.schema import CulpritRanker

SCALE = 0.05
ZERO_POINT = 0


def make_trace(
    path: Path,
    *,
    layers: int = 8,
    samples: int = 32,
    width: int = 10,
    noise_lsb: Mapping[int, float] | None = None,
    base_noise_lsb: float = 0.3,
    names: Sequence[str] | None = None,
    statuses: Mapping[int, str] | None = None,
    model_name: str = "chain",
    input_name: str = "x",
    sha256: str = "abc",
    store: int = 0,
    seed: int = 0,
    on_grid: Sequence[int] = (),
    rank_culprits: CulpritRanker = find_culprits,
) -> Path:
    """Write a complete trace; layer 0 is the input, the last layer the classifier output.

    Args:
        noise_lsb: per layer index, the std of the error added to that layer (in LSB);
            other layers get ``base_noise_lsb``.
        names: layer names (default ``x``, ``l1``, ``l2``, …).
        statuses: per layer index, a status other than ``matched`` (``fused``/``folded`` layers
            get NaN metrics, as the tracer writes them).
        store: how many samples keep activations and inputs.
        on_grid: layers whose float values lie on the int8 grid (no error: +inf dB).
        rank_culprits: what ranks the culprits written (default: qdebug's own).
    """
    rng = np.random.default_rng(seed)
    noise = {i: base_noise_lsb for i in range(layers)} | dict(noise_lsb or {})
    names = list(names or [input_name] + [f"l{i}" for i in range(1, layers)])
    statuses = dict(statuses or {})
    records = []
    for i, name in enumerate(names):
        status = "input" if i == 0 else statuses.get(i, "matched")
        own = status in ("input", "matched", "unverified")
        records.append(LayerRecord(
            name, "InputLayer" if i == 0 else "Dense", [] if i == 0 else [names[i - 1]],
            [None, width], status, related="" if own else names[i - 1],
            tensor_name=f"t{i}" if own else "", tensor_index=i if own else -1,
            op_type=("QUANTIZE" if i == 0 else "FULLY_CONNECTED") if own else "",
            dtype="int8" if own else "", scale=SCALE if own else float("nan"),
            zero_point=ZERO_POINT, match_rel_error=0.0,
        ))
    outputs = [OutputRecord(names[-1], names[-1], f"t{layers - 1}", SCALE, ZERO_POINT, True)]
    qp = metrics.QuantParams(SCALE, ZERO_POINT)
    f = rng.normal(0.0, 1.0, size=(layers, samples, width)).astype(np.float32)
    for i in on_grid:
        f[i] = (np.clip(np.round(f[i] / SCALE), -128, 127) * SCALE).astype(np.float32)
    raws = []
    for i in range(layers):
        exact = 0.0 if i in on_grid else noise[i]
        q = f[i] / SCALE + rng.normal(0.0, exact, size=f[i].shape)
        raws.append(np.clip(np.round(q) + ZERO_POINT, -128, 127).astype(np.int8))
    per_layer = []
    for i, r in enumerate(records):
        st = sums.sample_stats(f[i], raws[i], qp)
        if not r.measured:
            st = {k: np.full_like(v, np.nan) for k, v in st.items()}
        per_layer.append(st)
    layer_stats = {k: np.stack([s[k] for s in per_layer], axis=1) for k in per_layer[0]}
    out_stats = {k: v[:, None] for k, v in per_layer[-1].items()}
    last_q = metrics.dequantize(raws[-1], qp)
    top1 = metrics.top1_match(f[-1], last_q).astype(np.int8)[:, None]
    with TraceWriter(
        path,
        attrs={"model_name": model_name, "model_sha256": sha256, "input_names": [input_name],
               "data_source": "synthetic", "converter": {"calib_samples": samples}},
        layers=records, outputs=outputs, input_names=[input_name], tflite=b"TFL3" + bytes(60),
        float_islands=[], store_samples=store, rank_culprits=rank_culprits,
    ) as w:
        w.add_batch(layer_stats, out_stats, top1)
        for s in range(min(store, samples)):
            acts = {i: (f[i][s], raws[i][s]) for i, r in enumerate(records) if r.measured}
            w.store_sample(s, [f[0][s]], acts)
        return w.commit()
