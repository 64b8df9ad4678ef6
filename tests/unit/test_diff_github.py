"""qdebug diff --format github: workflow commands line by line, the job summary, no injection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from qdebug.analysis.trace_diff import diff_paths
from synthetic_traces import make_trace


def _diff(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "qdebug", "diff", *map(str, args),
                           "--format", "github"],
                          capture_output=True, text=True, timeout=120, env=full)


def test_a_regression_is_an_error_annotation_per_reason_then_the_verdict(tmp_path: Path) -> None:
    base = make_trace(tmp_path / "base.h5")
    new = make_trace(tmp_path / "new.h5", noise_lsb={4: 3.0, 5: 2.0})
    res = _diff(base, new)
    assert res.returncode == 1 and res.stderr == ""
    lines = res.stdout.splitlines()
    reasons = diff_paths(base, new).reasons
    assert len(reasons) >= 2 and len(lines) == len(reasons) + 1
    where = f"chain: {base} → {new}"
    for line, reason in zip(lines, reasons, strict=False):
        assert line == f"::error title=qdebug diff%3A regression::{where}: {reason}"
    assert lines[-1] == (f"::error title=qdebug diff%3A regression::{where}: "
                         f"{len(reasons)} threshold(s) exceeded")


def test_no_regression_is_one_notice_and_exit_0(tmp_path: Path) -> None:
    base = make_trace(tmp_path / "base.h5")
    res = _diff(base, base)
    assert res.returncode == 0
    assert res.stdout.splitlines() == [
        f"::notice title=qdebug diff%3A ok::chain: {base} → {base}: no regression (within "
        "every threshold)"
    ]


def test_the_job_summary_gets_the_markdown_diff(tmp_path: Path) -> None:
    base = make_trace(tmp_path / "base.h5")
    new = make_trace(tmp_path / "new.h5", noise_lsb={4: 3.0})
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    res = _diff(base, new, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert res.returncode == 1
    text = summary.read_text()
    assert text.startswith("earlier step\n### qdebug diff: ❌ regression")  # appended
    assert "#### Layers that changed most" in text
    unwritable = tmp_path / "no" / "such" / "summary.md"
    res = _diff(base, new, env={"GITHUB_STEP_SUMMARY": str(unwritable)})
    assert res.returncode == 1  # the verdict stands; the summary is a warning annotation
    assert res.stdout.splitlines()[-1].startswith(
        "::warning title=qdebug diff::could not append to $GITHUB_STEP_SUMMARY")


def test_names_from_a_trace_cannot_start_a_workflow_command(tmp_path: Path) -> None:
    """A model name carrying a newline and a command of its own (``::add-mask``, ``%0A``
    already escaped) stays inside its own annotation line."""
    evil = "m\n::error::forged\r::set-output name=x::1%0A::stop-commands::t"
    base = make_trace(tmp_path / "base.h5", model_name=evil)
    new = make_trace(tmp_path / "new.h5", model_name=evil, noise_lsb={4: 3.0})
    res = _diff(base, new)
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert all(line.startswith("::error title=qdebug diff%3A regression::") for line in lines)
    assert not any(line.startswith("::error::forged") or line.startswith("::set-output")
                   for line in lines)
    assert "%250A" in lines[0]  # the name's own '%0A' cannot decode to a line break
