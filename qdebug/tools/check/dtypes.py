"""float64 and non-float inputs, weights and dtype policies."""

from __future__ import annotations

from typing import Any

import numpy as np

from qdebug.tools.check.findings import ERROR, INFO, Finding
from qdebug.tracer.data import float_cast_hint
from qdebug.tracer.graph import LayerGraph


def _dtype_name(value: Any) -> str:
    name = getattr(value, "name", None)
    return str(name) if isinstance(name, str) else str(value)


def check_model_dtypes(graph: LayerGraph) -> list[Finding]:
    """Inputs, weights and layer dtype policies of the model."""
    found: list[Finding] = []
    for name, t in zip(graph.input_names, graph.model.inputs, strict=True):
        dt = _dtype_name(t.dtype)
        if dt == "float64":
            found.append(Finding(
                ERROR, "dtypes", name,
                "the model input is float64: the converter keeps a float64 input, so the "
                "INT8 model is fed through CAST ops and deployment code must send float64",
                "build the Input with dtype='float32' (and keras.config.set_floatx('float32'))",
            ))
        elif not dt.startswith("float") and not dt.startswith("bfloat"):
            found.append(Finding(
                INFO, "dtypes", name,
                f"the model input is {dt}: it is not quantized (ids, masks); only the layers "
                "after it are",
                "feed it the same integer data at calibration and deployment",
            ))
    for node in graph.nodes:
        layer = node.layer
        policy = getattr(layer, "dtype_policy", None)
        compute = _dtype_name(getattr(policy, "compute_dtype", getattr(layer, "dtype", "")))
        weights64 = [w for w in getattr(layer, "weights", []) if _dtype_name(w.dtype) == "float64"]
        if node.is_input or node.is_model:
            continue
        if compute == "float64" or weights64:
            what = "computes in float64" if compute == "float64" else "has float64 weights"
            found.append(Finding(
                ERROR, "dtypes", node.name,
                f"the layer {what}: TFLite has no float64 kernels for its ops (conversion "
                "fails on them, e.g. a float64 MatMul) and INT8 quantization needs float32",
                "build the layer with dtype='float32' (or keras.config.set_floatx('float32') "
                "before building the model)",
            ))
    return found


def check_data_dtype(arrays: list[np.ndarray], specs: list[Any], what: str) -> list[Finding]:
    """float64 or integer data given for float inputs (``specs``: the model's inputs; an
    integer input, ids or a mask, takes integer data as it is)."""
    found: list[Finding] = []
    for arr, spec in zip(arrays, specs, strict=False):
        name = spec.name
        if not spec.is_float:
            continue
        if arr.dtype == np.float64:
            found.append(Finding(
                ERROR, "dtypes", name,
                f"the {what} is float64: the INT8 model takes float32, and LiteRT refuses "
                "float64 ('Cannot set tensor: Got value of type FLOAT64 but expected type "
                "FLOAT32'); Keras predict casts silently, so only deployment breaks",
                "cast in the input pipeline: x.astype('float32') (scikit-learn and pandas "
                "return float64)",
            ))
        elif np.issubdtype(arr.dtype, np.integer):
            found.append(Finding(
                ERROR, "dtypes", name,
                f"the {what} is {arr.dtype}, the model takes float32",
                float_cast_hint(arr.dtype, arr.ndim - 1),
            ))
    return found
