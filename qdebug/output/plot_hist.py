"""``qdebug plot``'s lower panels: one layer's float and int8 values, and its error, over every
stored sample, with the calibrated range (the int8 grid's ends) marked.

Reads at most ``MAX_VALUES`` values (whole samples, in stored order); the panel says when it
read fewer samples than the trace stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qdebug.analysis.culprits import COARSE_SCORE, outputs_healthy
from qdebug.output.fmt import shown
from qdebug.store.reader import Trace
from qdebug.store.schema import Culprit, CulpritKind

#: Values read for the histograms (float and int8 each), whole samples at a time.
MAX_VALUES = 4_000_000
_BINS = 80
_NAME_CHARS = 60
FLOAT_COLOUR = "#2166ac"
INT8_COLOUR = "#e08214"
RANGE_COLOUR = "#d7191c"


@dataclass(frozen=True)
class Values:
    """One layer's stored activations, all samples read, flattened."""

    layer: str
    why: str
    """Why this layer (``first culprit``, ``--layer``, …)."""
    floats: np.ndarray
    quantized: np.ndarray
    """The int8 tensor's real values (dequantized)."""
    samples: int
    """Samples read."""
    stored: int
    """Samples the trace stores."""
    scale: float | None
    """The int8 step (None: the layer's tensor is float)."""
    calibrated: tuple[float, float] | None
    """The real values of the int8 grid's ends (None: a float tensor)."""


def recorded_culprits(trace: Trace) -> list[Culprit]:
    """The trace's culprits that today's ranking keeps (``find_culprits``): none when every
    output is healthy, and no layer of rounding noise under ``COARSE_SCORE`` (older tracers
    recorded those, down to shares of 0.02)."""
    if trace.outputs and outputs_healthy(trace.output_metrics()):
        return []
    return [c for c in trace.culprits()
            if not (c.kind == CulpritKind.ROUNDING and c.score < COARSE_SCORE)]


def pick_layer(trace: Trace, layer: str | None) -> tuple[str, str] | None:
    """The layer to draw and why: ``layer`` when given, else the first culprit, else the
    ranked layer of lowest accumulated SQNR with stored activations; None when none has."""
    if layer is not None:
        return layer, "--layer"
    culprits = recorded_culprits(trace)
    if culprits and trace.has_activations(culprits[0].index):
        return culprits[0].layer, "first culprit"
    sq = trace.layer_metrics()["sqnr_db"]
    order = np.argsort(np.where(np.isnan(sq), np.inf, sq), kind="stable")
    for i in order:
        rec = trace.layers[int(i)]
        if rec.ranked and np.isfinite(sq[i]) and trace.has_activations(int(i)):
            return rec.name, "lowest accumulated SQNR; no culprits"
    return None


def read_values(trace: Trace, layer: str, why: str) -> Values | None:
    """The layer's float and int8 values over the stored samples (None: none stored)."""
    stored = [int(s) for s in trace.stored_samples]
    if not stored or not trace.has_activations(layer):
        return None
    floats: list[np.ndarray] = []
    ints: list[np.ndarray] = []
    total = 0
    qp = None
    for s in stored:
        act = trace.activation(layer, s)
        f = np.asarray(act.float, dtype=np.float64).ravel()
        if floats and total + f.size > MAX_VALUES:
            break
        qp = act.qp
        floats.append(f)
        ints.append(np.asarray(act.dequantized, dtype=np.float64).ravel())
        total += f.size
    fl, q = np.concatenate(floats), np.concatenate(ints)
    ok = np.isfinite(fl) & np.isfinite(q)
    scale = calibrated = None
    if qp is not None and qp.scale > 0:
        scale = float(qp.scale)
        calibrated = (float(qp.low), float(qp.high))
    return Values(layer, why, fl[ok], q[ok], len(floats), len(stored), scale, calibrated)


def _read_note(v: Values) -> str:
    if v.samples == v.stored:
        return f"{v.samples} stored sample{'s' if v.samples != 1 else ''}"
    return f"the first {v.samples} of {v.stored} stored samples"


def _plain_count() -> Any:
    """Counts as text (``1,000``): matplotlib's log labels are mathematics, off in a plot."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")


def _log_counts(ax: Any) -> None:
    """A log count axis labelled in plain text (decades only)."""
    from matplotlib.ticker import NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_plain_count())
    ax.yaxis.set_minor_formatter(NullFormatter())


def draw_values(ax: Any, v: Values) -> None:
    """Float and int8 values on shared bins, the calibrated range as two red lines."""
    lo = float(min(v.floats.min(initial=0.0), v.quantized.min(initial=0.0)))
    hi = float(max(v.floats.max(initial=0.0), v.quantized.max(initial=0.0)))
    if v.calibrated is not None:
        lo, hi = min(lo, v.calibrated[0]), max(hi, v.calibrated[1])
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, _BINS + 1)
    ax.hist(v.floats, bins=bins, histtype="step", linewidth=1.5, color=FLOAT_COLOUR,
            label="float")
    ax.hist(v.quantized, bins=bins, histtype="step", linewidth=1.5, color=INT8_COLOUR,
            label="int8 (dequantized)")
    _log_counts(ax)
    if v.calibrated is not None:
        a, b = v.calibrated
        outside = float(np.mean((v.floats < a) | (v.floats > b))) if v.floats.size else 0.0
        for end in (a, b):
            ax.axvline(end, color=RANGE_COLOUR, linestyle="--", linewidth=1.2)
        ax.plot([], [], color=RANGE_COLOUR, linestyle="--",
                label=f"calibrated range [{a:.3g}, {b:.3g}]: {outside:.1%} of float outside")
    ax.set_title(f"values of {shown(v.layer, _NAME_CHARS)}\n({v.why}; {_read_note(v)})",
                 fontsize=10)
    ax.set_xlabel("value")
    ax.set_ylabel("elements (log)")
    ax.legend(fontsize=8, loc="upper right")


def draw_error(ax: Any, v: Values) -> None:
    """The error (int8 − float), in LSB where the tensor is int8, with ±½ LSB marked."""
    err = v.quantized - v.floats
    unit = "value"
    if v.scale is not None:
        err, unit = err / v.scale, "LSB"
    ax.hist(err, bins=_BINS, color=FLOAT_COLOUR)
    _log_counts(ax)  # a few large errors (clipping) stay visible beside the many small
    if v.scale is not None:
        for end in (-0.5, 0.5):
            ax.axvline(end, color="#555555", linestyle=":", linewidth=1)
        ax.plot([], [], color="#555555", linestyle=":", label="±½ LSB (rounding)")
        ax.legend(fontsize=8, loc="upper right")
    rms = float(np.sqrt(np.mean(err ** 2))) if err.size else float("nan")
    ax.set_title(f"error of {shown(v.layer, _NAME_CHARS)}: RMSE {rms:.3g} {unit}",
                 fontsize=10)
    ax.set_xlabel(f"int8 − float ({unit})")
    ax.set_ylabel("elements (log)")
