"""Trace text is shown literally, and bad trace files fail with one line, not a traceback."""

from __future__ import annotations

import html
import subprocess
import sys
from pathlib import Path

from rich.text import Text
from textual.widgets import Static

from qdebug.tui.app import create_app
from qdebug.tui.layer_rows import NAME_CELL, cut_middle
from qdebug.tui.screens.detail import LayerDetailScreen
from qdebug.tui.widgets.layer_table import LayerTable
from qdebug.tui.widgets.propagation_chart import PropagationChart
from tui_traces import CONTROL_NAME, FIXTURE, MARKUP_NAME, copy_trace, sync

ROOT = Path(__file__).resolve().parents[2]


def _screen_text(svg: str) -> str:
    return html.unescape(svg).replace("\xa0", " ")


@sync
async def test_layer_names_render_as_their_characters(tmp_path: Path) -> None:
    path = copy_trace(tmp_path / "evil.h5", names={3: MARKUP_NAME, 5: CONTROL_NAME})
    app = create_app(path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(LayerTable)
        assert table.get_row("3")[1].plain == MARKUP_NAME
        assert table.get_row("5")[1].plain == "evil\\x1b[31m\\x07name"  # visible, not executed
        chart = app.screen.query_one(PropagationChart)
        assert MARKUP_NAME in str(chart.get_option("3").prompt)
        screen = _screen_text(app.export_screenshot())
        assert MARKUP_NAME in screen and "evil\\x1b[31m\\x07n" in screen
        assert "\x1b" not in screen and "\x07" not in screen
        table.move_cursor(row=3)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, LayerDetailScreen)
        head = app.screen.query_one("#detail-head", Static).content
        assert isinstance(head, Text) and head.plain.startswith(MARKUP_NAME)
        assert MARKUP_NAME in _screen_text(app.export_screenshot())


def _view(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qdebug", "view", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qdebug: error: ") and fragment in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_corrupt_trace_gives_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    _assert_one_line_error(_view(str(bad)), "bad.h5")


