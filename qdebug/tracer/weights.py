"""Float weights (as folded by the converter, e.g. BatchNorm into the conv) against the INT8
model's dequantized weights, per layer and per output channel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qdebug.metrics import sqnr_from_sums
from qdebug.store.schema import LayerRecord
from qdebug.tracer.litert import LiteModel, OpInfo

#: A channel whose max |w| exceeds this multiple of the median channel's is an outlier.
OUTLIER_FACTOR = 8.0


@dataclass
class WeightStats:
    """The quantized weight tensor of one layer's op."""

    layer: int
    tensor_name: str
    channel_axis: int
    sqnr_db: float
    max_abs_error: float
    channel_sqnr_db: np.ndarray
    channel_range: np.ndarray
    """max |w| per channel."""
    outlier_channels: list[int]


def align_ops(twin: LiteModel, int8: LiteModel) -> dict[int, int]:
    """INT8 op index → twin op index, by position among compute ops (empty if they differ)."""
    t_ops, q_ops = twin.compute_ops(), int8.compute_ops()
    if [o.op_type for o in t_ops] != [o.op_type for o in q_ops]:
        return {}
    return {q.index: t.index for t, q in zip(t_ops, q_ops, strict=True)}


def _has_weight(lite: LiteModel, op: OpInfo) -> bool:
    if len(op.inputs) < 2 or op.inputs[1] < 0:
        return False
    w = op.inputs[1]
    return lite.tensors[w].dtype == np.int8 and w not in lite.producer


def _weighted_op(lite: LiteModel, tensor: int, owned: set[int]) -> OpInfo | None:
    """The op with a constant int8 weight among those computing ``tensor`` from other layers'
    tensors (e.g. the FULLY_CONNECTED before a fused SOFTMAX)."""
    stack, seen = [tensor], set()
    while stack:
        t = stack.pop()
        op = lite.producer.get(t)
        if op is None or op.index in seen:
            continue
        seen.add(op.index)
        if _has_weight(lite, op):
            return op
        stack.extend(i for i in op.inputs if i >= 0 and i not in owned and i in lite.producer)
    return None


def _sqnr(f: np.ndarray, e: np.ndarray, axis: tuple[int, ...] | None) -> np.ndarray:
    return sqnr_from_sums((f * f).sum(axis=axis), (e * e).sum(axis=axis))


def weight_stats(records: list[LayerRecord], twin: LiteModel, int8: LiteModel) -> list[WeightStats]:
    """Weight statistics of every measured layer whose op has an integer constant weight."""
    ops = align_ops(twin, int8)
    twin_ops = {o.index: o for o in twin.ops}
    owned = {r.tensor_index for r in records if r.measured and r.tensor_index >= 0}
    out = []
    for i, r in enumerate(records):
        op = _weighted_op(int8, r.tensor_index, owned) if r.measured else None
        if op is None or op.index not in ops:
            continue
        t_op = twin_ops[ops[op.index]]
        for pos, q_idx in enumerate(op.inputs[1:2], start=1):  # the filter / weight matrix
            if q_idx < 0 or pos >= len(t_op.inputs):
                continue
            detail = int8.details[q_idx]
            if np.dtype(detail["dtype"]) != np.int8 or int8.producer.get(q_idx) is not None:
                continue
            params = detail["quantization_parameters"]
            scales = np.asarray(params["scales"], dtype=np.float64)
            zps = np.asarray(params["zero_points"], dtype=np.float64)
            if scales.size == 0:
                continue
            try:
                raw = int8.get(q_idx).astype(np.float64)
                w = twin.get(t_op.inputs[pos]).astype(np.float64)
            except ValueError:
                continue
            if raw.shape != w.shape:
                continue
            if raw.ndim == 0:  # a scalar constant (hard-swish's 3, a Rescaling offset)
                raw, w = raw.reshape(1), w.reshape(1)
            axis = int(params.get("quantized_dimension", 0)) if scales.size > 1 else 0
            shape = [1] * raw.ndim
            shape[axis] = -1
            deq = (raw - zps.reshape(shape)) * scales.reshape(shape)
            e = deq - w
            others = tuple(a for a in range(w.ndim) if a != axis)
            ch = _sqnr(w, e, others)
            rng = np.abs(w).max(axis=others) if w.ndim > 1 else np.abs(w)
            med = float(np.median(rng)) if rng.size else 0.0
            outliers = [int(c) for c in np.nonzero(rng > OUTLIER_FACTOR * med)[0]] if med else []
            out.append(
                WeightStats(
                    layer=i,
                    tensor_name=int8.tensors[q_idx].name,
                    channel_axis=axis,
                    sqnr_db=float(_sqnr(w, e, None)),
                    max_abs_error=float(np.abs(e).max()) if e.size else 0.0,
                    channel_sqnr_db=np.atleast_1d(ch).astype(np.float64),
                    channel_range=np.atleast_1d(rng).astype(np.float64),
                    outlier_channels=outliers,
                )
            )
    return out
