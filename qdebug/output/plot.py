"""``qdebug plot``: error by depth (accumulated and local SQNR per layer, culprits marked) and
the histogram of one layer's error, with matplotlib (optional). Reads pooled tables, plus one
stored activation for the histogram."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qdebug.errors import QdebugError
from qdebug.store.reader import Trace

#: SQNR above this (+∞ dB: no error) is drawn at this height.
CEILING_DB = 80.0


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


def plot_trace(trace: Trace, out: Path, layer: str | None = None) -> Path:
    """Write the chart (format from ``out``'s suffix: .svg or .png); returns ``out``."""
    if Path(out).suffix.lower() not in (".svg", ".png"):
        raise QdebugError(f"{out}: unknown picture type", "give --out chart.svg or chart.png")
    plt = _pyplot()
    lm = trace.layer_metrics()
    idx = [i for i, r in enumerate(trace.layers) if r.ranked]
    names = [trace.layers[i].name for i in idx]
    acc = _finite(lm["sqnr_db"][idx])
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(max(7.0, 0.35 * len(idx)), 7.5),
                                 gridspec_kw={"height_ratios": [3, 2]})
    x = np.arange(len(idx))
    ax.plot(x, acc, "o-", label="accumulated SQNR", color="#2166ac")
    if "local_sqnr_db" in lm:
        ax.plot(x, _finite(lm["local_sqnr_db"][idx]), "s--", label="local SQNR",
                color="#4dac26", alpha=0.8)
    culprits = {c.index for c in trace.culprits()[:5]}
    marked = [k for k, i in enumerate(idx) if i in culprits]
    if marked:
        ax.scatter(x[marked], acc[marked], s=160, facecolors="none", edgecolors="#d7191c",
                   linewidths=2, label="culprit", zorder=3)
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("SQNR (dB)")
    ax.set_title(f"{trace.model_name}: error by depth ({trace.n_samples} samples)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _histogram(hx, trace, layer, idx)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


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
    ax.set_title(f"error of {layer} (sample {sample})", fontsize=10)
    ax.set_xlabel(f"int8 − float ({unit})")
    ax.set_ylabel("elements")
