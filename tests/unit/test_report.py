"""qdebug report: markdown for an issue, CSV in TFLite QuantizationDebugger's layout, JSON."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import qdebug
from cli_helpers import report_csv, run_qdebug
from qdebug.output import report_markdown as md_module
from qdebug.output.report_csv import TFLITE_COLUMNS
from qdebug.output.report_markdown import report_markdown
from synthetic_traces import make_trace


def _text(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def test_markdown_structure(fixture_trace: Path) -> None:
    out = run_qdebug("report", fixture_trace, "--format", "markdown")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    headings = [line for line in lines if line.startswith("#")]
    assert headings == [
        "## qdebug report: `digits_cnn`",
        "### Environment",
        "### Model and conversion",
        "### Output",
        "### Float islands",
        "### Worst layers (accumulated SQNR)",
        "### Per-layer",
        "### The attached trace",
    ]
    assert "**output SQNR 40.2 dB, top-1 agreement 100.0%** over 256 samples, 13 layers." in lines
    assert "| tensorflow | 2.21.0 |" in lines
    assert any(line.startswith("- converter: calib_samples=64, int8_io=False") for line in lines)
    assert "| `probs` | 40.2 | 0.75 | 0.99995 | 0.8% | 100.0% |" in lines
    table = lines.index("<details><summary>13 layers</summary>") + 2
    assert lines[table] == ("| # | layer | class | op | precision | status | SQNR (dB) | "
                            "RMSE (LSB) | saturation | local SQNR (dB) | gain |")
    assert lines[table + 1] == "|---|" * 1 + "---|" * 10
    assert lines[table + 3] == ("| 1 | `conv1` | Conv2D | — | — | fused → `relu1` | — | — | — | "
                                "— | — |")
    assert lines[table + 2 + 13] == "" and lines[table + 3 + 13] == "</details>"
    # the fixture's model is healthy: no culprits, and the report says why
    worst = lines.index("### Worst layers (accumulated SQNR)")
    assert lines[worst + 2].startswith("Healthy: every output at 30 dB SQNR or more")
    with qdebug.open(str(fixture_trace)) as tr:
        assert tr.culprits() == []
        lowest = tr.layers[min(range(len(tr.layers)),
                               key=lambda i: tr.layer_metrics()["sqnr_db"][i])].name
    assert lines[worst + 6].startswith(f"| `{lowest}` |")
    assert "qdebug export digits.h5 --tflite model_int8.tflite --inputs inputs.npz" in lines


def test_markdown_shows_culprits_and_analysis_columns_when_the_trace_has_them(
    fixture_trace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = md_module.report_dict

    def with_analysis(trace: qdebug.store.Trace) -> dict[str, Any]:
        rep = real(trace)
        rep["culprits"] = [
            {"layer": "res_add", "kind": "amplifies", "reason": "amplifies incoming error 3.1×"},
            {"layer": "conv2", "reason": "clipping: 4% outside | range"},
        ]
        for i, layer in enumerate(rep["layers"]):
            layer["local_sqnr_db"], layer["gain"] = 50.0 - i, None
        return rep

    monkeypatch.setattr(md_module, "report_dict", with_analysis)
    with qdebug.open(fixture_trace) as tr:
        lines = report_markdown(tr).splitlines()
    start = lines.index("### Culprits")
    assert lines[start + 2 : start + 6] == [
        "| layer | kind | reason |",
        "|---|---|---|",
        "| `res_add` | amplifies | amplifies incoming error 3.1× |",
        "| `conv2` |  | clipping: 4% outside \\| range |",
    ]
    assert not any(line.startswith("### Worst layers") for line in lines)
    header = next(line for line in lines if line.startswith("| # | layer |"))
    assert header.endswith("| saturation | local SQNR (dB) | gain |")
    assert ("| 0 | `image` | InputLayer | QUANTIZE | int8 | input | 57.0 | 0.18 | 0.0% | 50.0 | — |"
            in lines)


def test_csv_has_tflite_columns_first_and_numbers_from_the_file(fixture_trace: Path) -> None:
    df = report_csv(fixture_trace)
    assert tuple(df.columns[:10]) == TFLITE_COLUMNS
    assert list(df.columns[10:16]) == ["layer", "class_name", "status", "related", "dtype",
                                       "float_island"]
    with h5py.File(fixture_trace) as f:
        names = _text(f["layers/name"][()])
        per = {s: f[f"metrics/layers/per_sample/{s}"][()] for s in
               ("count", "sum_e", "sum_e2", "max_abs_e")}
        n_samples = int(f.attrs["n_samples"])
        scale, zp = f["layers/scale"][()], f["layers/zero_point"][()]
        idx, op = f["layers/tensor_index"][()], _text(f["layers/op_type"][()])
        sqnr = f["metrics/layers/pooled/sqnr_db"][()]
    assert list(df["layer"]) == names
    n = per["count"].sum(axis=0)
    mean = per["sum_e"].sum(axis=0) / n
    mse = per["sum_e2"].sum(axis=0) / n
    np.testing.assert_allclose(df["num_elements"], n / n_samples)
    np.testing.assert_allclose(df["mean_error"], mean, rtol=1e-12)
    np.testing.assert_allclose(df["mean_squared_error"], mse, rtol=1e-12)
    np.testing.assert_allclose(df["stddev"], np.sqrt(mse - mean**2), rtol=1e-9)
    np.testing.assert_allclose(df["max_abs_error"], per["max_abs_e"].max(axis=0))
    np.testing.assert_allclose(df["scale"], scale)
    np.testing.assert_array_equal(df["zero_point"], zp)
    np.testing.assert_array_equal(df["tensor_idx"], idx)
    np.testing.assert_allclose(df["sqnr_db"], sqnr)
    assert list(df["op_name"].fillna("")) == op
    fused = df[df["status"] == "fused"]
    assert len(fused) == 3 and fused["mean_squared_error"].isna().all()
    assert df.loc[df["layer"] == "relu1", "num_elements"].item() == 8 * 8 * 16


def test_csv_stddev_is_the_std_of_every_error_element(tmp_path: Path) -> None:
    """With every sample stored, the CSV's stddev equals np.std of q − f over all of them."""
    path = make_trace(tmp_path / "all.h5", samples=6, store=6, noise_lsb={3: 2.0})
    df = report_csv(path)
    with h5py.File(path) as f:
        for i in (0, 3, 5):
            g = f[f"activations/{i:05d}"]
            scale, zp = f["layers/scale"][i], f["layers/zero_point"][i]
            q = (g["int8"][()].astype(np.float64) - zp) * np.float32(scale)
            e = q.astype(np.float32).astype(np.float64) - g["float"][()]
            assert df["stddev"][i] == pytest.approx(np.std(e), rel=1e-6)
            assert df["mean_error"][i] == pytest.approx(np.mean(e), rel=1e-6, abs=1e-12)
            assert df["num_elements"][i] == g["float"].shape[1]


def test_json_keeps_existing_fields_and_adds_run_info(fixture_trace: Path) -> None:
    out = run_qdebug("report", fixture_trace, "--format", "json")
    data = json.loads(out.stdout)
    for key in ("schema_version", "trace", "model", "versions", "samples", "stored_samples",
                "output", "float_islands", "instrumentation", "warnings", "layers"):
        assert key in data
    assert data["run"]["command_line"] == "tests/fixtures/make_fixtures.py"
    relu1 = data["layers"][3]
    assert relu1["name"] == "relu1" and relu1["tensor_index"] == 13
    assert relu1["clip_share"] == pytest.approx(0.0015412320830831988)


@pytest.mark.parametrize("fmt", ["text", "markdown", "json", "csv"])
def test_report_of_a_missing_trace_is_one_line_exit_2(fmt: str, tmp_path: Path) -> None:
    out = run_qdebug("report", tmp_path / "nope.h5", "--format", fmt)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("qdebug: error: ") and out.stderr.count("\n") == 1

