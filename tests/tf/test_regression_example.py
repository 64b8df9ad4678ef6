"""examples/regression_check.py: a tiny calibration set is caught as a regression (exit 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.tf, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_calibration_set_is_a_regression_naming_the_layers(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "regression_check.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("REGRESSION  digits_cnn:") for line in lines)
    worse = [line.split(":")[0].removeprefix("  ✗ layer ") for line in lines
             if line.startswith("  ✗ layer ")]
    assert worse, out.stdout
    assert set(worse) <= {"relu1", "res_relu", "res_add", "pool", "conv2", "gap", "fc", "probs"}
    table = lines[lines.index("layers that changed most:") + 2 :]
    assert table[0].split()[0] in worse and table[0].rstrip().endswith("REGRESSED")
    assert (tmp_path / "regression_tiny.h5").exists()
