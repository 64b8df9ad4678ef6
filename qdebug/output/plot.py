"""``qdebug plot``: the picture a maintainer wants in an issue. Error by depth (accumulated and
local SQNR per layer, the culprits circled and named) and, below it, one layer's float and int8
values and its error over every stored sample (``plot_hist``), with matplotlib (optional).

A picture stays at most ``MAX_WIDTH_PX`` wide whatever the trace holds: past ``MAX_POINTS``
layers each drawn point is the worst (lowest SQNR) of a run of neighbours, and the depth axis
names at most one layer per ``_PX_PER_LABEL`` pixels (the culprits always). SQNR above
``CEILING_DB`` (+∞: no error) is drawn at the ceiling as an open triangle, and the legend says
so. Names are text, never mathematics (a layer named ``$x^{$`` is shown as it is), and the
picture is written as ``export`` writes its files: the target checked before any work, written
atomically, an existing file kept without ``force``.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from qdebug.errors import QdebugError
from qdebug.output.export import check_export_target, write_atomic
from qdebug.output.fmt import shown
from qdebug.output.plot_hist import (
    Values,
    draw_error,
    draw_values,
    pick_layer,
    read_values,
    recorded_culprits,
)
from qdebug.store.reader import Trace

#: SQNR above this (+∞ dB: no error) is drawn at this height, as an open triangle.
CEILING_DB = 80.0
#: Widest picture (pixels): 16 inches at 100 dpi.
MAX_WIDTH_PX = 1600
_DPI = 100
#: Points drawn per line (one per layer up to this, then the worst of each run of layers).
MAX_POINTS = 1000
#: Layer names on the depth axis, at most (one per ``_PX_PER_LABEL`` pixels of axis).
MAX_LABELS = 70
_PX_PER_LABEL = 16
#: Culprits circled, and named beside their point (the trace's own ranking).
MAX_CULPRITS = 10
NAMED_CULPRITS = 5
#: Characters of a layer name on the axis, and of the model's name in the title.
_LABEL_CHARS = 32
_TITLE_CHARS = 80
_ACC = "#2166ac"
_LOCAL = "#4dac26"
_CULPRIT = "#d7191c"


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


@dataclass(frozen=True)
class Depth:
    """The depth panel's rows: the ranked layers, in order."""

    names: list[str]
    accumulated: np.ndarray
    local: np.ndarray | None
    culprits: list[tuple[int, str, float]]
    """(position, name, score) of each recorded culprit drawn, best first."""


def depth_rows(trace: Trace) -> Depth:
    """The ranked layers' SQNR and the recorded culprits among them."""
    lm = trace.layer_metrics()
    idx = [i for i, r in enumerate(trace.layers) if r.ranked]
    where = {row: k for k, row in enumerate(idx)}
    culprits = [(where[c.index], c.layer, c.score) for c in recorded_culprits(trace)
                if c.index in where][:MAX_CULPRITS]
    local = lm["local_sqnr_db"][idx] if "local_sqnr_db" in lm else None
    return Depth([trace.layers[i].name for i in idx], lm["sqnr_db"][idx], local, culprits)


