"""Accumulated SQNR through depth: one bar per measured layer in topological order."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text
from textual import events
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from qdebug.tui.layer_rows import LayerRow, fmt_db, shown, sqnr_drop, sqnr_style
from qdebug.tui.widgets.layer_table import first_rows

NAME_WIDTH = 18
#: A drop of the curve larger than this (dB) is flagged.
DROP_FLAG_DB = 3.0
#: Cells of a chart line besides the name and the bar: index (5), a space, the SQNR (6), the
#: widest tail (`` local  42.2``, 12) and the drop mark (`` ▼``, 2).
FIXED_CELLS = 5 + 1 + 6 + 12 + 2


def chart_line(row: LayerRow, drop: float, width: int, top: float) -> Text:
    """``  3 relu1   ██████▌  42.2  Δ -14.7 ▼``; ``local`` instead of Δ when the trace has it."""
    sq = row.values.get("sqnr_db", math.nan)
    local = row.values.get("local_sqnr_db", math.nan)
    name = Text(shown(row.record.name))
    name.truncate(NAME_WIDTH, overflow="ellipsis", pad=True)
    bar_w = max(width - NAME_WIDTH - FIXED_CELLS, 4)
    filled = 0.0 if math.isnan(sq) else bar_w * min(max(sq, 0.0), top) / top
    full = int(filled)
    bar = "█" * full + ("▌" if filled - full >= 0.5 else "")
    line = Text.assemble((f"{row.index:>4} ", "dim"), name, " ")
    line.append(bar.ljust(bar_w), style=sqnr_style(sq))
    line.append(f" {fmt_db(sq):>5}", style=sqnr_style(sq))
    if not math.isnan(local):
        line.append(" local ", style="dim")
        line.append(f"{fmt_db(local):>5}", style=sqnr_style(local))
    elif not math.isnan(drop) and not math.isinf(drop):
        line.append(" Δ ", style="dim")
        line.append(f"{drop:+6.1f}", style="bold red" if drop <= -DROP_FLAG_DB else "dim")
    if not math.isnan(drop) and drop <= -DROP_FLAG_DB:
        line.append(" ▼", style="bold red")
    line.truncate(max(width, 1))  # a line wider than the list wraps: ▼ on a line of its own
    return line


class PropagationChart(OptionList):
    """Scrollable bar chart; the option id is the layer index."""

    def __init__(self, rows: Sequence[LayerRow], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows = [r for r in rows if r.measured]
        drops = sqnr_drop(rows)
        self.drops = {r.index: float(drops[r.index]) for r in self.rows}
        finite = [r.values["sqnr_db"] for r in self.rows
                  if math.isfinite(r.values.get("sqnr_db", math.nan))]
        self.top = max([60.0, *finite])
        self._width = 0
        self._generation = 0
        self._pending: int | None = None

    def on_resize(self, event: events.Resize) -> None:
        region = self.scrollable_content_region
        width = region.width
        if len(self.rows) > region.height and not self.show_vertical_scrollbar:
            # measured before the options are in: the scrollbar they bring takes its cells
            width -= self.styles.scrollbar_size_vertical
        if width != self._width:
            self._width = width
            self._rebuild()

    def _rebuild(self) -> None:
        keep = self.highlighted
        self.clear_options()
        self._generation += 1
        # as the layer table: a screenful first, the rest after the first paint
        first = first_rows(self.size.height)
        self._add(0, first)
        if len(self.rows) > first:
            self.call_after_refresh(self._add_rest, self._generation, first)
        if keep is not None and self.option_count:
            self.highlighted = min(keep, self.option_count - 1)

    def _add(self, start: int, stop: int) -> None:
        self.add_options(
            Option(chart_line(r, self.drops[r.index], self._width, self.top), id=str(r.index))
            for r in self.rows[start:stop]
        )

    def _add_rest(self, generation: int, start: int) -> None:
        if generation != self._generation:
            return  # rebuilt meanwhile
        self._add(start, len(self.rows))
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.show_layer(pending)

    def show_layer(self, index: int) -> None:
        """Highlight a layer's bar if it has one."""
        for pos, r in enumerate(self.rows):
            if r.index == index:
                if pos >= self.option_count:
                    self._pending = index  # added after the first paint; _add_rest moves there
                elif self.highlighted != pos:
                    self.highlighted = pos
                return
