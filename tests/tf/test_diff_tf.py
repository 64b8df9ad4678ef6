"""Tracing is deterministic: the same model and data traced twice diff to exactly zero."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qdebug
from cli_helpers import run_qdebug

pytestmark = pytest.mark.tf


def test_tracing_twice_gives_identical_metrics_and_a_clean_diff(
    digits_model: Any, digits_data: np.ndarray, tmp_path: Path
) -> None:
    x = digits_data
    paths = [
        qdebug.trace(digits_model, x[:96], calib=x[200:232], out=tmp_path / f"run{i}.h5",
                     quiet=True, store_samples=2)
        for i in (1, 2)
    ]
    with qdebug.open(paths[0]) as a, qdebug.open(paths[1]) as b:
        ma, mb = a.layer_metrics(), b.layer_metrics()
        assert ma.keys() == mb.keys()
        for k in ma:
            np.testing.assert_array_equal(ma[k], mb[k], err_msg=k)
        np.testing.assert_array_equal(a.top1_match(), b.top1_match())
        sa, sb = a.layer_sample_stats(), b.layer_sample_stats()  # per sample, bit for bit
        assert sa.keys() == sb.keys() and sa
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
        np.testing.assert_array_equal(a.output_sample_metrics("sqnr_db"),
                                      b.output_sample_metrics("sqnr_db"))
        assert a.tflite_bytes() == b.tflite_bytes()
    result = qdebug.diff(*paths)
    assert result.verdict == "ok" and result.most_changed == ()
    assert all(d.sqnr_db.delta == 0.0 for d in result.layers if d.status[0] == "matched")
    out = run_qdebug("diff", *paths)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no layer's SQNR changed" in out.stdout
