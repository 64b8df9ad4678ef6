"""Calibration data: how many samples, duplicates, constant or NaN inputs, coverage."""

from __future__ import annotations

import numpy as np

from qdebug.tools.check.findings import ERROR, INFO, WARNING, Finding
from qdebug.tools.check.ranges import Coverage
from qdebug.tracer.convert import MIN_CALIB_SAMPLES as MIN_SAMPLES

#: Share of evaluation samples clipped at a layer that is worth a warning / an error (the
#: latter when they also overshoot the range by OVERSHOOT_ERROR of its width).
OUTSIDE_WARN = 0.05
OUTSIDE_ERROR = 0.25
OVERSHOOT_ERROR = 0.25


def check_samples(
    arrays: list[np.ndarray], names: list[str], what: str, n_layers: int,
    calibrates: bool | None = None,
) -> list[Finding]:
    """Sample count, NaN/Inf, constant samples and duplicates of one data set; the count is
    checked when the set ``calibrates`` the model (default: when it is the calibration data;
    ``qdebug trace`` calibrates on the evaluation data when no ``--calib`` is given)."""
    found: list[Finding] = []
    n = len(arrays[0]) if arrays else 0
    if calibrates is None:
        calibrates = what == "calibration data"
    if calibrates and n < MIN_SAMPLES:
        role = "" if what == "calibration data" else " (no --calib: it calibrates the model)"
        found.append(Finding(
            WARNING if n >= 16 else ERROR, "calibration", "",
            f"the {what}{role} has {n} samples"
            + (f" for a model of {n_layers} layers" if n_layers else "")
            + ": ranges calibrated on so few samples miss the tails of real inputs and clip "
            "them",
            f"calibrate on {MIN_SAMPLES}–500 samples drawn like the deployment inputs "
            "(--calib)",
        ))
    for arr, name in zip(arrays, names, strict=False):
        if not np.issubdtype(arr.dtype, np.floating):
            continue
        flat = arr.reshape(len(arr), -1).astype(np.float64)
        bad = ~np.isfinite(flat)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            found.append(Finding(
                ERROR, "calibration", name,
                f"the {what} has NaN/Inf in {len(rows)} sample(s) (first: sample {rows[0]}): "
                "calibration ranges and every metric become meaningless",
                "remove or repair those samples",
            ))
            flat = np.where(bad, 0.0, flat)
        spread = flat.max(axis=1) - flat.min(axis=1) if flat.size else np.zeros(0)
        const = np.flatnonzero(spread == 0)
        if len(const) and len(const) == len(flat):
            found.append(Finding(
                ERROR, "calibration", name,
                f"every sample of the {what} is constant: no range can be calibrated from it",
                "give real inputs",
            ))
        elif len(const):
            found.append(Finding(
                WARNING, "calibration", name,
                f"{len(const)} sample(s) of the {what} are constant (first: sample {const[0]}), "
                "e.g. blank images or padding",
                "drop them unless deployment sees such inputs",
            ))
        if len(flat) > 1:
            _, first = np.unique(flat, axis=0, return_index=True)
            dup = len(flat) - len(first)
            if dup and dup / len(flat) >= 0.1:
                found.append(Finding(
                    WARNING, "calibration", name,
                    f"{dup} of {len(flat)} samples of the {what} are duplicates: the set is "
                    "smaller than it looks",
                    "deduplicate and add distinct samples",
                ))
    return found


def check_coverage(outside: dict[str, Coverage], input_names: list[str]) -> list[Finding]:
    """Layers whose evaluation values fall outside the calibrated ranges, worst first."""
    found: list[Finding] = []
    ranked = sorted(outside.items(), key=lambda kv: (kv[1].sample_share, kv[1].overshoot),
                    reverse=True)
    worst = [(n, c) for n, c in ranked if c.sample_share >= OUTSIDE_WARN]
    for name, c in worst[:5]:
        severity = (
            ERROR if c.sample_share >= OUTSIDE_ERROR and c.overshoot >= OVERSHOOT_ERROR
            else WARNING
        )
        kind = "input" if name in input_names else "layer"
        found.append(Finding(
            severity, "calibration", name,
            f"{c.sample_share:.0%} of the evaluation samples have values at this {kind} "
            f"outside the range seen on the calibration data ({c.value_share:.2%} of values, "
            f"up to {c.overshoot:.0%} of the range beyond it): they clip to the int8 limits",
            "calibrate on data that looks like the evaluation data (more samples, all classes; "
            "--calib)",
        ))
    if len(worst) > 5:
        found.append(Finding(
            INFO, "calibration", "",
            f"{len(worst) - 5} more layers clip evaluation samples outside their calibrated "
            "range",
            "trace with --calib to see clip_fraction per layer",
        ))
    return found
