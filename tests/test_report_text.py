"""The text report and its --help agree on what it shows."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

import qdebug
from qdebug.cli import cli
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