def test_truncated_and_unknown_schema_traces_are_refused(tmp_path: Path) -> None:
    import h5py

    truncated = tmp_path / "cut.h5"
    truncated.write_bytes(FIXTURE.read_bytes()[: FIXTURE.stat().st_size // 2])
    _assert_one_line_error(_view(str(truncated)), "cut.h5")
    future = copy_trace(tmp_path / "future.h5")
    with h5py.File(future, "r+") as f:
        f.attrs["schema_version"] = "9.0"
    _assert_one_line_error(_view(str(future)), "schema 9.0")


def test_bad_second_trace_is_refused_too(tmp_path: Path) -> None:
    _assert_one_line_error(_view(str(FIXTURE), str(tmp_path / "nope.h5")), "no such file")


def test_viewer_never_imports_tensorflow() -> None:
    code = ("import sys, qdebug.cli, qdebug.tui.app, qdebug.tui.screens.detail; "
            "assert not any(m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras') "
            "for m in sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


@sync
async def test_megabyte_names_are_capped_before_the_viewer_renders_them(tmp_path: Path) -> None:
    # Measuring, folding and highlighting a 1,000,000-character cell takes minutes: every name
    # reaches a widget through fmt.shown, which keeps its first NAME_LIMIT characters and says so.
    from qdebug.output.fmt import NAME_LIMIT

    long = {3: "a" * 1_000_000, 5: "b" * 1_000_000}
    app = create_app(copy_trace(tmp_path / "long.h5", names=long))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(LayerTable)
        for row, name in long.items():
            cell = table.get_row(str(row))[1].plain
            # capped by fmt.shown, then cut to the column's width keeping both ends
            assert cell == cut_middle(f"{name[:NAME_LIMIT]}… (1,000,000 characters in all)",
                                      NAME_CELL)
            assert cell.startswith(name[:10]) and cell.endswith("in all)")
            prompt = str(app.screen.query_one(PropagationChart).get_option(str(row)).prompt)
            assert name[:10] in prompt and len(prompt) < NAME_LIMIT + 200
        table.move_cursor(row=3)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        head = app.screen.query_one("#detail-head", Static).content
        assert isinstance(head, Text) and head.plain.startswith("a" * NAME_LIMIT + "…")
        assert len(head.plain) < 10 * NAME_LIMIT


def _tmux_pane(command: list[str], env: dict[str, str], until: str) -> str:
    """What a real terminal (tmux, 100x30) shows once ``until`` is on screen."""
    import os
    import shlex
    import time

    sock = f"qdebug-test-{os.getpid()}"
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    line = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    subprocess.run([*tmux, "new-session", "-d", "-x", "100", "-y", "30",
                    f"env -u COLUMNS -u LINES {line} {shlex.join(command)}"],  # the pane's size
                   cwd=ROOT, check=True, timeout=30)
    try:
        pane = ""
        deadline = time.monotonic() + 60
        while until not in pane and time.monotonic() < deadline:
            time.sleep(0.5)
            pane = subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True,
                                  text=True, timeout=30).stdout
        return pane
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30)


def test_viewer_in_an_ascii_terminal_draws_ascii_look_alikes() -> None:
    """``LC_ALL=C`` without Python's UTF-8 mode: Textual's output stream is ASCII; bars, box
    lines and '—' were drawn as literal '\\u2588' escapes that broke every row. They are ASCII
    look-alikes of one cell each, so the layout is the UTF-8 terminal's."""
    import shutil

    import pytest

    if shutil.which("tmux") is None:
        pytest.skip("needs tmux (a real terminal)")
    pane = _tmux_pane([sys.executable, "-m", "qdebug", "view", str(FIXTURE)],
                      {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "TERM": "xterm-256color"},
                      until=" conv1 ")  # the layer table is drawn
    assert "Quit" in pane and " conv1 " in pane, pane
    assert "\\u" not in pane and "\\x" not in pane, pane  # no escaped glyph
    rows = pane.splitlines()
    chart = [r for r in rows if r.startswith("|") and "local" in r]
    assert chart and all(r.endswith("|") and len(r) == 100 for r in chart), pane  # aligned
    assert any("#####" in r and " image " in r for r in chart)  # the bars
    assert any(r.startswith("+-") and r.endswith("-+") for r in rows)  # the box's corners
    table = next(r for r in rows if " conv1 " in r)
    assert " - " in table and "fused > relu1" in table  # '—' and '→'


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting for its parent is gone too
        return stat.read().split(") ")[-1][:1] != "Z"


def test_viewer_whose_terminal_dies_while_it_starts_exits(tmp_path: Path) -> None:
    """tmux killed while ``qdebug view`` starts (an SSH session dropping) sends SIGHUP; the app
    went on with its input and output threads spinning on the dead terminal at full CPU,
    ignoring SIGTERM, three to five times in eight. It exits within the grace of
    ``cli.signals.leaving_on_signals`` (the bound below is a liveness bound, not a speed one)."""
    import os
    import shlex
    import shutil
    import signal
    import time

    import pytest

    if shutil.which("tmux") is None:
        pytest.skip("needs tmux (a real terminal)")
    pids = []
    for delay in (0.5, 0.8, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0):
        pid_file = tmp_path / f"pid-{delay}"
        sock = f"qdebug-hup-{os.getpid()}-{delay}"
        tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
        command = (f"echo $$ > {shlex.quote(str(pid_file))}; exec "
                   f"{shlex.join([sys.executable, '-m', 'qdebug', 'view', str(FIXTURE)])}")
        subprocess.run([*tmux, "new-session", "-d", "-x", "100", "-y", "30", command],
                       cwd=ROOT, check=True, timeout=30)
        time.sleep(delay)
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=30)
        pids.append(int(pid_file.read_text()))
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in pids if _alive(p)]
    for p in left:  # never leave one spinning behind the test
        os.kill(p, signal.SIGKILL)
    assert not left, f"{len(left)} of {len(pids)} viewers outlived their terminal"
