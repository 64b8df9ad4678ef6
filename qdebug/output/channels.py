"""Per-channel numbers of a layer for reports: the worst few channels of its activations (last
axis) and of its weights (output channels). ``Trace.channel_stats`` reads the numbers."""

from __future__ import annotations

from typing import Any

import numpy as np

from qdebug.output.jsonout import num as json_num

#: Channels listed per layer and per ranking in reports (the arrays stay in the trace).
SHOWN_CHANNELS = 8


def _order(values: np.ndarray, worst_low: bool) -> np.ndarray:
    """Channel indices, worst first, NaN last."""
    key = np.where(np.isnan(values), np.inf, values if worst_low else -values)
    return np.argsort(key, kind="stable")


def worst_channels(
    stats: dict[str, np.ndarray] | None,
    weights: dict[str, np.ndarray] | None,
    k: int = SHOWN_CHANNELS,
) -> dict[str, Any] | None:
    """A layer's per-channel numbers for a report, bounded: the channel count and, each worst
    first and at most ``k`` long, the channels with the lowest activation SQNR, the most
    clipped, the most saturated (only channels that clip or saturate at all) and the lowest
    weight SQNR. None when the trace has neither."""
    if stats is None and weights is None:
        return None
    out: dict[str, Any] = {}

    def row(c: int) -> dict[str, Any]:
        assert stats is not None
        item: dict[str, Any] = {"channel": int(c)}
        for key in ("sqnr_db", "clipped", "clip_fraction", "saturated", "saturation"):
            if key in stats:
                item[key] = json_num(float(stats[key][c]))
        return item

    if stats is not None:
        out["channels"] = len(stats["sum_f2"])
        out["lowest_sqnr"] = [row(c) for c in _order(stats["sqnr_db"], True)[:k]]
        for key, name in (("clipped", "most_clipped"), ("saturated", "most_saturated")):
            if key in stats:
                out[name] = [row(c) for c in _order(stats[key], False)[:k] if stats[key][c] > 0]
    if weights is not None:
        sq = weights["sqnr_db"]
        out["weight_channels"] = len(sq)
        out["lowest_weight_sqnr"] = [
            {"channel": int(c), "sqnr_db": json_num(float(sq[c])),
             "range": json_num(float(weights["range"][c]))}
            for c in _order(sq, True)[:k]
        ]
    return out
