"""The viewer application and the factory the CLI and the tests use."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from qdebug.store.reader import Trace, open_trace
from qdebug.tui.layer_rows import LayerRow, build_rows
from qdebug.tui.screens.compare import CompareScreen
from qdebug.tui.screens.help import HelpScreen
from qdebug.tui.screens.main import MainScreen


class QdebugApp(App[None]):
    """``qdebug view``: one trace, or two to compare."""

    CSS_PATH = "app.tcss"
    TITLE = "qdebug view"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("tab", "focus_next", "Next pane", show=False),
    ]

    def __init__(self, trace: Trace, other: Trace | None = None) -> None:
        super().__init__()
        self.trace = trace
        self.other = other
        self.rows: list[LayerRow] = build_rows(trace)
        self.other_rows: list[LayerRow] = build_rows(other) if other is not None else []
        #: Order of the layer detail's worst-samples list (``f`` there): ``sqnr`` or
        #: ``flipped``; kept here so every layer opened lists its samples the same way.
        self.worst_sort = "sqnr"

    def on_mount(self) -> None:
        self.push_screen(MainScreen(self.trace, self.rows))
        if self.other is not None:
            self.action_compare()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_compare(self) -> None:
        """Show the compare screen (two traces only)."""
        if self.other is not None and not isinstance(self.screen, CompareScreen):
            self.push_screen(CompareScreen(self.trace, self.rows, self.other, self.other_rows))

    def on_unmount(self) -> None:
        self.trace.close()
        if self.other is not None:
            self.other.close()


def create_app(path: str | Path, other: str | Path | None = None) -> QdebugApp:
    """Open the trace(s) and build the app. Raises ``TraceFileError`` before any UI starts."""
    trace = open_trace(path)
    second = None
    try:
        second = open_trace(other) if other is not None else None
        for t in (trace, second):  # what the screens read when they mount (small tables):
            if t is not None:  # a damaged trace fails here, with one line, not inside the UI
                t.output_metrics()
                t.culprits()
                t.float_islands  # noqa: B018
        return QdebugApp(trace, second)  # reads the pooled metrics
    except BaseException:
        trace.close()
        if second is not None:
            second.close()
        raise
