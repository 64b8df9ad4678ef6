"""The text report and its --help agree on what it shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import qdebug
from qdebug.cli import cli
from qdebug.output.report_json import worst_layers
from qdebug.output.summary import SHOWN_LAYERS


def test_report_text_shows_the_five_worst_layers_as_its_help_says(fixture_trace: Path) -> None:
    runner = CliRunner()
    help_text = " ".join(runner.invoke(cli, ["report", "--help"]).output.split())
    assert "five worst layers" in help_text and "every layer with --format" in help_text
    out = runner.invoke(cli, ["report", str(fixture_trace)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("worst layers"))
    assert "the 5 with the lowest accumulated SQNR" in lines[start]
    end = next(i for i, ln in enumerate(lines) if ln.startswith("every layer: qdebug report"))
    rows = lines[start + 2 : end]
    with qdebug.open(fixture_trace) as tr:
        assert len(tr.layers) > SHOWN_LAYERS == len(rows) == 5


def test_piped_summary_keeps_long_names_on_one_line(tmp_path: Path) -> None:
    """Redirected to a file (no terminal, no COLUMNS), names are not folded at 80 columns."""
    import os
    import subprocess
    import sys

    from synthetic_traces import make_trace

    long = "block_12_expanded_conv_8_squeeze_excite_global_average_pooling2d_reshape"
    names = ["x", *(f"{long}_{i}" for i in range(1, 8))]
    path = make_trace(tmp_path / "long.h5", names=names, noise_lsb={5: 30.0})
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    out = subprocess.run([sys.executable, "-m", "qdebug", "report", str(path)],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if "block_12" in ln or "reshape_" in ln]
    assert len(lines) >= 6 and all(long in ln for ln in lines), lines  # never a fragment


def test_summary_says_when_a_trace_is_too_big_to_attach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line gives the size; over the limit it says what takes the room and what to
    do (the limit lowered here, so that small real traces cross it)."""
    from qdebug.output import summary
    from synthetic_traces import make_trace

    stored = make_trace(tmp_path / "stored.h5", store=2)
    bare = make_trace(tmp_path / "bare.h5", store=0)
    with qdebug.open(stored) as tr:
        assert summary.size_note(tr) == f"{stored.stat().st_size / 1e6:.1f} MB"
    monkeypatch.setattr(summary, "ATTACH_LIMIT", 1000)
    with qdebug.open(stored) as tr:
        assert "--slim" in summary.size_note(tr) and "over the 25 MB" in summary.size_note(tr)
    with qdebug.open(bare) as tr:
        note = summary.size_note(tr)
        assert "of it the INT8 model" in note and "--slim" not in note


@pytest.mark.parametrize("columns", ["80", "60"])
def test_worst_layer_rows_stay_one_line_on_a_narrow_terminal(fixture_trace: Path,
                                                             columns: str) -> None:
    """At 80 columns a long class (GlobalAveragePooling2D) or op (FULLY_CONNECTED) folded
    mid-word onto a line of its own; it is cut with an ellipsis and the layer name stays whole."""
    out = CliRunner().invoke(cli, ["report", str(fixture_trace)], env={"COLUMNS": columns})
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("worst layers"))
    end = next(i for i, ln in enumerate(lines) if ln.startswith("every layer: qdebug report"))
    rows = lines[start + 2 : end]
    with qdebug.open(fixture_trace) as tr:
        names = [tr.layers[i].name for i, _ in worst_layers(tr, SHOWN_LAYERS)]
    assert [r.split()[0] for r in rows] == names
    assert all(len(r.rstrip()) <= int(columns) for r in rows), rows
