"""The layer table: sortable by any column, filterable by name or class."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from qdebug.tui.layer_rows import (
    COLUMNS,
    Column,
    LayerRow,
    filter_rows,
    shown,
    sort_rows,
)


def first_rows(height: int) -> int:
    """How many rows a long list holds at its first paint in a region of this height: a
    screenful; the rest are added right after the paint, so start-up does not grow with
    depth."""
    return max(height, 24)


class LayerTable(DataTable[Text]):
    """One row per layer; the row key is the layer index."""

    # DataTable binds Home/End to scrolling, which leaves the cursor (and the layer Enter
    # opens) where it was: here they move the cursor to the first and the last layer.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "first_row", "First", show=False),
        Binding("end", "last_row", "Last", show=False),
    ]

    class LayerHighlighted(Message):
        """The cursor moved onto a layer."""

        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    class LayerSelected(Message):
        """A layer was chosen (Enter or click) for the detail screen."""

        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def __init__(self, rows: Sequence[LayerRow], *, id: str | None = None,
                 columns: Sequence[Column] = COLUMNS) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True, fixed_columns=2)
        self.all_rows = list(rows)
        self.columns_shown = tuple(columns)
        """The table's columns (``layer_rows.COLUMNS``, or fewer)."""
        self.sort_key = "index"
        self.reverse = False
        self.query_text = ""
        self.shown: list[LayerRow] = []
        self._generation = 0
        self._pending: int | None = None

    def on_mount(self) -> None:
        self.refresh_rows()

    @property
    def current_layer(self) -> int | None:
        """Index of the layer under the cursor."""
        if not self.shown or not 0 <= self.cursor_row < len(self.shown):
            return None
        return self.shown[self.cursor_row].index

    def refresh_rows(self, keep: int | None = None) -> None:
        """Rebuild the rows for the current sort and filter, keeping the cursor on ``keep``
        (default: the current layer) when it is still shown."""
        keep = self.current_layer if keep is None else keep
        self.clear(columns=True)
        for col in self.columns_shown:
            label = col.label
            if col.key == self.sort_key:
                label += " ▼" if self.reverse else " ▲"
            self.add_column(Text(label, justify="right" if col.numeric else "left"), key=col.key)
        self.shown = sort_rows(filter_rows(self.all_rows, self.query_text), self.sort_key,
                               self.reverse)
        self._generation += 1
        # a screenful first, the rest after the first paint: start-up does not grow with depth
        first = first_rows(self.app.size.height)
        self._add(0, first)
        if len(self.shown) > first:
            self.call_after_refresh(self._add_rest, self._generation)
        if keep is not None:
            self.show_layer(keep)

    def _add(self, start: int, stop: int) -> None:
        for row in self.shown[start:stop]:
            self.add_row(*(col.cell(row) for col in self.columns_shown), key=str(row.index))

    def _add_rest(self, generation: int) -> None:
        if generation != self._generation:
            return  # re-sorted or re-filtered meanwhile
        self._add(self.row_count, len(self.shown))  # End may have added them already
        if self._pending is not None:
            self.show_layer(self._pending)
            self._pending = None

    def action_first_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_last_row(self) -> None:
        if not self.shown:
            return
        if not self.complete:
            self._add(self.row_count, len(self.shown))
        self.move_cursor(row=len(self.shown) - 1)

    @property
    def complete(self) -> bool:
        """Whether every shown row has been added."""
        return self.row_count == len(self.shown)

    def sort_by(self, key: str, reverse: bool | None = None) -> None:
        """Sort by column ``key``; the same column again flips the direction."""
        if reverse is None:
            reverse = not self.reverse if key == self.sort_key else False
        self.sort_key, self.reverse = key, reverse
        self.refresh_rows()

    def sort_next(self) -> None:
        """Sort by the next column."""
        keys = [c.key for c in self.columns_shown]
        self.sort_by(keys[(keys.index(self.sort_key) + 1) % len(keys)],
                     reverse=False)

    def set_filter(self, query: str) -> None:
        """Show only layers whose name or class contains ``query``; an empty result says so
        under the table (an empty table alone looks like a broken trace)."""
        self.query_text = query
        self.refresh_rows()
        self.border_subtitle = (
            f"no layer matches {shown(query)!r} (Escape clears the filter)"
            if query and not self.shown else None
        )

    def show_layer(self, index: int) -> bool:
        """Put the cursor on a layer; False when the filter hides it."""
        for pos, row in enumerate(self.shown):
            if row.index == index:
                if pos >= self.row_count:
                    self._pending = index  # added after the first paint; _add_rest moves there
                    return True
                if self.cursor_row != pos:
                    self.move_cursor(row=pos)
                return True
        return False

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.LayerHighlighted(int(event.row_key.value)))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.LayerSelected(int(event.row_key.value)))
