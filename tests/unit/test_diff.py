"""qdebug diff: verdicts, exit codes, layer alignment, and that only summary tables are read."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli_helpers import run_qdebug
from qdebug.analysis.trace_diff import Change, Thresholds, diff_paths
from qdebug.errors import TraceFileError
from qdebug.output.diff_render import diff_dict, diff_markdown
from qdebug.store.reader import Trace
from synthetic_traces import make_trace


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """BASE and NEW of one model; NEW adds error at layers l4 and l5 only."""
    base = make_trace(tmp_path / "base.h5")
    new = make_trace(tmp_path / "new.h5", noise_lsb={4: 3.0, 5: 2.0})
    return base, new


def test_same_trace_twice_gives_zero_deltas_and_exit_0(fixture_trace: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.h5"
    shutil.copy(fixture_trace, copy)
    r = diff_paths(fixture_trace, copy)
    assert r.verdict == "ok" and not r.reasons and r.most_changed == ()
    assert not (r.added or r.removed or r.rematched)
    measured = [d for d in r.layers if d.status[0] in ("matched", "input")]
    assert len(measured) == 9
    assert all(d.sqnr_db.delta == 0.0 and d.saturation.delta == 0.0 for d in measured)
    assert all(math.isnan(d.sqnr_db.delta) for d in r.layers if d not in measured)
    assert r.outputs[0].sqnr_db.delta == 0.0 and r.outputs[0].top1_agreement.delta == 0.0
    out = run_qdebug("diff", fixture_trace, copy)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK  digits_cnn")


def test_regression_exits_1_and_names_the_worse_layers(pair: tuple[Path, Path]) -> None:
    out = run_qdebug("diff", *pair)
    assert out.returncode == 1, out.stderr
    assert out.stdout.startswith("REGRESSION")
    assert "layer l4: SQNR" in out.stdout and "layer l5: SQNR" in out.stdout
    reasons = [line for line in out.stdout.splitlines() if line.startswith("  ✗")]
    assert len(reasons) == 2
    data = json.loads(run_qdebug("diff", *pair, "--format", "json").stdout)
    assert data["verdict"] == "regression"
    assert data["most_changed"][:2] == ["l4", "l5"]
    assert [d["name"] for d in data["layers"] if d["regressed"]] == ["l4", "l5"]
    l4 = next(d for d in data["layers"] if d["name"] == "l4")
    assert l4["sqnr_db"]["delta"] == pytest.approx(l4["sqnr_db"]["new"] - l4["sqnr_db"]["base"])
    assert l4["sqnr_db"]["delta"] < -10


def test_thresholds_decide_the_verdict(pair: tuple[Path, Path]) -> None:
    r = diff_paths(*pair)
    worst = -r.layer("l4").sqnr_db.delta
    assert run_qdebug("diff", *pair, "--max-layer-drop", f"{worst + 0.1}").returncode == 0
    assert run_qdebug("diff", *pair, "--max-layer-drop", f"{worst - 0.1}").returncode == 1
    lenient = diff_paths(*pair, Thresholds(max_layer_drop_db=worst + 0.1))
    assert lenient.verdict == "ok" and lenient.regressed_layers == ()
    with pytest.raises(ValueError, match="max_top1_drop"):
        Thresholds(max_top1_drop=-0.1)


def test_output_and_top1_regressions(tmp_path: Path) -> None:
    base = make_trace(tmp_path / "a.h5", samples=200)
    new = make_trace(tmp_path / "b.h5", samples=200, noise_lsb={7: 25.0})
    r = diff_paths(base, new, Thresholds(max_layer_drop_db=100))
    o = r.outputs[0]
    assert o.regressed and o.sqnr_db.drop > 1 and o.top1_agreement.drop > 0.01
    assert any(s.startswith("output l7: SQNR") for s in r.reasons)
    assert any(s.startswith("output l7: top-1 agreement") for s in r.reasons)


def test_added_removed_and_rematched_layers(tmp_path: Path) -> None:
    base = make_trace(tmp_path / "a.h5", names=["x", "a", "b", "c", "d", "e", "f", "out"])
    new = make_trace(tmp_path / "b.h5", names=["x", "a", "b", "c", "d", "e", "g", "out"],
                     statuses={3: "fused"})
    r = diff_paths(base, new)
    assert r.added == ("g",) and r.removed == ("f",) and r.rematched == ("c",)
    c = r.layer("c")
    assert c.status == ("matched", "fused") and math.isnan(c.sqnr_db.delta) and not c.regressed
    text = run_qdebug("diff", base, new).stdout
    assert "added (only in NEW): g" in text and "removed (only in BASE): f" in text
    assert "re-matched (status or tensor changed): c" in text


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"input_name": "image"}, "inputs"),
        ({"names": ["x", *(f"other{i}" for i in range(7))]}, "layer names in common"),
        ({"model_name": "resnet", "names": ["x", "a", "b", "c", "d", "e", "g", "out"]}, "model"),
    ],
)
def test_traces_of_different_models_exit_2(tmp_path: Path, kwargs: dict, why: str) -> None:
    base = make_trace(tmp_path / "a.h5", names=["x", "a", "b", "c", "d", "e", "f", "out"])
    other = make_trace(tmp_path / "b.h5", **kwargs)
    out = run_qdebug("diff", base, other)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "traces of different models" in out.stderr and why in out.stderr
    with pytest.raises(TraceFileError):
        diff_paths(base, other)


def test_new_weights_or_a_renamed_model_are_the_same_model(tmp_path: Path) -> None:
    base = make_trace(tmp_path / "a.h5")
    new = make_trace(tmp_path / "b.h5", sha256="def", model_name="chain_v2", samples=40)
    r = diff_paths(base, new)
    assert "the model files differ (model_sha256: another file, format or weights)" in r.notes
    assert "model renamed 'chain' → 'chain_v2'" in r.notes
    assert "sample counts differ: 32 vs 40" in r.notes


def _corrupt(tmp_path: Path, fixture: Path) -> dict[str, Path]:
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"this is not hdf5" * 100)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(fixture.read_bytes()[:5000])
    future = tmp_path / "future.h5"
    shutil.copy(fixture, future)
    with h5py.File(future, "a") as f:
        f.attrs["schema_version"] = "9.0"
    return {"missing": tmp_path / "nope.h5", "garbage": garbage, "truncated": truncated,
            "schema": future}


@pytest.mark.parametrize("case", ["missing", "garbage", "truncated", "schema"])
def test_bad_traces_exit_2_with_one_line(case: str, tmp_path: Path, fixture_trace: Path) -> None:
    bad = _corrupt(tmp_path, fixture_trace)[case]
    for args in ((fixture_trace, bad), (bad, fixture_trace)):
        out = run_qdebug("diff", *args)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith("qdebug: error: ") and out.stderr.count("\n") == 1
        assert "Traceback" not in out.stderr and str(bad.name) in out.stderr
    if case == "schema":
        assert "schema 9.0" in out.stderr


def _with_analysis(monkeypatch: pytest.MonkeyPatch, which: set[str]) -> None:
    """Make ``Trace.layer_metrics`` return the propagation analysis' metrics for the traces
    whose file name is in ``which`` (as the analysis adds them to /metrics/layers/pooled)."""
    original = Trace.layer_metrics

    def layer_metrics(self: Trace) -> dict[str, np.ndarray]:
        out = original(self)
        if self.path.name in which:
            n = len(self.layers)
            seed = 1 if self.path.name == "b.h5" else 0
            out["local_sqnr_db"] = out["sqnr_db"] + 3.0 + seed
            out["gain"] = np.linspace(0.5, 1.5, n) * (1 + seed)
        return out

    monkeypatch.setattr(Trace, "layer_metrics", layer_metrics)


def test_local_sqnr_and_gain_are_compared_when_both_traces_have_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, new = make_trace(tmp_path / "a.h5"), make_trace(tmp_path / "b.h5")
    _with_analysis(monkeypatch, {"a.h5", "b.h5"})
    r = diff_paths(base, new)
    l2 = r.layer("l2")
    assert l2.local_sqnr_db is not None and l2.gain is not None
    assert l2.local_sqnr_db.delta == pytest.approx(l2.sqnr_db.delta + 1.0)
    assert l2.gain.base == pytest.approx(0.5 + 2 / 7)
    assert l2.gain.delta == pytest.approx(l2.gain.base)
    assert diff_dict(r)["layers"][2]["gain"]["delta"] == pytest.approx(l2.gain.delta)


def test_missing_analysis_gives_no_fake_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, new = make_trace(tmp_path / "a.h5"), make_trace(tmp_path / "b.h5")
    assert all(d.local_sqnr_db is None and d.gain is None for d in diff_paths(base, new).layers)
    _with_analysis(monkeypatch, {"a.h5"})
    r = diff_paths(base, new)
    assert all(d.local_sqnr_db is None and d.gain is None for d in r.layers)
    assert any("only BASE has the propagation analysis" in n for n in r.notes)
    data = diff_dict(r)
    assert all(d["local_sqnr_db"] is None and d["gain"] is None for d in data["layers"])


def test_change_handles_infinity_and_missing_values() -> None:
    inf = math.inf
    assert Change(inf, inf).delta == 0.0
    assert Change(inf, 40.0).drop == inf
    assert math.isnan(Change(math.nan, 3.0).delta)
    assert Change(30.0, 27.5).drop == 2.5


def test_markdown_diff_structure(pair: tuple[Path, Path]) -> None:
    md = diff_markdown(diff_paths(*pair))
    lines = md.splitlines()
    assert lines[0] == "### qdebug diff: ❌ regression"
    assert "#### Layers that changed most" in lines
    header = lines.index("#### Layers that changed most") + 2
    assert lines[header].startswith("| layer | class | SQNR base | SQNR new | Δ dB |")
    assert lines[header + 1].startswith("|---|")
    assert lines[header + 2].startswith("| `l4` | Dense |")


@pytest.fixture()
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of every HDF5 dataset whose data is read."""
    seen: list[str] = []
    ds = h5py.Dataset
    getitem, array, read_direct = ds.__getitem__, ds.__array__, ds.read_direct

    def record(fn):  # type: ignore[no-untyped-def]
        def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(self.name)
            return fn(self, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(h5py.Dataset, "__getitem__", record(getitem))
    monkeypatch.setattr(h5py.Dataset, "__array__", record(array))
    monkeypatch.setattr(h5py.Dataset, "read_direct", record(read_direct))
    yield seen


def test_diff_reads_only_summary_tables(tmp_path: Path, reads: list[str]) -> None:
    base = make_trace(tmp_path / "a.h5", layers=300, samples=300, width=4, store=2)
    new = make_trace(tmp_path / "b.h5", layers=300, samples=300, width=4, store=2,
                     noise_lsb={200: 4.0})
    with h5py.File(base) as f:
        assert len(f["activations"]) == 300
        assert f["metrics/layers/per_sample/sum_e2"].shape == (300, 300)
    reads.clear()
    r = diff_paths(base, new)
    assert [d.name for d in r.regressed_layers] == ["l200"] and len(r.layers) == 300
    assert reads, "the read hook saw nothing"
    allowed = ("/layers/", "/outputs/", "/metrics/layers/pooled/", "/metrics/outputs/pooled/",
               "/metrics/outputs/top1_match", "/samples/index")
    assert [n for n in reads if not n.startswith(allowed)] == []
    assert not any("per_sample" in n or n.startswith(("/activations", "/samples/inputs"))
                   for n in reads)


def test_analysis_metrics_that_are_all_nan_count_as_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, new = make_trace(tmp_path / "a.h5"), make_trace(tmp_path / "b.h5")
    original = Trace.layer_metrics

    def layer_metrics(self: Trace) -> dict[str, np.ndarray]:
        out = original(self)
        out["local_sqnr_db"] = np.full(len(self.layers), np.nan)
        out["gain"] = np.full(len(self.layers), np.nan)
        return out

    monkeypatch.setattr(Trace, "layer_metrics", layer_metrics)
    r = diff_paths(base, new)
    assert all(d.local_sqnr_db is None and d.gain is None for d in r.layers)
    assert not any("propagation analysis" in n for n in r.notes)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_threshold_that_is_not_a_number_is_a_usage_error(
    pair: tuple[Path, Path], value: str
) -> None:
    out = run_qdebug("diff", *pair, "--max-output-drop", value)
    assert out.returncode == 2 and out.stdout == ""
    assert "is not a finite number" in out.stderr and "--max-output-drop" in out.stderr
    assert "Traceback" not in out.stderr and "unexpected" not in out.stderr
