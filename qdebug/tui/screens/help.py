"""The help screen: every key binding of every screen, read from the bindings themselves."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from qdebug.tui.layer_rows import colour_legend
from qdebug.tui.screens.compare import CompareScreen
from qdebug.tui.screens.detail import LayerDetailScreen
from qdebug.tui.screens.main import MainScreen

MOUSE = (
    ("click a row", "select it; click again (or Enter) for its detail"),
    ("click a column header", "sort by it; again to reverse"),
    ("click a chart bar", "jump to that layer"),
    ("wheel", "scroll"),
)


def _keys(binding: Binding) -> str:
    names = {"slash": "/", "question_mark": "?", "left_square_bracket": "[",
             "right_square_bracket": "]", "escape": "Esc", "enter": "Enter", "up": "↑",
             "down": "↓", "pageup": "PgUp", "pagedown": "PgDn", "home": "Home", "end": "End"}
    return " ".join(names.get(k, k) for k in binding.key.split(","))


def _as_bindings(items: list[BindingType]) -> list[Binding]:
    return [b for b in items if isinstance(b, Binding)]


def binding_sections(app_bindings: list[BindingType]) -> list[tuple[str, list[Binding]]]:
    """(section title, bindings) for the app and each screen."""
    table_keys = [Binding("enter", "", "open the layer's detail"),
                  Binding("up,down,pageup,pagedown,home,end", "", "move")]
    return [
        ("everywhere", _as_bindings(app_bindings)),
        ("main screen", _as_bindings(MainScreen.BINDINGS) + table_keys),
        ("layer detail", [*_as_bindings(LayerDetailScreen.BINDINGS),
                          Binding("up,down,enter", "", "pick a stored sample")]),
        ("compare (two traces)", _as_bindings(CompareScreen.BINDINGS)),
    ]


def help_table(app_bindings: list[BindingType]) -> Table:
    """The bindings and mouse actions as one table."""
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for title, bindings in binding_sections(app_bindings):
        table.add_row(Text(title, style="bold underline"), "")
        # A key with two meanings (the footer shows the one that applies) is one row.
        merged: dict[str, list[str]] = {}
        for b in bindings:
            merged.setdefault(_keys(b), []).append(b.description or b.action)
        for keys, meanings in merged.items():
            table.add_row(keys, " / ".join(meanings))
        table.add_row("", "")
    table.add_row(Text("mouse", style="bold underline"), "")
    for what, does in MOUSE:
        table.add_row(what, does)
    return table


class HelpScreen(ModalScreen[None]):
    """Lists every binding; any of Esc, q, ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "app.pop_screen", "Close help"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box") as box:
            box.border_title = "qdebug view — keys"
            yield Static(help_table(list(self.app.BINDINGS)), id="help-text")
            yield Static(Text(
                f"Colours: {colour_legend()}. "
                "Δ: change of accumulated SQNR at a layer (▼ a drop of 3 dB or more). "
                "clip: share of the error from values outside the calibrated range; sat.: "
                "share of integer values at a range end. A layer of many ops lists a summary "
                "of them (o lists them all). — : not in this trace.", style="dim"))


