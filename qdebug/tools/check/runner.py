"""Runs every check on a model and optional evaluation/calibration data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qdebug.errors import DataError
from qdebug.tools.check.architecture import check_architecture
from qdebug.tools.check.calibration import check_coverage, check_samples
from qdebug.tools.check.conversion import check_ops
from qdebug.tools.check.dtypes import check_data_dtype, check_model_dtypes
from qdebug.tools.check.findings import ERROR, INFO, Finding
from qdebug.tools.check.tfmot_check import check_tfmot

#: Samples used for the probes and the trial conversion.
MAX_SAMPLES = 256


def _raw_arrays(spec: Any, input_names: list[str], specs: list[Any]) -> list[np.ndarray]:
    """The data as arrays of its own dtype (one per input), without the tracer's casts."""
    from qdebug.tracer.data import load_data

    if isinstance(spec, np.ndarray):
        return [spec]
    path = Path(str(spec))
    src = load_data(spec, specs, limit=MAX_SAMPLES)  # refuses what trace refuses, by name
    if path.suffix.lower() == ".npy" and path.is_file():
        return [np.load(path, allow_pickle=False)]
    if path.suffix.lower() == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if len(keys) == 1 and len(input_names) == 1:
                return [z[keys[0]]]
            return [z[n] for n in input_names if n in z]
    samples = list(src)
    return [np.stack([s[i] for s in samples]) for i in range(len(specs))]


def _samples(
    arrays: list[np.ndarray], specs: list[Any], limit: int = MAX_SAMPLES
) -> list[list[np.ndarray]]:
    """Per sample, one array per input in the input's own dtype (float32, or the integer type
    of ids and masks, which the converter takes as they are)."""
    n = min(len(a) for a in arrays)
    dtypes = [s.dtype for s in specs] + ["float32"] * (len(arrays) - len(specs))
    out = []
    for i in range(min(n, limit)):
        s = [
            np.nan_to_num(np.asarray(a[i], dtype=np.float32)) if np.dtype(dt).kind == "f"
            else np.asarray(a[i]).astype(dt)
            for a, dt in zip(arrays, dtypes, strict=False)
        ]
        out.append(s)
    return out


def _synthetic(specs: list[Any], n: int = 16) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        [
            rng.normal(size=tuple(d or 8 for d in s.shape)).astype(np.float32) if s.is_float
            else np.zeros(tuple(d or 8 for d in s.shape), dtype=s.dtype)
            for s in specs
        ]
        for _ in range(n)
    ]


def _model_view(loaded: Any, data: Any) -> tuple[Any, Any, list[Any]]:
    """What the converter takes (None for a ``.tflite``: nothing to convert), the Keras layer
    graph (None without one) and the model's inputs.

    A subclassed Keras model is called on a ``keras.Input`` of the data's shape, as
    ``qdebug trace`` does, so its checks run on that functional wrapper; a plain SavedModel
    or a ``.tflite`` has no layers: its inputs come from its float TFLite model."""
    from qdebug.tracer import convert as conv
    from qdebug.tracer.graph import LayerGraph, has_graph
    from qdebug.tracer.litert import LiteModel
    from qdebug.tracer.loading import TFLITE
    from qdebug.tracer.model_io import input_specs
    from qdebug.tracer.op_view import lite_input_specs, wrap_subclassed

    if loaded.is_keras:
        model = loaded.model
        if not has_graph(model):
            model = wrap_subclassed(model, data)
        graph = LayerGraph(model)
        return model, graph, input_specs(graph)
    if loaded.flavour == TFLITE:
        return None, None, lite_input_specs(LiteModel(bytes(loaded.model), preserve=False))
    float_bytes = conv.convert_float(loaded.model, [])
    return loaded.model, None, lite_input_specs(LiteModel(float_bytes, preserve=False))


def run_checks(
    model: Any,
    data: Any = None,
    calib: Any = None,
    *,
    trust_model_code: bool = False,
    tfmot: bool = True,
) -> list[Finding]:
    """Every check of ``qdebug check``.

    Args:
        model: a live Keras model or a path/factory spec.
        data: evaluation data (optional): data checks, ranges, and coverage against ``calib``.
        calib: calibration data (default: ``data``).
        trust_model_code: allow Lambda layers in model files.
        tfmot: also try tfmot's ``quantize_model``.

    Returns:
        The findings, in check order.
    """
    from qdebug.tools.check.ranges import layer_ranges, outside_share
    from qdebug.tracer.graph import Probe
    from qdebug.tracer.loading import load_or_wrap
    from qdebug.tracer.tfenv import import_tf

    import_tf()
    loaded = load_or_wrap(model, trust_model_code)
    convertible, graph, specs = _model_view(loaded, data if data is not None else calib)
    names = [n.name for n in graph.nodes] if graph is not None else []
    input_names = [s.name for s in specs]
    found: list[Finding] = check_model_dtypes(graph) if graph is not None else [Finding(
        INFO, "model", "",
        "the model has no Keras layer graph (a plain SavedModel or a .tflite): the layer "
        "checks (dtypes, ranges, architecture) are skipped; `qdebug trace` measures its ops",
        "nothing to do; for layer names, give the Keras model",
    )]
    sets: dict[str, list[list[np.ndarray]]] = {}
    for what, spec in (("evaluation data", data), ("calibration data", calib)):
        if spec is None:
            continue
        try:
            arrays = _raw_arrays(spec, input_names, specs)
        except DataError as exc:
            found.append(Finding(ERROR, "calibration", "", f"the {what}: {exc.message}", exc.hint))
            continue
        found += check_data_dtype(arrays, specs, what)
        calibrates = what == "calibration data" or calib is None  # as qdebug trace does
        found += check_samples(arrays, input_names, what, len(names), calibrates)
        sets[what] = _samples(arrays, specs)
    calib_set = sets.get("calibration data") or sets.get("evaluation data")
    if convertible is not None:
        found += check_ops(convertible, names,
                           calib_set[:64] if calib_set else _synthetic(specs))
    if graph is None:
        return found
    if tfmot:
        found += check_tfmot(loaded.model, loaded.flavour, names)
    ranges = {}
    if calib_set:
        probe = Probe(graph, loaded.flavour)
        ranges = layer_ranges(probe, calib_set)
        if "calibration data" in sets and "evaluation data" in sets:
            outside = outside_share(probe, sets["evaluation data"], ranges)
            found += check_coverage(outside, input_names)
    found += check_architecture(graph, ranges)
    return found
