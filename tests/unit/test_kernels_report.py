"""--xnnpack in the reports and the viewer: the deployment kernels' numbers beside the reference
kernels', from a copy of the fixture trace given the attributes a --xnnpack trace writes."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

import qdebug
from cli_helpers import run_qdebug
from qdebug.analysis.kernels import kernels_comparison
from qdebug.tui.widgets.header_panel import header_text
from tui_traces import copy_trace

KERNEL_OUTPUT = {"sqnr_db": 37.25, "top1_agreement": 0.9921875, "max_abs_diff": 0.0234375,
                 "max_abs_diff_lsb": 6.0, "sum_f2": 1.0, "sum_e2": 1e-4, "agreeing": 254}


def _xnnpack_trace(dest: Path, *, outputs: list[dict] | None = None) -> Path:
    copy_trace(dest)
    with h5py.File(dest, "r+") as f:
        f.attrs["kernel_mismatched_samples"] = 17
        f.attrs["kernel_max_abs_diff"] = 0.0234375
        f.attrs["kernel_samples"] = 256
        f.attrs["delegated_ops"] = json.dumps([0, 1, 2, 3])
        f.attrs["kernel_outputs"] = json.dumps([KERNEL_OUTPUT] if outputs is None else outputs)
    return dest


def _joined(text: str) -> str:
    """The summary as one line (it wraps at the terminal's width)."""
    return " ".join(text.split())


def test_the_comparison_puts_the_reference_kernels_numbers_beside_xnnpacks(tmp_path: Path) -> None:
    with qdebug.open(_xnnpack_trace(tmp_path / "x.h5")) as tr:
        k = kernels_comparison(tr)
        ref = tr.output_metrics()
        assert k is not None and (k.delegated_ops, k.ops, k.samples) == (4, 11, 256)
        (out,) = k.outputs
        assert out.name == "probs" and out.deployment_sqnr_db == 37.25
        assert out.reference_sqnr_db == pytest.approx(float(ref["sqnr_db"][0]))
        assert out.deployment_top1 == 0.9921875 and out.max_diff_lsb == 6.0
        assert k.mismatched_samples == 17
    with qdebug.open(copy_trace(tmp_path / "plain.h5")) as tr:
        assert kernels_comparison(tr) is None  # not traced with --xnnpack


def test_text_json_and_markdown_reports_show_both_kernels(tmp_path: Path) -> None:
    path = _xnnpack_trace(tmp_path / "x.h5")
    with qdebug.open(path) as tr:
        ref_db = f"{float(tr.output_metrics()['sqnr_db'][0]):.1f} dB"
    text = _joined(run_qdebug("report", path).stdout)
    assert ("kernels: XNNPACK took 4 of 11 ops; its outputs differ from the reference kernels' "
            "on 17 of 256 sample(s)") in text
    assert (f"output probs: XNNPACK SQNR 37.2 dB, reference {ref_db}; top-1 agreement XNNPACK "
            "99.2%, reference 100.0%; they differ by at most 6.00 LSB") in text
    data = json.loads(run_qdebug("report", path, "--format", "json").stdout)
    (out,) = data["deployment_kernels"]["outputs"]
    assert out["sqnr_db"] == 37.25 and out["max_abs_diff_lsb"] == 6.0
    assert out["reference_sqnr_db"] == pytest.approx(float(ref_db.split()[0]), abs=0.05)
    assert data["deployment_kernels"]["accuracy"] is None  # the fixture has no labels
    md = run_qdebug("report", path, "--format", "markdown").stdout.splitlines()
    start = md.index("### Deployment kernels (XNNPACK)")
    assert md[start + 4] == ("| output | SQNR XNNPACK (dB) | SQNR reference (dB) | top-1 XNNPACK "
                             "| top-1 reference | max difference (LSB) |")
    assert md[start + 6] == f"| `probs` | 37.2 | {ref_db[:-3]} | 99.2% | 100.0% | 6.00 |"


def test_an_output_without_an_integer_grid_gives_its_difference_in_output_units(
    tmp_path: Path,
) -> None:
    path = _xnnpack_trace(tmp_path / "x.h5", outputs=[
        {**KERNEL_OUTPUT, "max_abs_diff_lsb": None, "top1_agreement": None, "sqnr_db": "inf"}])
    text = _joined(run_qdebug("report", path).stdout)
    assert "XNNPACK SQNR ∞, reference" in text and "they differ by at most 0.0234" in text
    assert "top-1 agreement XNNPACK" not in text


def test_the_viewer_header_shows_xnnpacks_numbers(tmp_path: Path) -> None:
    with qdebug.open(_xnnpack_trace(tmp_path / "x.h5")) as tr:
        header = header_text(tr).plain
    last = header.splitlines()[-1]
    assert last.startswith("XNNPACK (deployment kernels) took 4/11 ops, outputs differ on 17/256")
    assert "probs SQNR 37.2 dB (reference " in last and "top-1 99.2% (reference 100.0%)" in last
    with qdebug.open(copy_trace(tmp_path / "plain.h5")) as tr:
        assert "XNNPACK" not in header_text(tr).plain


def test_shards_kernel_numbers_pool_into_the_merged_runs() -> None:
    """qdebug merge: the sums add up, the largest differences are kept, accuracy is weighted by
    samples (copying the first shard's numbers gave its SQNR as the run's)."""
    from qdebug.analysis.kernels import merged_kernel_attrs
    from qdebug.metrics import sqnr_from_sums
    from qdebug.store.meta import TraceMeta

    def shard(n: int, f2: float, e2: float, agreeing: int, lsb: float, acc: float) -> TraceMeta:
        return TraceMeta.from_attrs({
            "n_samples": n, "kernel_samples": n, "kernel_mismatched_samples": n // 4,
            "kernel_max_abs_diff": lsb / 256, "kernel_accuracy": acc,
            "kernel_outputs": [{"sqnr_db": 0.0, "top1_agreement": agreeing / n,
                                "max_abs_diff": lsb / 256, "max_abs_diff_lsb": lsb,
                                "sum_f2": f2, "sum_e2": e2, "agreeing": agreeing}]})

    merged = merged_kernel_attrs([shard(100, 50.0, 0.01, 99, 3.0, 0.97),
                                  shard(300, 120.0, 0.05, 300, 8.0, 0.99)])
    (out,) = merged["kernel_outputs"]
    assert out["sqnr_db"] == pytest.approx(float(sqnr_from_sums(170.0, 0.06)))
    assert out["top1_agreement"] == pytest.approx(399 / 400)
    assert out["max_abs_diff_lsb"] == 8.0 and merged["kernel_max_abs_diff"] == 8.0 / 256
    assert merged["kernel_samples"] == 400 and merged["kernel_mismatched_samples"] == 25 + 75
    assert merged["kernel_accuracy"] == pytest.approx((97 + 297) / 400)
    merged_meta = TraceMeta.from_attrs({**merged, "kernel_outputs": json.loads(
        json.dumps(merged["kernel_outputs"]))})
    assert merged_meta.kernel_outputs[0].sqnr_db == pytest.approx(out["sqnr_db"])
    assert merged_kernel_attrs([TraceMeta.from_attrs({"n_samples": 4})]) == {}  # no --xnnpack
