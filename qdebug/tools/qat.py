"""Quantization-aware-trained (tfmot) models against the float model they were made from.

tfmot wraps each quantized layer as ``quant_<name>``; layers are aligned by stripping that
prefix. ``qdebug trace`` on the QAT model gives simulation (fake quant) vs deployment (INT8);
``compare_qat_to_float`` gives simulation vs the original float model, per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qdebug.metrics import sqnr_db

PREFIX = "quant_"


@dataclass(frozen=True)
class QatLayer:
    """One layer of the QAT model and its float counterpart."""

    qat_layer: str
    float_layer: str
    sqnr_db: float
    """SQNR of the fake-quant output against the float model's output (dB)."""


def float_name(qat_name: str) -> str:
    """The float model's layer name for a QAT layer name (``quant_conv1`` → ``conv1``)."""
    short = qat_name.rpartition("/")[2]
    return short[len(PREFIX):] if short.startswith(PREFIX) else short


def compare_qat_to_float(
    qat_model: Any, float_model: Any, data: np.ndarray, batch: int = 16
) -> list[QatLayer]:
    """Per-layer SQNR of the QAT model's fake-quantized outputs against the float model's, on
    ``data`` (one input, (N, ...)), in the QAT model's layer order. Layers without a float
    counterpart of the same shape are left out."""
    from qdebug.tracer.graph import LayerGraph, Probe
    from qdebug.tracer.loading import flavour_of
    from qdebug.tracer.tfenv import import_tf

    import_tf()
    q_graph, f_graph = LayerGraph(qat_model), LayerGraph(float_model)
    q_probe = Probe(q_graph, flavour_of(qat_model))
    f_probe = Probe(f_graph, flavour_of(float_model))
    f_names = {n.name.rpartition("/")[2]: n.name for n in f_graph.nodes}
    pairs = [
        (n.name, f_names[float_name(n.name)])
        for n in q_graph.nodes
        if not n.is_input and float_name(n.name) in f_names
    ]
    ref: dict[str, list[np.ndarray]] = {}
    got: dict[str, list[np.ndarray]] = {}
    x = np.asarray(data, dtype=np.float32)
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        n = len(chunk)
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        qv, fv = q_probe([padded]), f_probe([padded])
        for q_name, f_name in pairs:
            got.setdefault(q_name, []).append(np.asarray(qv[q_name])[:n])
            ref.setdefault(q_name, []).append(np.asarray(fv[f_name])[:n])
    out: list[QatLayer] = []
    for q_name, f_name in pairs:
        f, q = np.concatenate(ref[q_name]), np.concatenate(got[q_name])
        if f.shape != q.shape:
            continue
        out.append(QatLayer(q_name, f_name, float(sqnr_db(f, q))))
    return out


__all__ = ["PREFIX", "QatLayer", "compare_qat_to_float", "float_name"]
