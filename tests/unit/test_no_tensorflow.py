"""`pip install qdebug` without the [trace] extra: the TensorFlow commands say what to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# A fresh interpreter in which TensorFlow, tf_keras and LiteRT cannot be imported.
_BLOCKED = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tf_keras", "ai_edge_litert"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Block())
from qdebug.cli import main
sys.argv = ["qdebug"] + sys.argv[1:]
main()
"""

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "command",
    [
        ["trace", "examples/digits_cnn.py:build", "--data", "{x}"],
        ["check", "examples/digits_cnn.py:build"],
        ["fix", "examples/digits_cnn.py:build", "--data", "{x}", "--target-top1", "0.9"],
        ["sensitivity", "examples/digits_cnn.py:build", "--data", "{x}"],
    ],
)
def test_tf_commands_say_install_trace_extra(command: list[str], tmp_path: Path) -> None:
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 8, 8, 1), np.float32))
    args = [a.replace("{x}", str(x)) for a in command]
    out = subprocess.run(
        [sys.executable, "-c", _BLOCKED, *args], capture_output=True, text=True, cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "needs TensorFlow" in lines[0]
    assert "pip install 'qdebug[trace]'" in lines[0]
    assert "unexpected" not in lines[0]


def test_report_works_without_tensorflow(fixture_trace: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _BLOCKED, "report", str(fixture_trace), "--format", "json"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert '"layers"' in out.stdout
