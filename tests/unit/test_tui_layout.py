"""The viewer at a user's terminal sizes: the op column whole at 120 columns, chart lines that
never wrap on a deep model, and LSB units that differ between two compared traces."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import h5py
from textual.widgets import DataTable

from qdebug.tui.app import create_app
from qdebug.tui.layer_rows import NAME_CELL, cut_middle
from qdebug.tui.screens.compare import CompareScreen
from qdebug.tui.widgets.layer_table import LayerTable
from qdebug.tui.widgets.propagation_chart import PropagationChart
from synthetic_traces import make_trace
from tui_traces import as_int16, copy_trace, sync

#: A ResNet50 layer name (19 cells) and a longer one that is cut.
LONG = "conv5_block3_3_conv_and_then_some_more"


def _column_ends(table: DataTable[Any]) -> dict[str, int]:
    """Where each column ends, in cells from the table's left edge."""
    ends, x = {}, 0
    for col in table.ordered_columns:
        x += col.get_render_width(table)
        ends[str(col.key.value)] = x
    return ends


@sync
async def test_the_op_column_is_whole_at_120_columns(tmp_path: Path) -> None:
    trace = copy_trace(tmp_path / "t.h5", names={3: "conv2_block1_1_relu", 12: LONG})
    app = create_app(trace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(LayerTable)
        ends = _column_ends(table)
        width = table.scrollable_content_region.width
        # every number and the op fit; the longer words may run off the edge
        assert ends["op_type"] <= width, (ends, width)
        assert max(ends.values()) > ends["status"] > ends["op_type"]
        assert "precision" not in ends  # one precision in the whole trace: no column
        cell = table.get_row("12")[1].plain
        assert cell == cut_middle(LONG, NAME_CELL) == "conv5_block3_3…hen_some_more"
        # both ends kept: a scoped name's last part tells layers apart
        head, tail = cell.split("…")
        assert LONG.startswith(head) and LONG.endswith(tail) and len(cell) == NAME_CELL
        assert table.get_row("3")[1].plain == "conv2_block1_1_relu"  # short enough: whole
        assert table.get_row("12")[list(ends).index("op_type")].plain == "SOFTMAX"


@sync
async def test_chart_lines_never_wrap_when_a_scrollbar_comes(tmp_path: Path) -> None:
    """The widest line (a local SQNR and a ▼) in a chart with more bars than it shows: its
    width was measured before the options (and so the scrollbar) were in, and the ▼ wrapped
    onto a line of its own."""
    app = create_app(copy_trace(tmp_path / "t.h5", sqnr_shift={8: -6.0, 12: -9.0}))
    async with app.run_test(size=(120, 24)) as pilot:
        await pilot.pause()
        await pilot.pause()
        chart = app.screen.query_one(PropagationChart)
        assert chart.show_vertical_scrollbar
        width = chart.scrollable_content_region.width
        prompts = [chart.get_option_at_index(k).prompt for k in range(chart.option_count)]
        widest = [p for p in prompts if "local" in p.plain and p.plain.endswith("▼")]
        assert [p.plain.split()[1] for p in widest] == ["relu1", "conv2", "probs"]
        assert all(p.cell_len <= width for p in prompts), (max(p.cell_len for p in prompts), width)
        assert chart.virtual_size.height == chart.option_count  # one line per bar


@sync
async def test_chart_lines_of_a_177_layer_model_never_wrap(tmp_path: Path) -> None:
    drops = {k: 12.0 for k in range(5, 177, 9)}  # a ▼ (a drop of 3 dB or more) every 9 layers
    app = create_app(make_trace(tmp_path / "deep.h5", layers=177, noise_lsb=drops))
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.pause()
        chart = app.screen.query_one(PropagationChart)
        assert chart.option_count == 177 and chart.show_vertical_scrollbar
        width = chart.scrollable_content_region.width
        prompts = [chart.get_option_at_index(k).prompt for k in range(chart.option_count)]
        marked = [p for p in prompts if p.plain.endswith("▼")]
        assert len(marked) >= len(drops)
        assert all(p.cell_len <= width for p in prompts), (max(p.cell_len for p in prompts), width)
        # one line per option: the list is exactly as tall as its options
        assert chart.virtual_size.height == chart.option_count


@sync
async def test_compare_gives_rmse_in_float_units_when_the_lsbs_differ(tmp_path: Path) -> None:
    a = copy_trace(tmp_path / "a.h5")
    b = as_int16(tmp_path / "b.h5")
    app = create_app(a, b)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen) and not screen.in_lsb
        table = screen.query_one("#compare", DataTable)
        labels = [str(c.label) for c in table.ordered_columns]
        assert labels[6:9] == ["RMSE A (float)", "RMSE B (float)", "Δ RMSE"]
        assert "Δ LSB" not in labels
        relu1 = table.get_row("3")
        mse = app.rows[3].values["mse"]
        assert relu1[6].plain == relu1[7].plain == f"{math.sqrt(mse):.3g}"
        assert relu1[8].plain == "+0"  # the same float error: no change
        head = str(screen.query_one("#compare-head").render())
        assert "RMSE in float units: A's LSB (int8) and B's (int16) differ" in head
    app = create_app(a, copy_trace(tmp_path / "a2.h5"))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CompareScreen) and screen.in_lsb  # one LSB: compared in it
        labels = [str(c.label) for c in screen.query_one("#compare", DataTable).ordered_columns]
        assert labels[6:9] == ["RMSE A", "RMSE B", "Δ LSB"]


@sync
async def test_a_mixed_precision_trace_shows_the_precision_beside_the_op(tmp_path: Path) -> None:
    trace = copy_trace(tmp_path / "t.h5", names={12: LONG})
    with h5py.File(trace, "r+") as f:  # conv2's op computes in int16 (a per-op recipe)
        precision = f["ops/precision"][()]
        precision[list(f["ops/name"][()]).index(_op_of(f, "conv2"))] = b"int16"
        f["ops/precision"][...] = precision
    app = create_app(trace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(LayerTable)
        ends = _column_ends(table)
        assert ends["op_type"] < ends["precision"] <= table.scrollable_content_region.width
        keys = list(ends)
        assert table.get_row("8")[keys.index("precision")].plain == "int16"
        assert table.get_row("5")[keys.index("precision")].plain == "int8"


def _op_of(f: h5py.File, layer: str) -> bytes:
    """The name of the op holding a layer's tensor."""
    names = [n.decode() for n in f["layers/name"][()]]
    tensor = f["layers/tensor_index"][names.index(layer)]
    return f["ops/name"][list(f["ops/tensor_index"][()]).index(tensor)]
