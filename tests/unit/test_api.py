"""The Python API: qdebug.diff, qdebug.assert_no_regression, the README example, no TensorFlow."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import qdebug
from qdebug.analysis.trace_diff import DiffResult, Thresholds
from synthetic_traces import make_trace

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "keras", "tf_keras", "ai_edge_litert")


def test_diff_returns_a_frozen_result_with_thresholds(fixture_trace: Path) -> None:
    with qdebug.open(fixture_trace) as tr:  # an open trace works as well as a path
        result = qdebug.diff(tr, fixture_trace, max_layer_drop_db=0.5)
    assert isinstance(result, DiffResult) and result.verdict == "ok" and not result.regressed
    assert result.thresholds == Thresholds(max_output_drop_db=1.0, max_layer_drop_db=0.5)
    with pytest.raises(AttributeError):
        result.reasons = ("changed",)  # type: ignore[misc]
    with pytest.raises(TypeError):
        qdebug.diff(fixture_trace, fixture_trace, max_drop=1.0)  # type: ignore[call-arg]


def test_assert_no_regression_names_the_offending_layers(tmp_path: Path) -> None:
    base = make_trace(tmp_path / "base.h5")
    new = make_trace(tmp_path / "new.h5", noise_lsb={2: 3.0, 6: 4.0})
    assert qdebug.assert_no_regression(base, base).verdict == "ok"
    with pytest.raises(AssertionError) as err:
        qdebug.assert_no_regression(base, new, max_layer_drop_db=3.0)
    message = str(err.value)
    assert message.splitlines()[0].startswith("quantization regressed for chain:")
    assert "  - layer l2: SQNR" in message and "  - layer l6: SQNR" in message
    assert message.splitlines()[-1] == "layers that got worse: l2, l6"
    assert qdebug.assert_no_regression(base, new, max_layer_drop_db=60).regressed is False


def _readme_example() -> str:
    """The full API example of docs/scripting.md."""
    text = (ROOT / "docs" / "scripting.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)[0]


def _readme_short_example() -> str:
    """The README's own four-line example."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## From Python", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)[0]


def test_readme_example_runs(
    fixture_trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "traces").mkdir()
    shutil.copy(fixture_trace, tmp_path / "traces" / "base.h5")
    shutil.copy(fixture_trace, tmp_path / "traces" / "new.h5")
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_example(), "docs/scripting.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out == ["digits_cnn 13 layers; output SQNR 40.2 dB", "ok ()"]


def test_readme_example_fails_on_a_regression(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    make_trace(tmp_path / "traces" / "base.h5")
    make_trace(tmp_path / "traces" / "new.h5", noise_lsb={3: 5.0})
    code = f"import os; os.chdir({str(tmp_path)!r})\n" + _readme_example()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 1
    assert "regression ('l3',)" in out.stdout and "AssertionError" in out.stderr
    assert "layers that got worse: l3" in out.stderr


def test_the_readme_short_example_runs_and_fails_on_a_regression(
    fixture_trace: Path, tmp_path: Path
) -> None:
    (tmp_path / "traces").mkdir()
    shutil.copy(fixture_trace, tmp_path / "traces" / "base.h5")
    shutil.copy(fixture_trace, tmp_path / "traces" / "new.h5")
    code = f"import os; os.chdir({str(tmp_path)!r})\n" + _readme_short_example()
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    make_trace(tmp_path / "traces" / "base.h5")
    make_trace(tmp_path / "traces" / "new.h5", noise_lsb={3: 5.0})
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "layers that got worse: l3" in bad.stderr


def test_diff_report_export_and_api_never_import_tensorflow(
    fixture_trace: Path, tmp_path: Path
) -> None:
    code = f"""
import sys
from pathlib import Path
import qdebug
import qdebug.analysis.trace_diff, qdebug.output.diff_render, qdebug.output.report_json
import qdebug.output.report_csv, qdebug.output.report_markdown, qdebug.output.export
from qdebug.cli import cli
t = qdebug.open({str(fixture_trace)!r})
r = qdebug.diff(t, {str(fixture_trace)!r})
qdebug.assert_no_regression(t, t)
qdebug.output.diff_render.diff_markdown(r); qdebug.output.report_csv.report_csv(t)
qdebug.output.report_markdown.report_markdown(t)
out = Path({str(tmp_path)!r})
qdebug.output.export.export_trace(t, out / "m.tflite", out / "i.npz")
for args in (["diff", t.path, t.path], ["report", t.path, "--format", "csv"]):
    try:
        cli([str(a) for a in args])
    except SystemExit:
        pass
print("HEAVY", sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"
    assert (tmp_path / "m.tflite").exists()
