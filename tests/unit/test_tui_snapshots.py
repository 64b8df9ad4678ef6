"""Snapshots of the viewer's screens on the committed fixture trace (pytest-textual-snapshot).
Update with ``pytest tests/unit/test_tui_snapshots.py --snapshot-update`` and review the SVGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from qdebug.tui.app import create_app
from synthetic_traces import make_trace
from tui_traces import FIXTURE, as_int16, copy_trace

SIZE = (120, 40)


async def _settle(pilot: Pilot[Any]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_main_screen(snap_compare: Any) -> None:
    assert snap_compare(create_app(FIXTURE), terminal_size=SIZE)


def test_main_screen_80x24(snap_compare: Any) -> None:
    assert snap_compare(create_app(FIXTURE), terminal_size=(80, 24))


def test_detail_screen(snap_compare: Any) -> None:
    async def open_relu1(pilot: Pilot[Any]) -> None:
        await pilot.press("down", "down", "down", "enter")
        await _settle(pilot)

    assert snap_compare(create_app(FIXTURE), terminal_size=SIZE, run_before=open_relu1)


def test_help_screen(snap_compare: Any) -> None:
    assert snap_compare(create_app(FIXTURE), terminal_size=SIZE, press=["question_mark"])


def test_compare_screen(snap_compare: Any, tmp_path: Path) -> None:
    before = copy_trace(tmp_path / "before.h5")
    after = copy_trace(tmp_path / "after.h5", sqnr_shift={3: -6.0, 8: 2.0, 11: -1.5})
    assert snap_compare(create_app(before, after), terminal_size=SIZE, run_before=_settle)


def test_compare_screen_int8_against_int16(snap_compare: Any, tmp_path: Path) -> None:
    """RMSE in float units, and the line saying why."""
    a, b = copy_trace(tmp_path / "a.h5"), as_int16(tmp_path / "b.h5")
    assert snap_compare(create_app(a, b), terminal_size=SIZE, run_before=_settle)


def test_main_screen_of_a_177_layer_model(snap_compare: Any, tmp_path: Path) -> None:
    """Every chart bar on one line, ▼ marks included."""
    deep = make_trace(tmp_path / "deep.h5", layers=177,
                      noise_lsb={k: 12.0 for k in range(5, 177, 9)})
    assert snap_compare(create_app(deep), terminal_size=SIZE, run_before=_settle)