def tick_positions(n: int, culprits: list[int], max_labels: int) -> list[int]:
    """Positions named on the depth axis: every ``step``-th layer, the culprits always, and
    no regular name within half a step of a culprit's."""
    step = max(1, -(-n // max(1, max_labels)))
    marked = set(culprits)
    regular = [k for k in range(0, n, step)
               if all(abs(k - c) * 2 >= step for c in marked) or step == 1]
    return sorted(set(regular) | marked)


def _line(ax: Any, x: np.ndarray, y: np.ndarray, style: str, colour: str, label: str) -> int:
    """``y`` against ``x`` with values above the ceiling drawn at it as open triangles (not
    joined by the line); returns how many were."""
    above = ~np.isnan(y) & (y > CEILING_DB)
    keep = thin(np.where(above, np.nan, y))
    marker = style if len(keep) <= 200 else ""
    ax.plot(x[keep], np.where(above, np.nan, y)[keep], marker + ("-" if style == "o" else "--"),
            label=label, color=colour, markersize=4)
    if above.any():
        ax.scatter(x[above], np.full(int(above.sum()), CEILING_DB), marker="^", s=36,
                   facecolors="none", edgecolors=colour, zorder=3)
    return int(above.sum())


def draw_depth(ax: Any, d: Depth, title: str, width_px: float) -> None:
    """Accumulated and local SQNR by depth, culprits circled and named, the ceiling stated."""
    n = len(d.names)
    x = np.arange(n)
    capped = _line(ax, x, d.accumulated, "o", _ACC, "accumulated SQNR")
    if d.local is not None:
        capped += _line(ax, x, d.local, "s", _LOCAL, "local SQNR")
    if capped:
        ax.axhline(CEILING_DB, color="#999999", linestyle=":", linewidth=1)
        ax.scatter([], [], marker="^", facecolors="none", edgecolors="#555555",
                   label=f"above {CEILING_DB:.0f} dB or ∞ (no error): drawn at "
                         f"{CEILING_DB:.0f} ({capped})")
    if d.culprits:
        pos = np.array([p for p, _, _ in d.culprits])
        y = np.minimum(np.nan_to_num(d.accumulated[pos], nan=0.0), CEILING_DB)
        ax.scatter(pos, y, s=170, facecolors="none", edgecolors=_CULPRIT, linewidths=2,
                   label="culprit: share of the output's error born there", zorder=4)
        for rank, ((p, name, score), yy) in enumerate(zip(d.culprits[:NAMED_CULPRITS], y,
                                                          strict=False)):
            left = p > n / 2  # the name on the side with room, in the chart's top band
            ax.annotate(f"{rank + 1}. {shown(name, _LABEL_CHARS)} ({score:.2f})", (p, yy),
                        xytext=(p + (-0.01 if left else 0.01) * n, 0.95 - 0.07 * rank),
                        textcoords=("data", "axes fraction"), ha="right" if left else "left",
                        va="center", fontsize=8, color=_CULPRIT,
                        arrowprops={"arrowstyle": "-", "color": _CULPRIT, "lw": 0.6,
                                    "alpha": 0.6})
    ticks = tick_positions(n, [p for p, _, _ in d.culprits],
                           min(MAX_LABELS, int(width_px / _PX_PER_LABEL)))
    ax.set_xticks(ticks, [shown(d.names[k], _LABEL_CHARS) for k in ticks],
                  rotation=60 if len(ticks) <= 40 else 90, ha="right", fontsize=7)
    marked = {p for p, _, _ in d.culprits}
    for k, label in zip(ticks, ax.get_xticklabels(), strict=True):
        if k in marked:
            label.set_color(_CULPRIT)
    ax.set_xlim(-0.8, n - 0.2)
    ax.set_ylim(top=CEILING_DB + 6 if capped else None)
    ax.set_ylabel("SQNR (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


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


def _title(trace: Trace, d: Depth, every: int) -> str:
    named = "" if every <= 1 else f"; about one layer in {every} named"
    red = "; culprits in red" if d.culprits else "; no culprits"
    return (f"{shown(trace.model_name, _TITLE_CHARS)}: error by depth ({trace.n_samples} "
            f"samples, {len(d.names)} layers{named}{red})")


def _no_histogram(trace: Trace, picked: tuple[str, str] | None) -> str:
    """Why the picture has no histograms."""
    if not len(trace.stored_samples):
        return ("no stored activations for histograms (trace with --store-samples K to keep "
                "some)")
    if picked is not None:
        return f"no stored activations of {shown(picked[0], _LABEL_CHARS)} for histograms"
    return "no layer with stored activations for histograms"


def plot_trace(trace: Trace, out: Path, layer: str | None = None, force: bool = False) -> Path:
    """Write the chart (format from ``out``'s suffix: .svg or .png); returns ``out``.

    Raises:
        QdebugError: an unknown suffix, or ``out`` is a folder, a pipe or a device, is in a
            missing folder, or exists (without ``force``); ``layer`` is not in the trace.
    """
    out = Path(out)
    kind = _check_out(out, trace, force)
    if layer is not None and layer not in {r.name for r in trace.layers}:
        raise QdebugError(f"--layer {shown(layer, _LABEL_CHARS)!r} is not a layer of the trace",
                          "qdebug report TRACE --format csv lists the layers")
    plt = _pyplot()
    d = depth_rows(trace)
    picked = pick_layer(trace, layer)
    values: Values | None = read_values(trace, *picked) if picked else None
    width = min(max(9.0, 6.0 + 0.065 * len(d.names)), MAX_WIDTH_PX / _DPI)
    every = -(-len(d.names) // max(1, min(MAX_LABELS, int(width * _DPI / _PX_PER_LABEL))))
    with plt.rc_context({"text.parse_math": False}):  # `$` in a name is a dollar sign
        fig = plt.figure(figsize=(width, 9.0 if values else 5.5), dpi=_DPI)
        grid = fig.add_gridspec(2 if values else 1, 2, height_ratios=[5, 3] if values else [1])
        draw_depth(fig.add_subplot(grid[0, :]), d, _title(trace, d, every), width * _DPI)
        if values is not None:
            draw_values(fig.add_subplot(grid[1, 0]), values)
            draw_error(fig.add_subplot(grid[1, 1]), values)
        else:
            fig.text(0.01, 0.005, _no_histogram(trace, picked), fontsize=8, color="#555555")
        fig.tight_layout()

        def write(fh: BinaryIO) -> None:
            fig.savefig(fh, format=kind, dpi=_DPI)

        try:
            write_atomic(out, write, force)
        finally:
            plt.close(fig)
    return out
