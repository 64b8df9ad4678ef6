"""The detail screen's per-channel section: activation SQNR, clipping and saturation per channel
over all samples, and the weights' SQNR per output channel."""

from __future__ import annotations

import math

import numpy as np
from rich.text import Text

from qdebug.output.channels import SHOWN_CHANNELS
from qdebug.store.reader import Trace
from qdebug.tui.layer_rows import fmt_db, fmt_pct, sqnr_style

#: Up to this many channels every one is drawn; beyond it the worst ``SHOWN_CHANNELS``.
ALL_CHANNELS = 32
_BAR = 30


def _bar(v: float, top: float = 60.0) -> int:
    if math.isnan(v):
        return 0
    return _BAR if math.isinf(v) else int(_BAR * min(max(v, 0.0), top) / top)


def _worst_first(values: np.ndarray) -> list[int]:
    order = np.argsort(np.where(np.isnan(values), np.inf, values), kind="stable")
    if len(values) <= ALL_CHANNELS:
        return sorted(int(c) for c in order)
    return [int(c) for c in order[:SHOWN_CHANNELS]]


def _sqnr_lines(text: Text, values: np.ndarray, extra: dict[int, str] | None = None) -> None:
    worst = int(np.argmin(np.where(np.isnan(values), np.inf, values))) if len(values) else -1
    for c in _worst_first(values):
        v = float(values[c])
        n = _bar(v)
        text.append(f"ch {c:>4} ", style="dim")
        text.append("█" * n + " " * (_BAR - n), style=sqnr_style(v))
        text.append(f" {fmt_db(v):>5} dB")
        if extra and c in extra:
            text.append(extra[c], style="dim")
        text.append("  ◀ worst\n" if c == worst else "\n", style="bold red")


def pooled_channels(trace: Trace, layer: int) -> Text:
    """Per-channel numbers of a layer over every traced sample (no stored sample needed)."""
    text = Text()
    stats = trace.channel_stats(layer)
    if stats is not None:
        c = len(stats["sum_f2"])
        shown = "" if c <= ALL_CHANNELS else f", the {SHOWN_CHANNELS} worst"
        text.append(f"per-channel activation SQNR, clipping and saturation (all "
                    f"{trace.n_samples} samples, {c} channels{shown})\n", style="bold")
        extra = {}
        for ch in range(c):
            part = f"  clipped {fmt_pct(float(stats['clip_fraction'][ch]))}"
            if "saturation" in stats:
                part += f"  saturated {fmt_pct(float(stats['saturation'][ch]))}"
            extra[ch] = part
        _sqnr_lines(text, stats["sqnr_db"], extra)
        for key, what in (("clipped", "clipped"), ("saturated", "saturated")):
            if key not in stats:
                text.append(f"per-channel {what}: — (not in this trace)\n", style="dim")
                continue
            hit = np.nonzero(stats[key] > 0)[0]
            if not len(hit):
                text.append(f"no channel {what}\n", style="dim")
                continue
            top = sorted(hit.tolist(), key=lambda ch: -float(stats[key][ch]))[:SHOWN_CHANNELS]
            text.append(f"most {what}: ", style="dim")
            frac = stats[key] / stats["count"]
            text.append(", ".join(
                f"ch {ch} {int(stats[key][ch])} ({fmt_pct(float(frac[ch]))})" for ch in top
            ) + f"  — {len(hit)} of {c} channels\n",
                style="red" if key == "clipped" else "yellow")
    weights = trace.weight_channels(layer)
    if weights is None:
        text.append("per-channel weight SQNR: — (no quantized weights in this layer)\n",
                    style="dim")
    else:
        sq = weights["sqnr_db"]
        shown = "" if len(sq) <= ALL_CHANNELS else f", the {SHOWN_CHANNELS} worst"
        text.append(f"per-channel weight SQNR ({len(sq)} output channels{shown})\n",
                    style="bold")
        _sqnr_lines(text, sq, {c: f"  max |w| {float(weights['range'][c]):.3g}"
                               for c in range(len(sq))})
    return text
