"""``qdebug plot``: error by depth (accumulated and local SQNR per layer, culprits marked) and
the histogram of one layer's error, with matplotlib (optional). Reads pooled tables, plus one
stored activation for the histogram.

A picture stays at most ``MAX_WIDTH_PX`` wide whatever the trace holds: past ``MAX_POINTS``
layers each drawn point is the worst (lowest SQNR) of a run of neighbours, and at most
``MAX_LABELS`` layer names label the axis. Names are text, never mathematics (a layer named
``$x^{$`` is shown as it is), and the picture is written as ``export`` writes its files: the
target checked before any work, written atomically, an existing file kept without ``force``.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from qdebug.errors import QdebugError
from qdebug.output.export import check_export_target, write_atomic
from qdebug.output.fmt import shown
from qdebug.store.reader import Trace

#: SQNR above this (+∞ dB: no error) is drawn at this height.
CEILING_DB = 80.0
#: Widest picture (pixels): 16 inches at 100 dpi.
MAX_WIDTH_PX = 1600
_DPI = 100
#: Points drawn per line (one per layer up to this, then the worst of each run of layers).
MAX_POINTS = 1000
#: Layer names on the depth axis.
MAX_LABELS = 80
#: Characters of a layer name on the axis, and of the model's name in the title.
_LABEL_CHARS = 40
_TITLE_CHARS = 80


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise QdebugError(
            "matplotlib is not installed: qdebug plot needs it",
            "install it with: pip install 'qdebug[notebook]' (or pip install matplotlib)",
        ) from None
    return plt


def _finite(v: np.ndarray) -> np.ndarray:
    return np.minimum(v, CEILING_DB)


def thin(values: np.ndarray, points: int = MAX_POINTS) -> np.ndarray:
    """Positions of at most ``points`` values to draw: all of them when they fit, else the
    lowest (worst SQNR) of each of ``points`` runs of neighbours, so no dip is lost."""
    n = len(values)
    if n <= points:
        return np.arange(n)
    edges = np.linspace(0, n, points + 1).astype(np.int64)
    # NaN (no value) never wins a run over a number.
    filled = np.where(np.isnan(values), np.inf, values)
    return np.array([a + int(np.argmin(filled[a:b])) for a, b in itertools.pairwise(edges)])


def _check_out(out: Path, trace: Trace, force: bool) -> str:
    """The picture type, after refusing a target ``export`` would refuse (see its checks)."""
    kind = Path(out).suffix.lower().lstrip(".")
    if kind not in ("svg", "png"):
        raise QdebugError(f"{out}: unknown picture type", "give --out chart.svg or chart.png")
    check_export_target(Path(out), force)
    if Path(out).exists() and os.path.samefile(out, trace.path):
        raise QdebugError(f"{out} is the trace being drawn; not overwriting it",
                          "give another --out")
    return kind


def plot_trace(trace: Trace, out: Path, layer: str | None = None, force: bool = False) -> Path:
    """Write the chart (format from ``out``'s suffix: .svg or .png); returns ``out``.

    Raises:
        QdebugError: an unknown suffix, or ``out`` is a folder, a pipe or a device, is in a
            missing folder, or exists (without ``force``).
    """
    out = Path(out)
    kind = _check_out(out, trace, force)
    plt = _pyplot()
    lm = trace.layer_metrics()
    idx = np.array([i for i, r in enumerate(trace.layers) if r.ranked], dtype=np.int64)
    acc_all = _finite(lm["sqnr_db"][idx])
    drawn = thin(acc_all)
    x = np.arange(len(idx))
    width = min(max(7.0, 0.35 * len(idx)), MAX_WIDTH_PX / _DPI)
    with plt.rc_context({"text.parse_math": False}):  # `$` in a name is a dollar sign
        fig, (ax, hx) = plt.subplots(2, 1, figsize=(width, 7.5), dpi=_DPI,
                                     gridspec_kw={"height_ratios": [3, 2]})
        ax.plot(x[drawn], acc_all[drawn], "o-" if len(drawn) <= 200 else "-",
                label="accumulated SQNR", color="#2166ac")
        if "local_sqnr_db" in lm:
            local = _finite(lm["local_sqnr_db"][idx])
            shown_local = thin(local)
            ax.plot(x[shown_local], local[shown_local], "s--" if len(shown_local) <= 200 else "--",
                    label="local SQNR", color="#4dac26", alpha=0.8)
        culprits = {c.index for c in trace.culprits()[:5]}
        marked = [k for k, i in enumerate(idx) if i in culprits]
        if marked:
            ax.scatter(x[marked], acc_all[marked], s=160, facecolors="none",
                       edgecolors="#d7191c", linewidths=2, label="culprit", zorder=3)
        step = max(1, -(-len(idx) // MAX_LABELS))
        ticks = x[::step]
        ax.set_xticks(ticks, [shown(trace.layers[int(idx[k])].name, _LABEL_CHARS)
                              for k in ticks], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("SQNR (dB)")
        every = "" if step == 1 else f"; one layer in {step} named"
        ax.set_title(f"{shown(trace.model_name, _TITLE_CHARS)}: error by depth "
                     f"({trace.n_samples} samples{every})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        _histogram(hx, trace, layer, [int(i) for i in idx])
        fig.tight_layout()

        def write(fh: BinaryIO) -> None:
            fig.savefig(fh, format=kind, dpi=_DPI)

        try:
            write_atomic(out, write, force)
        finally:
            plt.close(fig)
    return out


def _histogram(ax: Any, trace: Trace, layer: str | None, idx: list[int]) -> None:
    """The error (int8 − float, in LSB) of one layer over the first stored sample."""
    if layer is None:
        worst = trace.culprits()
        layer = worst[0].layer if worst else (trace.layers[idx[-1]].name if idx else None)
    if layer is None or not len(trace.stored_samples) or not trace.has_activations(layer):
        ax.text(0.5, 0.5, "no stored activations for a histogram", ha="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return
    sample = int(trace.stored_samples[0])
    act = trace.activation(layer, sample)
    q = np.asarray(act.dequantized, dtype=np.float64)
    err = (q - act.float).ravel()
    if act.qp is not None and act.qp.scale > 0:
        err = err / act.qp.scale
        unit = "LSB"
    else:
        unit = "value"
    ax.hist(err, bins=60, color="#2166ac")
    ax.set_title(f"error of {shown(layer, _TITLE_CHARS)} (sample {sample})", fontsize=10)
    ax.set_xlabel(f"int8 − float ({unit})")
    ax.set_ylabel("elements")
