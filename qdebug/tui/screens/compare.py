"""Two traces of the same model side by side, aligned by layer name, with deltas."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from qdebug.analysis.trace_diff import check_comparable
from qdebug.errors import TraceFileError
from qdebug.metrics import sqnr_from_sums
from qdebug.output.fmt import TEXT_LIMIT
from qdebug.store.reader import Trace
from qdebug.tui.compare_rows import (
    ComparedLayer,
    align,
    delta_style,
    lsb_comparable,
    lsb_kinds,
)
from qdebug.tui.layer_rows import (
    LayerRow,
    fmt_db,
    fmt_lsb,
    fmt_num,
    fmt_pct,
    shown,
    sqnr_style,
    status_text,
)


def _side_header(tag: str, trace: Trace) -> Text:
    om = trace.output_metrics()
    text = Text.assemble((f"{tag} ", "bold reverse"), " ", shown(trace.path.name), "  ",
                         (shown(trace.model_name), "bold"), f"  {trace.n_samples} samples")
    for j, o in enumerate(trace.outputs):
        sq = float(om["sqnr_db"][j])
        text.append(f"  {shown(o.name)} ")
        text.append(f"{fmt_db(sq)} dB", style=sqnr_style(sq))
        top1 = float(om["top1_agreement"][j])
        if not math.isnan(top1):
            text.append(f" top-1 {top1 * 100:.1f}%")
    return text


def _delta_cell(delta: float, fmt: str = "{:+.1f}") -> Text:
    if math.isnan(delta):
        return Text("—", style="dim", justify="right")
    return Text(fmt.format(delta), style=delta_style(delta), justify="right")


def _rmse_cells(c: ComparedLayer, in_lsb: bool) -> list[Text]:
    """RMSE of A and B and B − A: in LSB when an LSB is the same on both sides, else in the
    tensors' float units (an int8 LSB is 256 int16 LSBs: a Δ between them means nothing)."""
    if in_lsb:
        a, b = c.value("a", "rmse_lsb"), c.value("b", "rmse_lsb")
        cells = [fmt_lsb(a), fmt_lsb(b), "—" if math.isnan(b - a) else f"{b - a:+.2f}"]
    else:
        a, b = c.rmse("a"), c.rmse("b")
        cells = [fmt_num(a), fmt_num(b), "—" if math.isnan(b - a) else f"{b - a:+.3g}"]
    # more error is worse: the colour follows the change of A's error to B's in dB, which is
    # an SQNR with A's error as the signal (metrics.sqnr_from_sums, the one home of dB)
    change_db = float(sqnr_from_sums(np.array(a * a), np.array(b * b)))
    style = delta_style(change_db) if math.isfinite(change_db) else "dim"
    return [Text(cells[0], justify="right"), Text(cells[1], justify="right"),
            Text(cells[2], justify="right", style=style)]


def _cells(c: ComparedLayer, pos: int, in_lsb: bool) -> list[Text]:
    def num(side: str, key: str, fmt: Callable[[float], str]) -> Text:
        v = c.value(side, key)
        return Text(fmt(v), style=sqnr_style(v) if key == "sqnr_db" else "", justify="right")

    status = [status_text(r.record) if r is not None else "absent" for r in (c.a, c.b)]
    either = c.a or c.b
    cls = either.record.class_name if either is not None else ""
    return [
        Text(str(pos), justify="right"),
        Text(shown(c.name)),
        Text(shown(cls)),
        num("a", "sqnr_db", fmt_db), num("b", "sqnr_db", fmt_db),
        _delta_cell(c.delta("sqnr_db")),
        *_rmse_cells(c, in_lsb),
        num("a", "clip_share", fmt_pct), num("b", "clip_share", fmt_pct),
        Text(status[0] if status[0] == status[1] else f"{status[0]} ≠ {status[1]}",
             style="" if status[0] == status[1] else "bold yellow"),
    ]


COLUMNS = ("#", "layer", "class", "SQNR A", "SQNR B", "Δ dB", "RMSE A", "RMSE B", "Δ LSB",
           "clip A", "clip B", "status")
#: The RMSE columns when the two traces' LSBs differ: float units.
FLOAT_RMSE = ("RMSE A (float)", "RMSE B (float)", "Δ RMSE")


class CompareScreen(Screen[None]):
    """Per-layer A vs B with B − A deltas; green is better in B, red worse."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "toggle_order", "Order by Δ"),
        # DataTable binds Home/End to scrolling, sideways too: here they go to the first and
        # the last layer, as in the layer table
        Binding("home", "first_row", "First", show=False, priority=True),
        Binding("end", "last_row", "Last", show=False, priority=True),
    ]

    def __init__(self, a: Trace, rows_a: list[LayerRow], b: Trace, rows_b: list[LayerRow]) -> None:
        super().__init__()
        self.a, self.b = a, b
        self.pairs = align(rows_a, rows_b)
        self.by_delta = False
        self.in_lsb = lsb_comparable(self.pairs)
        """RMSE in LSB (the same LSB on both sides), else in float units."""

    def compose(self) -> ComposeResult:
        head = _side_header("A", self.a)
        head.append("\n")
        head.append_text(_side_header("B", self.b))
        try:
            check_comparable(self.a, self.b)
        except TraceFileError as exc:  # compared all the same, but never silently
            why = exc.message.rpartition("are traces of different models")[2].strip(" ()")
            head.append(f"\nnot traces of one model ({shown(why, TEXT_LIMIT)}): rows are paired by "
                        "layer name only", style="bold yellow")
        if not self.in_lsb:
            head.append(f"\nRMSE in float units: A's LSB ({lsb_kinds(self.pairs, 'a')}) and "
                        f"B's ({lsb_kinds(self.pairs, 'b')}) differ, so LSBs are not compared",
                        style="yellow")
        yield Static(head, id="compare-head")
        yield DataTable(id="compare", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#compare", DataTable)
        for label in COLUMNS if self.in_lsb else COLUMNS[:6] + FLOAT_RMSE + COLUMNS[9:]:
            table.add_column(label, key=label)
        self._fill()
        table.focus()

    def _fill(self) -> None:
        table = self.query_one("#compare", DataTable)
        table.clear()
        order = list(enumerate(self.pairs))
        if self.by_delta:
            # the largest change first, a regression before an improvement of the same size
            # (ascending Δ put the unchanged layers first when nothing got worse); layers
            # without a delta last
            order.sort(key=lambda p: (math.isnan(p[1].delta("sqnr_db")),
                                      -abs(p[1].delta("sqnr_db")), p[1].delta("sqnr_db")))
        for pos, pair in order:
            table.add_row(*_cells(pair, pos, self.in_lsb), key=str(pos))

    def action_first_row(self) -> None:
        self.query_one("#compare", DataTable).move_cursor(row=0, column=0)

    def action_last_row(self) -> None:
        table = self.query_one("#compare", DataTable)
        table.move_cursor(row=max(table.row_count - 1, 0), column=0)

    def action_toggle_order(self) -> None:
        self.by_delta = not self.by_delta
        self._fill()
