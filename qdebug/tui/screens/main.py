"""The main screen: header, propagation chart, layer table."""

from __future__ import annotations

import math
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Input, OptionList

from qdebug.analysis.culprits import (
    HEALTHY_OUTPUT_DB,
    int16_remedy,
    no_culprits_reason,
    outputs_healthy,
    scores_total,
)
from qdebug.store.reader import Trace
from qdebug.store.schema import VIEW_OPS
from qdebug.tui.layer_rows import COLUMNS, LayerRow, ranking
from qdebug.tui.widgets.header_panel import HeaderPanel
from qdebug.tui.widgets.layer_table import LayerTable
from qdebug.tui.widgets.propagation_chart import PropagationChart


def no_culprits_text(trace: Trace) -> str:
    """Why a trace names no culprit, as the summary says it."""
    every = "op" if trace.view == VIEW_OPS else "layer"
    om = trace.output_metrics()
    if trace.outputs and outputs_healthy(om):
        return (f"every output is healthy ({HEALTHY_OUTPUT_DB:.0f} dB SQNR or more): no {every} "
                "is worth acting on")
    lm, stats = trace.typed_layer_metrics(), trace.layer_pooled_stats()
    total = max((scores_total(trace.layers, lm, stats, float(om["sqnr_db"][j]), o.layer)
                 for j, o in enumerate(trace.outputs)), default=0.0)
    return no_culprits_reason(trace.layers, lm, every, total,
                              int16_remedy(trace.meta.quantizer.name))


class MainScreen(Screen[None]):
    """Where the error of the whole network is seen at a glance."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("s", "sort_next", "Sort"),
        Binding("r", "reverse", "Reverse"),
        Binding("w", "worst", "Worst"),
        Binding("n", "next_culprit", "Culprit"),
        Binding("d", "detail", "Detail"),
        Binding("g", "toggle_chart", "Chart"),
        Binding("c", "compare", "Compare"),
    ]

    def __init__(self, trace: Trace, rows: list[LayerRow]) -> None:
        super().__init__()
        self.trace = trace
        self.rows = rows
        # The trace's own culprits only: a layer ranked by another rule would read as one.
        self.culprits = list(dict.fromkeys(c.index for c in trace.culprits()))
        self.worst = ranking(rows, key="sqnr_db")
        self._culprit_pos = -1

    def compose(self) -> ComposeResult:
        yield HeaderPanel(self.trace, id="header")
        chart = PropagationChart(self.rows, id="chart")
        has_local = any(math.isfinite(r.values.get("local_sqnr_db", math.nan))
                        for r in self.rows)
        # each bar's figure: its local SQNR where the trace has one (chart_line), else Δ
        chart.border_title = "accumulated SQNR by depth (dB) · " + (
            "local: SQNR of the error the layer adds" if has_local
            else "Δ: change at the layer")
        yield chart
        yield Input(placeholder="filter by name or class", id="filter")
        # a precision column only where ops differ in it (a per-op recipe), as the summary
        mixed = self.trace.mixed_precision
        yield LayerTable(self.rows, id="layers",
                         columns=[c for c in COLUMNS if c.key != "precision" or mixed])
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(LayerTable).focus()

    @property
    def table(self) -> LayerTable:
        """The layer table."""
        return self.query_one(LayerTable)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "compare":
            return getattr(self.app, "other", None) is not None
        return True

    def jump_to(self, index: int) -> None:
        """Put the table cursor on a layer, clearing a filter that hides it."""
        if not self.table.show_layer(index):
            self.query_one("#filter", Input).value = ""
            self.table.set_filter("")
            self.table.show_layer(index)
        self.table.focus()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("-shown")
        self.table.set_filter("")
        self.table.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.table.set_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.table.focus()

    def action_sort_next(self) -> None:
        self.table.sort_next()

    def action_reverse(self) -> None:
        self.table.sort_by(self.table.sort_key, reverse=not self.table.reverse)

    def action_worst(self) -> None:
        if self.worst:
            self.jump_to(self.worst[0])

    def action_next_culprit(self) -> None:
        if not self.culprits:
            self.notify(no_culprits_text(self.trace), title="no culprits", timeout=8)
            return
        self._culprit_pos = (self._culprit_pos + 1) % len(self.culprits)
        self.jump_to(self.culprits[self._culprit_pos])

    def action_toggle_chart(self) -> None:
        self.query_one(PropagationChart).toggle_class("-hidden")

    def action_detail(self) -> None:
        layer = self.table.current_layer
        if layer is not None:
            self.open_detail(layer)

    async def action_compare(self) -> None:
        await self.app.run_action("compare")

    def open_detail(self, layer: int) -> None:
        """Push the detail screen of a layer."""
        from qdebug.tui.screens.detail import LayerDetailScreen

        self.app.push_screen(LayerDetailScreen(self.trace, self.rows, layer))

    def on_layer_table_layer_highlighted(self, event: LayerTable.LayerHighlighted) -> None:
        self.query_one(PropagationChart).show_layer(event.index)

    def on_layer_table_layer_selected(self, event: LayerTable.LayerSelected) -> None:
        self.open_detail(event.index)

    @on(OptionList.OptionHighlighted, "#chart")
    def _chart_moved(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_id is not None and self.query_one(PropagationChart).has_focus:
            self.table.show_layer(int(event.option_id))

    @on(OptionList.OptionSelected, "#chart")
    def _chart_chosen(self, event: OptionList.OptionSelected) -> None:
        if event.option_id is not None:
            self.open_detail(int(event.option_id))
