"""Everything measured is visible: per-channel clipping/saturation and weight SQNR (API, JSON,
viewer), each layer's worst samples' inputs (API, export, viewer), and user metrics given with
--metric (trace, JSON, viewer) — on the digits CNN trained in seconds, traced for real."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console
from textual.widgets import OptionList, Static

import qdebug
from cli_helpers import assert_one_line_error, run_qdebug
from qdebug.cli import cli
from qdebug.output.channels import SHOWN_CHANNELS
from qdebug.store.schema import SAMPLE_INDEX
from qdebug.tracer.data import InputSpec, load_data
from qdebug.tui.app import create_app
from qdebug.tui.screens.detail import LayerDetailScreen
from tui_traces import FIXTURE, sync

pytestmark = [pytest.mark.tf, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
N = 64


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, digits_model, digits_data) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """Two traces of the trained digits CNN, calibrated on 6 samples so that activations clip:
    ``all`` stores every sample (per-channel numbers re-computed from the activations) and
    carries a user metric whose module is deleted afterwards; ``few`` stores 2 samples."""
    d = tmp_path_factory.mktemp("diag")
    digits_model.save(d / "digits.keras")
    np.save(d / "x.npy", digits_data[:N])
    np.save(d / "calib.npy", digits_data[N : N + 6])
    shutil.copy(ROOT / "examples" / "custom_metrics.py", d / "my_metrics.py")
    runner = CliRunner()
    common = [str(d / "digits.keras"), "--data", str(d / "x.npy"), "--calib",
              str(d / "calib.npy"), "-q"]
    r = runner.invoke(cli, ["trace", *common, "--out", str(d / "all.h5"), "--store-samples",
                            str(N), "--metric", f"{d / 'my_metrics.py'}:bias_lsb"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["trace", *common, "--out", str(d / "few.h5"), "--store-samples", "2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["trace", *common, "--out", str(d / "four.h5"), "--store-samples", "4"])
    assert r.exit_code == 0, r.output
    (d / "my_metrics.py").unlink()  # later reports must not need it
    return {"dir": d, "all": d / "all.h5", "few": d / "few.h5", "four": d / "four.h5",
            "x": d / "x.npy"}


def _text(app: Any, selector: str) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(app.screen.query_one(selector, Static).content)
    return console.export_text()


async def _open(app: Any, pilot: Any, layer: int) -> None:
    await pilot.press(*["down"] * layer, "enter")
    assert isinstance(app.screen, LayerDetailScreen) and app.screen.layer_index == layer
    await app.workers.wait_for_complete()
    await pilot.pause()


# -- per-channel clipping, saturation, weight SQNR ---------------------------------------------

def test_input_pixels_at_the_calibrated_maximum_are_not_saturation(files: dict[str, Path]) -> None:
    """The digits' brightest pixels (1.0, about a tenth of them) sit exactly on the input's
    range ceiling: exact values, so 0 % saturation (they read 10 % before), in the pooled and
    per-channel numbers and the JSON report."""
    with qdebug.open(files["all"]) as tr:
        i = tr.layer_index("image")
        raw = np.stack([tr.activation(i, s).raw for s in range(N)])
        qp = tr.activation(i, 0).qp
        assert qp is not None and (raw == qp.qmax).mean() > 0.05
        assert tr.layer_metrics()["saturation"][i] == 0.0
        cs = tr.channel_stats(i)
        assert cs is not None and cs["saturated"].sum() == 0
    r = run_qdebug("report", files["all"], "--format", "json")
    assert r.returncode == 0, r.stderr
    image = next(row for row in json.loads(r.stdout)["layers"] if row["name"] == "image")
    assert image["saturation"] == 0.0


def test_channel_clipping_and_saturation_match_the_stored_activations(
    files: dict[str, Path],
) -> None:
    with qdebug.open(files["all"]) as tr:
        assert len(tr.stored_samples) == N
        pooled = tr.layer_pooled_stats()
        clipped_somewhere = False
        for i, r in tr.iter_layers():
            cs = tr.channel_stats(i)
            if not r.measured:
                assert cs is None
                continue
            assert cs is not None and "saturated" in cs
            act = [tr.activation(i, s) for s in range(N)]
            raw = np.stack([a.raw for a in act])
            fl = np.stack([a.float for a in act])
            c = raw.shape[-1]
            raw2, fl2 = raw.reshape(-1, c), fl.reshape(-1, c)
            qp = act[0].qp
            want_sat = np.zeros(c)
            want_clip = np.zeros(c)
            if qp is not None:
                half = qp.scale / 2
                # at an end that is not 0, where the float value does not round to it
                if qp.zero_point != qp.qmin:
                    want_sat += ((raw2 == qp.qmin) & (np.abs(fl2 - qp.low) > half)).sum(axis=0)
                if qp.zero_point != qp.qmax:
                    want_sat += ((raw2 == qp.qmax) & (np.abs(fl2 - qp.high) > half)).sum(axis=0)
                want_clip = ((fl2 < qp.low - half) | (fl2 > qp.high + half)).sum(axis=0)
            np.testing.assert_array_equal(cs["saturated"], want_sat, err_msg=r.name)
            np.testing.assert_array_equal(cs["clipped"], want_clip, err_msg=r.name)
            assert cs["saturated"].sum() == pooled["saturated"][i]  # the layer's own count
            np.testing.assert_allclose(cs["saturation"] * cs["count"], cs["saturated"])
            clipped_somewhere |= bool(cs["clipped"].sum() > 0)
        assert clipped_somewhere  # calibrated on 6 samples: something clips


def test_ranges_and_channel_sums_match_the_stored_activations(files: dict[str, Path]) -> None:
    """Each layer's float and int8 ranges and its per-channel Σf² and Σe² (``/analysis``) are
    those of its activations, every traced sample stored, computed here plainly: the ranges
    exactly, the sums to float32 rounding."""
    import h5py

    with qdebug.open(files["all"]) as tr, h5py.File(files["all"], "r") as h5:
        assert len(tr.stored_samples) == N
        ranges = h5["analysis/ranges"]
        checked = 0
        for i, r in tr.iter_layers():
            if not r.measured:
                continue
            act = [tr.activation(i, s) for s in range(N)]
            fl = np.stack([a.float for a in act]).astype(np.float64)
            raw = np.stack([a.raw for a in act])
            q = np.stack([a.dequantized for a in act]).astype(np.float64)
            assert ranges["float_min"][i] == fl.min() and ranges["float_max"][i] == fl.max()
            if np.issubdtype(raw.dtype, np.integer):
                assert ranges["int8_min"][i] == raw.min(), r.name
                assert ranges["int8_max"][i] == raw.max(), r.name
            ch = h5[f"analysis/channels/{i:05d}"]
            c = ch["sum_f2"].shape[0]
            f2, e = fl.reshape(-1, c), (q - fl).reshape(-1, c)
            np.testing.assert_allclose(ch["sum_f2"][()], (f2 * f2).sum(axis=0), rtol=1e-5,
                                       err_msg=r.name)
            np.testing.assert_allclose(ch["sum_e2"][()], (e * e).sum(axis=0), rtol=1e-4,
                                       atol=1e-9 * float((f2 * f2).sum()), err_msg=r.name)
            checked += 1
        assert checked >= 5


def test_report_json_lists_the_worst_channels_bounded(files: dict[str, Path]) -> None:
    out = run_qdebug("report", files["all"], "--format", "json")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    with qdebug.open(files["all"]) as tr:
        seen_clip = seen_weights = False
        for layer in rep["layers"]:
            ch = layer["channels"]
            cs = tr.channel_stats(layer["index"])
            if cs is None:
                assert ch is None or "channels" not in ch
                continue
            assert ch["channels"] == len(cs["sum_f2"])
            for key in ("lowest_sqnr", "most_clipped", "most_saturated"):
                assert len(ch[key]) <= SHOWN_CHANNELS
            order = np.argsort(cs["sqnr_db"], kind="stable")[: len(ch["lowest_sqnr"])]
            assert [e["channel"] for e in ch["lowest_sqnr"]] == order.tolist()
            if cs["clipped"].sum() > 0:
                seen_clip = True
                top = ch["most_clipped"][0]
                assert top["clipped"] == cs["clipped"].max() > 0
                hit = int((cs["clipped"] > 0).sum())
                assert len(ch["most_clipped"]) == min(SHOWN_CHANNELS, hit)
            w = tr.weight_channels(layer["index"])
            if w is not None:
                seen_weights = True
                assert ch["weight_channels"] == len(w["sqnr_db"])
                assert ch["lowest_weight_sqnr"][0]["sqnr_db"] == pytest.approx(w["sqnr_db"].min())
        assert seen_clip and seen_weights


@sync
async def test_detail_screen_shows_channel_weights_clipping_and_saturation(
    files: dict[str, Path],
) -> None:
    with qdebug.open(files["all"]) as tr:
        layer = next(i for i, _ in tr.iter_layers()
                     if (cs := tr.channel_stats(i)) is not None and cs["clipped"].sum() > 0
                     and tr.weight_channels(i) is not None)
        cs = tr.channel_stats(layer)
        assert cs is not None
        worst_clip = int(np.argmax(cs["clipped"]))
        worst_weight = int(np.argmin(tr.weight_channels(layer)["sqnr_db"]))  # type: ignore[index]
    app = create_app(files["all"])
    async with app.run_test(size=(120, 40)) as pilot:
        await _open(app, pilot, layer)
        text = _text(app, "#channel-pooled")
        assert f"most clipped: ch {worst_clip} {int(cs['clipped'][worst_clip])}" in text
        assert "per-channel weight SQNR (" in text and "not in this trace" not in text
        assert "saturated" in text
        weights = text[text.index("per-channel weight SQNR"):]
        worst_line = next(ln for ln in weights.splitlines() if "◀ worst" in ln)
        assert worst_line.startswith(f"ch {worst_weight:>4}")
        assert "not in this trace" not in _text(app, "#channels")


@sync
async def test_a_trace_without_channel_saturation_still_reads_and_shows(tmp_path: Path) -> None:
    older = tmp_path / "older.h5"  # as written before saturation per channel existed
    shutil.copy(FIXTURE, older)
    with h5py.File(older, "r+") as f:
        for g in f["analysis/channels"].values():
            del g["saturated"]
    with qdebug.open(older) as tr:
        cs = tr.channel_stats("relu1")
        assert cs is not None and "saturated" not in cs and "clip_fraction" in cs
    app = create_app(older)
    async with app.run_test(size=(120, 40)) as pilot:
        await _open(app, pilot, 3)
        text = _text(app, "#channel-pooled")
        assert "per-channel saturated: — (not in this trace)" in text
        assert "per-channel weight SQNR (16 output channels)" in text


# -- each layer's worst samples and their inputs -----------------------------------------------

def test_each_layer_keeps_its_worst_samples_and_their_inputs(files: dict[str, Path]) -> None:
    x = np.load(files["x"])
    with qdebug.open(files["few"]) as tr:
        kept = set(tr.input_samples().tolist())
        assert {0, 1} <= kept and len(kept) > 2
        measured = 0
        for i, r in tr.iter_layers():
            worst = tr.layer_worst_samples(i)
            if not r.measured:
                assert worst == []
                continue
            measured += 1
            sq = tr.layer_sample_metrics("sqnr_db", layer=i)
            order = [int(s) for s in np.argsort(sq, kind="stable") if np.isfinite(sq[s])][:4]
            assert [s for s, _ in worst] == order, r.name
            np.testing.assert_allclose([v for _, v in worst], sq[order])
            assert worst[0][0] in kept  # every layer's worst input is kept
        assert measured >= 5
        for s in kept:
            np.testing.assert_array_equal(tr.inputs(s)["image"], x[s])
        assert len(kept) <= 2 + 32


def test_export_inputs_writes_the_layers_worst_samples_too(files: dict[str, Path]) -> None:
    out = files["dir"] / "in.npz"
    res = run_qdebug("export", files["few"], "--inputs", out, "--force")
    assert res.returncode == 0, res.stderr
    with qdebug.open(files["few"]) as tr:
        samples = tr.input_samples().tolist()
        worst = {tr.layer_worst_samples(i)[0][0] for i, r in tr.iter_layers() if r.measured}
    assert f"inputs of samples {samples}" in res.stdout and worst <= set(samples)
    with np.load(out) as z:
        np.testing.assert_array_equal(z["image"], np.load(files["x"])[samples])
        # the file says which sample of the data each row is (it said nothing before)
        assert z[SAMPLE_INDEX].dtype == np.int64 and z[SAMPLE_INDEX].tolist() == samples
    # and it is data for the model as it is: the index is no input, and no warning names it
    src = load_data(out, [InputSpec("image", (8, 8, 1))])
    assert not src.warnings
    np.testing.assert_array_equal(np.stack([s[0] for s in src]), np.load(files["x"])[samples])


@sync
async def test_the_worst_sample_list_opens_a_kept_input(files: dict[str, Path]) -> None:
    with qdebug.open(files["few"]) as tr:
        layer = tr.layer_index("relu1")
        target = next(s for s, _ in tr.layer_worst_samples(layer) if s not in (0, 1))
        image = tr.inputs(target)["image"]
    app = create_app(files["few"])
    async with app.run_test(size=(120, 40)) as pilot:
        await _open(app, pilot, layer)
        worst = app.screen.query_one("#worst-samples", OptionList)
        labels = {worst.get_option_at_index(k).id: str(worst.get_option_at_index(k).prompt)
                  for k in range(worst.option_count)}
        assert labels[str(target)].endswith(" input")
        pos = list(labels).index(str(target))
        worst.focus()
        await pilot.press(*["down"] * (pos + 1), "enter")
        await pilot.pause()
        hist = _text(app, "#hist")
        assert f"sample {target}: its input" in hist and "shape (8, 8, 1)" in hist
        assert f"max {float(image.max()):.4g}" in hist
        assert app.screen.query_one("#samples", OptionList).highlighted == 0  # unchanged


@sync
async def test_the_worst_sample_list_opens_a_worst_samples_activations(
    files: dict[str, Path],
) -> None:
    """Storing 4 samples, the trace keeps each layer's activation of its worst sample too: the
    worst list marks it 'kept' and opens its activations (float vs int8 histograms at that
    sample's SQNR), not only its input (it opened the input alone)."""
    with qdebug.open(files["four"]) as tr:
        layer = tr.layer_index("relu1")
        target, sq = tr.layer_worst_samples(layer)[0]
        assert target not in tr.stored_samples.tolist() and tr.has_activation(layer, target)
        act = tr.activation(layer, target)
        e = act.dequantized.astype(np.float64) - act.float
        assert 10 * np.log10((act.float.astype(np.float64) ** 2).sum() / (e**2).sum()) == (
            pytest.approx(sq, abs=1e-4))  # the kept values are that sample's
    app = create_app(files["four"])
    async with app.run_test(size=(120, 40)) as pilot:
        await _open(app, pilot, layer)
        worst = app.screen.query_one("#worst-samples", OptionList)
        labels = {worst.get_option_at_index(k).id: str(worst.get_option_at_index(k).prompt)
                  for k in range(worst.option_count)}
        assert labels[str(target)].endswith(" kept")
        pos = list(labels).index(str(target))
        worst.focus()
        await pilot.press(*["down"] * (pos + 1), "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        hist = _text(app, "#hist")
        assert f"sample {target}  SQNR {sq:.1f} dB" in hist and "float vs int8 values" in hist
        assert "its input" not in hist


def test_slim_export_drops_the_worst_samples_activations_too(files: dict[str, Path]) -> None:
    out = files["dir"] / "four-slim.h5"
    res = run_qdebug("export", files["four"], "--slim", out, "--force")
    assert res.returncode == 0, res.stderr
    with qdebug.open(files["four"]) as a, qdebug.open(out) as b:
        layer = a.layer_index("relu1")
        target = a.layer_worst_samples(layer)[0][0]
        assert a.has_activation(layer, target) and not b.has_activation(layer, target)
        np.testing.assert_array_equal(a.inputs(target)["image"], b.inputs(target)["image"])


# -- user metrics -------------------------------------------------------------------------------

def test_a_user_metric_is_stored_and_reported_without_its_module(files: dict[str, Path]) -> None:
    assert not (files["dir"] / "my_metrics.py").exists()
    with qdebug.open(files["all"]) as tr:
        found = tr.custom_metrics()
        assert list(found) == ["bias_lsb"]
        m = found["bias_lsb"]
        assert m.unit == "LSB" and m.definition.startswith("Σ(q−f)/n / scale")
        assert m.source.endswith("my_metrics.py:bias_lsb") and not m.error
        lm = tr.layer_metrics()
        scale = np.array([r.scale for r in tr.layers])
        want = lm["mean_error"] / scale
        np.testing.assert_allclose(m.values, want, rtol=1e-9, equal_nan=True)
        assert np.isfinite(m.values).sum() >= 5
        out_m = tr.custom_metrics("outputs")["bias_lsb"].values
        assert out_m.shape == (len(tr.outputs),) and np.isfinite(out_m).all()
    res = run_qdebug("report", files["all"], "--format", "json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["custom_metrics"][0]["name"] == "bias_lsb"
    assert rep["custom_metrics"][0]["unit"] == "LSB"
    for layer in rep["layers"]:
        v = layer["custom_metrics"]["bias_lsb"]
        w = want[layer["index"]]
        assert (v is None) == (not np.isfinite(w)) and (v is None or v == pytest.approx(w))
    assert rep["output"]["outputs"][0]["custom_metrics"]["bias_lsb"] == pytest.approx(out_m[0])


@sync
async def test_the_detail_screen_shows_the_user_metric(files: dict[str, Path]) -> None:
    with qdebug.open(files["all"]) as tr:
        layer = tr.layer_index("relu1")
        v = float(tr.custom_metrics()["bias_lsb"].values[layer])
    app = create_app(files["all"])
    async with app.run_test(size=(120, 40)) as pilot:
        await _open(app, pilot, layer)
        head = _text(app, "#detail-head")
        assert f"custom bias_lsb {v:.3g} LSB" in head


def test_a_bad_metric_fails_before_tracing(files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def sqnr_db(stats, scale):\n    return stats['sum_e2']\n"
                   "def broken(stats, scale):\n    return stats['nope']\n")
    out = tmp_path / "t.h5"
    for spec, needle in ((f"{bad}:sqnr_db", "built-in metric"),
                         (f"{bad}:broken", "failed on test statistics"),
                         ("no_such_module_xyz:fn", "cannot import")):
        r = CliRunner().invoke(cli, ["trace", str(files["dir"] / "digits.keras"), "--data",
                                     str(files["x"]), "--out", str(out), "-q", "--metric", spec])
        assert_one_line_error(r.exit_code, r.stderr, needle)
        assert not out.exists()
