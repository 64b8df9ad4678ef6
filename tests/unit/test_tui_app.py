"""Pilot tests: the viewer driven by keys and mouse on the committed fixture trace."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text
from textual.widgets import DataTable, Input, OptionList, Static

from qdebug.errors import TraceFileError
from qdebug.tui.app import QdebugApp, create_app
from qdebug.tui.screens.compare import CompareScreen
from qdebug.tui.screens.detail import LayerDetailScreen
from qdebug.tui.screens.help import HelpScreen
from qdebug.tui.screens.main import MainScreen
from qdebug.tui.widgets.layer_table import LayerTable, first_rows
from qdebug.tui.widgets.propagation_chart import PropagationChart
from tui_traces import FIXTURE, copy_trace, sync

SIZE = (120, 40)


def _table(app: QdebugApp) -> LayerTable:
    return app.screen.query_one(LayerTable)


def _static_text(app: QdebugApp, selector: str) -> str:
    """What a Static shows, as plain text."""
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(app.screen.query_one(selector, Static).content)
    return console.export_text()


@sync
async def test_main_screen_lists_every_layer_and_the_chart_the_measured_ones() -> None:
    app = create_app(FIXTURE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        table = _table(app)
        assert table.row_count == len(app.trace.layers) == 13
        assert [r.record.name for r in table.shown][:4] == ["image", "conv1", "bn1", "relu1"]
        chart = app.screen.query_one(PropagationChart)
        assert chart.option_count == sum(r.measured for r in app.rows) == 9
        header = _static_text(app, "#header")
        assert "digits_cnn" in header and "keras3" in header and "256 samples" in header
        assert "top-1 100.0%" in header and "40.2 dB" in header
        # the local SQNR column shows the trace's own number for relu1
        local = app.trace.layer_metrics()["local_sqnr_db"][3]
        assert table.get_row("3")[3].plain == f"{local:.1f}"


@sync
async def test_keyboard_navigation_moves_the_cursor_and_the_chart_follows() -> None:
    app = create_app(FIXTURE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "down", "down")
        assert _table(app).current_layer == 3
        chart = app.screen.query_one(PropagationChart)
        assert chart.highlighted is not None
        assert chart.get_option_at_index(chart.highlighted).id == "3"


@sync
async def test_sort_by_key_and_by_header_click_puts_nan_last() -> None:
    app = create_app(FIXTURE)
    async with app.run_test(size=SIZE) as pilot:
        table = _table(app)
        await pilot.press("s", "s")  # index → name → SQNR
        assert table.sort_key == "sqnr_db"
        sq = [r.values["sqnr_db"] for r in table.shown]
        finite = [v for v in sq if not math.isnan(v)]
        assert finite == sorted(finite) and all(math.isnan(v) for v in sq[len(finite):])
        assert table.shown[0].record.name == "conv2"
        await pilot.press("r")
        assert table.reverse and table.shown[0].record.name == "image"
        assert math.isnan(table.shown[-1].values["sqnr_db"])
        await pilot.click(LayerTable, offset=(12, 0))  # the "layer" header
        await pilot.pause()
        assert table.sort_key == "name"
        assert [r.record.name for r in table.shown][:3] == ["bn1", "conv1", "conv2"]


@sync
async def test_filter_by_name_or_class_and_clear() -> None:
    app = create_app(FIXTURE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"dense")
        table = _table(app)
        assert [r.record.name for r in table.shown] == ["fc", "probs"]
        await pilot.press("enter")
        assert app.focused is table
        assert table.border_subtitle is None
        await pilot.press("escape")
        assert table.row_count == 13
        await pilot.press("slash", *"zzq")  # matches nothing: said under the table
        assert table.row_count == 0 and "no layer matches 'zzq'" in str(table.border_subtitle)
        await pilot.press("enter", "escape")
        assert table.row_count == 13 and table.border_subtitle is None


@sync
async def test_worst_and_next_culprit_jump_through_the_ranking(tmp_path: Path) -> None:
    app = create_app(copy_trace(tmp_path / "c.h5", culprits=[12, 5]))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w")
        assert _table(app).current_layer == 8  # conv2: lowest accumulated SQNR
        culprits = [c.index for c in app.trace.culprits()]
        assert culprits == [12, 5]
        await pilot.press("n")
        assert _table(app).current_layer == culprits[0]  # the trace's ranked culprits, in order
        await pilot.press("slash", *"pool", "enter", "n")  # a filter hiding it is cleared
        assert _table(app).current_layer == culprits[1]


@sync
async def test_detail_screen_loads_histograms_and_samples_in_workers() -> None:
    app = create_app(FIXTURE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "down", "down", "enter")
        assert isinstance(app.screen, LayerDetailScreen)
        assert app.screen.layer_index == 3
        await app.workers.wait_for_complete()
        await pilot.pause()
        head = _static_text(app, "#detail-head")
        assert "relu1" in head and "CONV_2D" in head and "scale 0.0192496" in head
        assert "conv1, bn1" in head  # the layers fused into it
        hist = _static_text(app, "#hist")
        assert "sample 0" in hist and "◀ range low" in hist
        assert "LSB" in _static_text(app, "#err-hist")
        channels = _static_text(app, "#channels")
        assert channels.count("ch ") == 16 and "◀ worst" in channels
        worst = app.screen.query_one("#worst-samples", OptionList)
        assert worst.option_count == 8
        assert all(" dB" in str(worst.get_option_at_index(k).prompt) for k in range(8))
        await pilot.press("right_square_bracket")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "sample 1" in _static_text(app, "#hist")
        picker = app.screen.query_one("#samples", OptionList)
        assert picker.highlighted == 1 and " dB" in str(picker.get_option_at_index(1).prompt)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


@sync
async def test_detail_of_a_fused_layer_points_to_its_tensor() -> None:
    app = create_app(FIXTURE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "d")
        assert isinstance(app.screen, LayerDetailScreen)
        assert "relu1's tensor" in _static_text(app, "#detail-head")
        assert "no tensor of its own" in _static_text(app, "#hist")


@sync
async def test_chart_click_selects_and_opens_a_layer() -> None:
    app = create_app(FIXTURE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click(PropagationChart, offset=(10, 2))  # second bar: relu1
        await pilot.pause()
        assert isinstance(app.screen, LayerDetailScreen) and app.screen.layer_index == 3


@sync
async def test_help_lists_every_binding_and_closes() -> None:
    app = create_app(FIXTURE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = _static_text(app, "#help-text")
        for screen in (QdebugApp, MainScreen, LayerDetailScreen, CompareScreen):
            for b in screen.BINDINGS:
                assert b.description in text  # type: ignore[union-attr]
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


@sync
async def test_compare_two_traces_aligned_with_deltas(tmp_path: Path) -> None:
    before = copy_trace(tmp_path / "before.h5")
    after = copy_trace(tmp_path / "after.h5", sqnr_shift={3: -6.0, 8: 2.0})
    app = create_app(before, after)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)
        table = app.screen.query_one("#compare", DataTable)
        assert table.row_count == 13
        relu1 = table.get_row("3")
        assert relu1[1].plain == "relu1" and relu1[5].plain == "-6.0"
        assert "red" in str(relu1[5].style)
        assert table.get_row("8")[5].plain == "+2.0" and "green" in str(table.get_row("8")[5].style)
        assert table.get_row("5")[5].plain == "+0.0"
        await pilot.press("s")
        assert table.get_row_at(0)[1].plain == "relu1"  # the largest change first: -6.0
        assert table.get_row_at(1)[1].plain == "conv2"  # then +2.0, before the unchanged
        assert table.get_row_at(2)[5].plain == "+0.0"
        await pilot.press("end")  # the last row, not the table scrolled sideways
        assert table.cursor_row == table.row_count - 1 and table.scroll_x == 0
        await pilot.press("home")
        assert table.cursor_row == 0
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("c")
        assert isinstance(app.screen, CompareScreen)
        assert "not traces of one model" not in _static_text(app, "#compare-head")


@sync
async def test_compare_of_two_different_models_says_so(tmp_path: Path) -> None:
    from synthetic_traces import make_trace

    other = make_trace(tmp_path / "other.h5", names=["x", *(f"z{i}" for i in range(1, 8))],
                       model_name="another")
    app = create_app(FIXTURE, other)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, CompareScreen)
        head = _static_text(app, "#compare-head")
        assert "not traces of one model" in head and "layer names in common" in head


@sync
async def test_quit_closes_the_trace() -> None:
    app = create_app(FIXTURE)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
    assert app.return_code == 0
    with pytest.raises((KeyError, ValueError)):  # h5py refuses reads from a closed file
        app.trace.layer_metrics()


@sync
async def test_small_terminal_still_shows_the_table() -> None:
    app = create_app(FIXTURE)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        table = _table(app)
        assert table.size.height >= 5 and table.row_count == 13


def test_bad_second_trace_raises_before_any_ui(tmp_path: Path) -> None:
    with pytest.raises(TraceFileError):
        create_app(FIXTURE, tmp_path / "missing.h5")


@sync
async def test_deep_model_fills_the_table_after_the_first_paint(tmp_path: Path) -> None:
    from synthetic_traces import make_trace

    path = make_trace(tmp_path / "deep.h5", layers=300, samples=8, noise_lsb={250: 30.0})
    app = create_app(path)
    async with app.run_test(size=SIZE) as pilot:
        table = _table(app)
        await pilot.press("w")  # the worst layer is beyond the first screenful
        assert table.complete and table.row_count == 300
        assert table.current_layer == 250
        assert app.screen.query_one(PropagationChart).option_count == 300
        table.sort_by("name")
        # a screenful first, the rest after the paint
        assert table.row_count == first_rows(SIZE[1]) < 300
        await pilot.pause()
        assert table.complete and table.current_layer == 250


@sync
async def test_home_and_end_move_the_cursor_to_the_first_and_last_layer(tmp_path: Path) -> None:
    """The help lists Home and End: they move the cursor (DataTable's own bindings only
    scrolled, so Enter then opened the layer the cursor was still on)."""
    from synthetic_traces import make_trace

    path = make_trace(tmp_path / "deep.h5", layers=300, samples=8)
    app = create_app(path)
    async with app.run_test(size=SIZE) as pilot:
        table = _table(app)
        table.focus()
        await pilot.press("end")
        assert table.cursor_row == 299 and table.current_layer == 299 and table.complete
        await pilot.press("home")
        assert table.cursor_row == 0 and table.current_layer == 0
        await pilot.pause()
        assert table.row_count == 300  # the rows added after the first paint: not twice


@sync
async def test_histograms_fit_the_panel_at_80_by_24() -> None:
    """At the smallest supported size the histogram lines stay one line each: the bars give
    way to the labels ("◀ range low" wrapped onto a line of its own)."""
    from rich.cells import cell_len

    app = create_app(FIXTURE)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("down", "down", "down", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        for selector in ("#hist", "#err-hist"):
            widget = app.screen.query_one(selector, Static)
            content = widget.content
            assert isinstance(content, Text)
            lines = content.plain.splitlines()[3 if selector == "#hist" else 1:]
            assert lines and widget.size.width > 0
            too_long = [ln for ln in lines if cell_len(ln) > widget.size.width]
            assert not too_long, (selector, widget.size.width, too_long[:2])
        assert "◀ range low" in _static_text(app, "#hist")


@sync
async def test_next_culprit_in_a_trace_without_culprits_says_why_and_names_none(
    tmp_path: Path,
) -> None:
    """A healthy trace records no culprits: `n` says so instead of jumping to the layer with
    the lowest local SQNR (which the viewer then presented as a culprit)."""
    from synthetic_traces import make_trace

    path = make_trace(tmp_path / "healthy.h5")
    app = create_app(path)
    async with app.run_test(size=SIZE) as pilot:
        assert app.trace.culprits() == []
        start = _table(app).current_layer
        await pilot.press("n")
        await pilot.pause()
        assert _table(app).current_layer == start
        said = [n.message for n in app._notifications]
        assert any("every output is healthy" in m for m in said), said
        await pilot.press("w")  # the worst layer is still one key away
        assert _table(app).current_layer == app.screen.worst[0]
