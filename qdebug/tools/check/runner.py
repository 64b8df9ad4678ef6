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
from qdebug.tools.check.findings import ERROR, Finding
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


def _samples(arrays: list[np.ndarray], limit: int = MAX_SAMPLES) -> list[list[np.ndarray]]:
    n = min(len(a) for a in arrays)
    out = []
    for i in range(min(n, limit)):
        s = [np.nan_to_num(np.asarray(a[i], dtype=np.float32)) for a in arrays]
        out.append(s)
    return out


def _synthetic(specs: list[Any], n: int = 16) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        [rng.normal(size=tuple(d or 8 for d in s.shape)).astype(np.float32) for s in specs]
        for _ in range(n)
    ]


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
    from qdebug.tracer.graph import LayerGraph, Probe
    from qdebug.tracer.loading import load_or_wrap
    from qdebug.tracer.model_io import input_specs as _input_specs
    from qdebug.tracer.tfenv import import_tf

    import_tf()
    loaded = load_or_wrap(model, trust_model_code)
    graph = LayerGraph(loaded.model)
    specs = _input_specs(graph)
    names = [n.name for n in graph.nodes]
    input_names = [s.name for s in specs]
    found: list[Finding] = check_model_dtypes(graph)
    sets: dict[str, list[list[np.ndarray]]] = {}
    for what, spec in (("evaluation data", data), ("calibration data", calib)):
        if spec is None:
            continue
        try:
            arrays = _raw_arrays(spec, input_names, specs)
        except DataError as exc:
            found.append(Finding(ERROR, "calibration", "", f"the {what}: {exc.message}", exc.hint))
            continue
        found += check_data_dtype(arrays, input_names, what)
        calibrates = what == "calibration data" or calib is None  # as qdebug trace does
        found += check_samples(arrays, input_names, what, len(names), calibrates)
        sets[what] = _samples(arrays)
    calib_set = sets.get("calibration data") or sets.get("evaluation data")
    found += check_ops(loaded.model, names, calib_set[:64] if calib_set else _synthetic(specs))
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
