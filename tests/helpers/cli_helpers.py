"""Running the real command line in a subprocess, as a user or a CI job would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any


def run_qdebug(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m qdebug ARGS`` with captured text output."""
    return subprocess.run([sys.executable, "-m", "qdebug", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit 2, no traceback, and one error line (progress lines of finished phases may precede
    it on stderr) that names the thing and the fix."""
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("qdebug:")]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    assert errors[0].startswith("qdebug: error: ") and "Traceback" not in err
    for n in needles:
        assert n in errors[0], errors[0]


def invoke(args: list[str]) -> tuple[int, str, str]:
    """``qdebug ARGS`` in this process (click's runner): exit code, stdout, stderr."""
    from click.testing import CliRunner

    from qdebug.cli import cli

    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.stdout, result.stderr


def left_behind(folder: Path) -> list[str]:
    """The names of every file and folder under ``folder`` (none if it is gone)."""
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def report_csv(trace: Path) -> Any:
    """``qdebug report TRACE --format csv`` read as a DataFrame."""
    import io

    import pandas as pd

    out = run_qdebug("report", trace, "--format", "csv")
    assert out.returncode == 0, out.stderr
    return pd.read_csv(io.StringIO(out.stdout))
