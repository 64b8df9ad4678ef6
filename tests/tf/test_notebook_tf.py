"""Notebooks and pictures: DataFrames with the JSON report's columns, Jupyter's HTML view, and
`qdebug plot` / `report --chart`."""
from __future__ import annotations

from pathlib import Path

import pytest

import qdebug
from qdebug.output.report_json import report_dict


@pytest.mark.tf
def test_ops_dataframe_columns_equal_the_json_reports(tmp_path: Path, digits_model,  # type: ignore[no-untyped-def]
                                                      digits_data) -> None:
    pytest.importorskip("pandas", reason="pandas is not installed")
    out = qdebug.trace(digits_model, digits_data[:32], out=tmp_path / "t.h5", quiet=True,
                       calib_samples=32)
    with qdebug.open(out) as tr:
        df = tr.ops_dataframe()
        ops = report_dict(tr)["ops"]
    assert ops and list(df.columns) == list(ops[0]) and len(df) == len(ops)

