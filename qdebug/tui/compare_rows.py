"""Two traces' layers aligned by name, with deltas. No Textual."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from qdebug.tui.layer_rows import LayerRow

#: A change of accumulated SQNR (dB) below this is noise, not a difference.
DELTA_DB = 1.0


@dataclass(frozen=True)
class ComparedLayer:
    """One layer name and its row in trace A and in trace B (None when absent there)."""

    name: str
    a: LayerRow | None
    b: LayerRow | None

    def value(self, side: str, key: str) -> float:
        """A metric of one side; NaN when the layer or the metric is missing."""
        row = self.a if side == "a" else self.b
        return math.nan if row is None else row.values.get(key, math.nan)

    def delta(self, key: str) -> float:
        """B − A of a metric."""
        a, b = self.value("a", key), self.value("b", key)
        if math.isinf(a) and math.isinf(b) and a == b:
            return 0.0
        return b - a


    def same_lsb(self) -> bool:
        """Whether an LSB is the same amount on both sides (same integer type and scale): only
        then are two RMSEs in LSB comparable (an int8 LSB is 256 int16 LSBs)."""
        if self.a is None or self.b is None:
            return True
        ra, rb = self.a.record, self.b.record
        if math.isnan(ra.scale) or math.isnan(rb.scale):
            return math.isnan(ra.scale) and math.isnan(rb.scale)
        return ra.dtype == rb.dtype and math.isclose(ra.scale, rb.scale, rel_tol=1e-6)

    def rmse(self, side: str) -> float:
        """RMSE of one side in the tensor's float units (√MSE)."""
        mse = self.value(side, "mse")
        return math.sqrt(mse) if mse >= 0 else math.nan


def lsb_comparable(pairs: Sequence[ComparedLayer]) -> bool:
    """Whether every layer's LSB is the same in both traces (``same_lsb``)."""
    return all(p.same_lsb() for p in pairs)


def lsb_kinds(pairs: Sequence[ComparedLayer], side: str) -> str:
    """The integer types of one side's measured tensors, for a sentence: ``int8``."""
    rows = [p.a if side == "a" else p.b for p in pairs]
    kinds = dict.fromkeys(r.record.dtype for r in rows
                          if r is not None and r.measured and not math.isnan(r.record.scale))
    return "/".join(kinds) or "float"


def align(rows_a: Sequence[LayerRow], rows_b: Sequence[LayerRow]) -> list[ComparedLayer]:
    """A's layers in A's order, then layers only B has, in B's order."""
    by_b = {r.record.name: r for r in rows_b}
    names_a = {r.record.name for r in rows_a}
    out = [ComparedLayer(r.record.name, r, by_b.get(r.record.name)) for r in rows_a]
    out += [ComparedLayer(r.record.name, None, r) for r in rows_b if r.record.name not in names_a]
    return out


def delta_style(delta_db: float) -> str:
    """Green when B is better by DELTA_DB or more, red when worse; bold from 3 dB."""
    if math.isnan(delta_db) or abs(delta_db) < DELTA_DB:
        return "dim"
    colour = "green" if delta_db > 0 else "red"
    return f"bold {colour}" if abs(delta_db) >= 3 * DELTA_DB else colour
