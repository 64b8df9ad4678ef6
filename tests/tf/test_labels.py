"""Task accuracy against labels: the trace's float and int8 accuracy equal an independent
computation (plain Keras, plain LiteRT), every report shows them, diff gates on them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qdebug
from qdebug.analysis.accuracy import accuracy, sample_order
from qdebug.output.report_json import report_json

pytestmark = [pytest.mark.tf, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained():  # type: ignore[no-untyped-def]
    """The digits CNN trained for the example's full 8 epochs (the session's is barely trained)."""
    import digits_cnn

    return digits_cnn.build(epochs=8, seed=0)


@pytest.fixture(scope="module")
def labelled(trained, digits_data, tmp_path_factory):  # type: ignore[no-untyped-def]
    import digits_cnn

    x, y = digits_data[-200:], digits_cnn.labels()[-200:]
    out = tmp_path_factory.mktemp("labels") / "digits_labels.h5"
    qdebug.trace(trained, x, labels=y, out=out, quiet=True, calib_samples=100)
    return out, x, y


def _litert_predictions(tflite: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=tflite)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    preds = []
    for sample in x:
        v = sample[None].astype(np.float32)
        if inp["dtype"] == np.int8:
            s, z = inp["quantization"]
            v = np.clip(np.round(v / s + z), -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], v)
        interp.invoke()
        preds.append(int(np.argmax(interp.get_tensor(out["index"])[0])))
    return np.array(preds)


def test_accuracy_equals_plain_keras_and_litert(labelled, trained) -> None:  # type: ignore[no-untyped-def]
    path, x, y = labelled
    keras_pred = np.argmax(trained.predict(x, verbose=0), axis=1)
    with qdebug.open(path) as tr:
        lite_pred = _litert_predictions(tr.tflite_bytes(), x)
        acc = accuracy(tr)
        rep = json.loads(report_json(tr))
    assert acc is not None
    assert acc.float_accuracy == pytest.approx(float(np.mean(keras_pred == y)), abs=1e-12)
    assert acc.int8_accuracy == pytest.approx(float(np.mean(lite_pred == y)), abs=1e-12)
    assert 0.5 < acc.float_accuracy <= 1.0
    r2w = np.nonzero((keras_pred == y) & (lite_pred != y))[0].tolist()
    w2r = np.nonzero((keras_pred != y) & (lite_pred == y))[0].tolist()
    out = rep["output"]
    assert out["float_accuracy"] == acc.float_accuracy
    assert out["int8_accuracy"] == acc.int8_accuracy
    assert out["flipped"] == {"right_to_wrong": r2w, "wrong_to_right": w2r}


def test_every_report_format_and_the_header_show_accuracy(labelled) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console

    from qdebug.output.report_csv import ACCURACY_COLUMNS, report_csv
    from qdebug.output.report_markdown import report_markdown
    from qdebug.output.summary import print_summary
    from qdebug.tui.widgets.header_panel import header_text

    path, _, _ = labelled
    with qdebug.open(path) as tr:
        acc = accuracy(tr)
        assert acc is not None
        pct = f"{acc.int8_accuracy * 100:.1f}%"
        console = Console(record=True, width=200)
        print_summary(tr, console)
        assert f"int8 {pct}" in console.export_text()
        assert "accuracy" in report_markdown(tr) and pct in report_markdown(tr)
        header = report_csv(tr).splitlines()[0].split(",")
        assert header[-len(ACCURACY_COLUMNS):] == list(ACCURACY_COLUMNS)
        assert pct in header_text(tr).plain


def test_worst_samples_sort_by_flipped() -> None:
    from qdebug.analysis.accuracy import Accuracy

    acc = Accuracy("probs", "t", np.array([0, 1, 2, 3]), np.array([0, 1, 0, 3]),
                   np.array([1, 1, 2, 3]))
    sq = np.array([30.0, 5.0, 40.0, 10.0])
    assert sample_order(sq, acc, "sqnr").tolist() == [1, 3, 0, 2]
    assert sample_order(sq, acc, "flipped").tolist() == [0, 2, 1, 3]


def test_labels_from_xy_pairs(digits_model, digits_data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import digits_cnn

    x, y = digits_data[:40], digits_cnn.labels()[:40]
    pairs = [(x[i], y[i]) for i in range(len(x))]
    out = qdebug.trace(digits_model, pairs, labels="data", out=tmp_path / "p.h5", quiet=True,
                       calib_samples=40)
    with qdebug.open(out) as tr:
        got = tr.labels()
    assert got is not None and got["label"].tolist() == y.tolist()


def test_trace_without_labels_has_none(fixture_trace: Path) -> None:
    from qdebug.output.report_json import report_dict

    with qdebug.open(fixture_trace) as tr:
        assert accuracy(tr) is None
        out = report_dict(tr)["output"]
    assert out["float_accuracy"] is None and out["flipped"] is None


def _qdebug(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qdebug", *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def calibrations(tmp_path_factory):  # type: ignore[no-untyped-def]
    """examples/tiny_calibration.py's trained CNN traced on all 1,797 digits with their labels,
    once per calibration set (the real command line): ``good`` (200 digits of every class),
    ``faint`` (its eight images of zeros and ones at 60 % of their brightness)."""
    sys.path.insert(0, str(ROOT / "examples"))
    import digits_cnn
    import tiny_calibration

    where = tmp_path_factory.mktemp("calibrations")
    tiny_calibration.build_trained().save(where / "trained.keras")
    np.save(where / "x.npy", digits_cnn.data())
    np.save(where / "y.npy", digits_cnn.labels())
    np.save(where / "good.npy", tiny_calibration.calib_representative())
    np.save(where / "faint.npy", tiny_calibration.calib_faint())
    traces = {}
    for name in ("good", "faint"):
        done = _qdebug("trace", where / "trained.keras", "--data", where / "x.npy", "--calib",
                       where / f"{name}.npy", "--labels", where / "y.npy", "--out",
                       where / f"{name}.h5", "--quiet", "--store-samples", "0")
        assert done.returncode == 0, done.stderr
        traces[name] = where / f"{name}.h5"
    return traces


def test_diff_max_accuracy_drop_exits_1_on_tiny_calibration(calibrations) -> None:  # type: ignore[no-untyped-def]
    """The faint calibration set costs the trained CNN several points of INT8 accuracy: a 1
    point tolerance exits 1, naming the accuracy; the good calibration against itself exits 0,
    and a tolerance above the measured drop exits 0."""
    good, faint = calibrations["good"], calibrations["faint"]
    with qdebug.open(good) as g, qdebug.open(faint) as f:
        acc_good, acc_faint = accuracy(g), accuracy(f)
    assert acc_good is not None and acc_faint is not None
    assert acc_faint.float_accuracy == acc_good.float_accuracy  # the float model is the same
    drop = acc_good.int8_accuracy - acc_faint.int8_accuracy
    assert drop > 0.02, f"the faint calibration cost only {drop:.3%} of INT8 accuracy"
    assert len(acc_faint.right_to_wrong) > len(acc_good.right_to_wrong)
    # Only the accuracy gate decides: every other threshold is opened wide.
    wide = ["--max-output-drop", "1000", "--max-layer-drop", "1000", "--max-top1-drop", "1"]
    res = _qdebug("diff", good, faint, *wide, "--max-accuracy-drop", "0.01", "--format", "json")
    assert res.returncode == 1, res.stdout + res.stderr
    body = json.loads(res.stdout)
    assert [r for r in body["reasons"] if r.startswith("int8 accuracy")] == body["reasons"]
    assert -body["int8_accuracy"]["delta"] == pytest.approx(drop, abs=1e-12)
    assert body["float_accuracy"]["delta"] == 0
    res = _qdebug("diff", good, good, "--max-accuracy-drop", "0.01", "--format", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["int8_accuracy"]["delta"] == 0
    res = _qdebug("diff", good, faint, *wide, "--max-accuracy-drop", f"{drop + 0.001:.4f}")
    assert res.returncode == 0, res.stdout
    res = _qdebug("diff", good, faint, "--max-accuracy-drop", "0.01")  # the default tolerance
    assert res.returncode == 1 and "int8 accuracy" in res.stdout, res.stdout


def _worst_ids(app: Any) -> list[int]:
    from textual.widgets import OptionList

    worst = app.screen.query_one("#worst-samples", OptionList)
    return [int(worst.get_option_at_index(k).id) for k in range(worst.option_count)]


def _footer_keys(app: Any) -> dict[str, str]:
    """What the footer offers: key → description of the binding that key would run."""
    return {k: b.binding.description for k, b in app.screen.active_bindings.items()}


def test_viewer_sorts_worst_samples_flipped_first(calibrations) -> None:  # type: ignore[no-untyped-def]
    """`qdebug view` on the faint-calibration trace: in a layer's detail, `f` lists the samples
    whose answer quantization flipped first (right→wrong, then wrong→right, each by that layer's
    SQNR), marked; `f` again goes back to SQNR; the order holds for the next layer opened."""
    from qdebug.tui.app import create_app
    from qdebug.tui.screens.detail import WORST_SAMPLES, LayerDetailScreen
    from qdebug.tui.screens.main import MainScreen
    from tui_traces import sync

    faint = calibrations["faint"]
    with qdebug.open(faint) as tr:
        acc = accuracy(tr)
        assert acc is not None and len(acc.right_to_wrong) >= 2
        layer = tr.layer_index("probs")
        sq = np.asarray(tr.layer_sample_metrics("sqnr_db", layer), dtype=np.float64)
        pool = tr.layer_index("pool")
        sq_pool = np.asarray(tr.layer_sample_metrics("sqnr_db", pool), dtype=np.float64)
    r2w, w2r = set(acc.right_to_wrong.tolist()), set(acc.wrong_to_right.tolist())

    def by_sqnr(values: np.ndarray, among: Any) -> list[int]:
        return sorted(among, key=lambda s: (np.inf if np.isnan(values[s]) else values[s], s))

    def flipped_first(values: np.ndarray) -> list[int]:
        rest = set(range(len(values))) - r2w - w2r
        return by_sqnr(values, r2w) + by_sqnr(values, w2r) + by_sqnr(values, rest)

    @sync
    async def run() -> None:
        from textual.widgets import OptionList

        app = create_app(faint)
        async with app.run_test(size=(120, 40)) as pilot:
            main = app.screen
            assert isinstance(main, MainScreen)
            main.jump_to(layer)
            await pilot.press("enter")
            assert isinstance(app.screen, LayerDetailScreen)
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert _worst_ids(app) == by_sqnr(sq, range(len(sq)))[:WORST_SAMPLES]
            assert _footer_keys(app)["f"] == "Flipped first"
            worst = app.screen.query_one("#worst-samples", OptionList)
            assert worst.border_subtitle == f"flipped {len(r2w)} r→w {len(w2r)} w→r"

            await pilot.press("f")
            await pilot.pause()
            ids = _worst_ids(app)
            assert ids == flipped_first(sq)[:WORST_SAMPLES]
            assert set(ids[:min(len(r2w), WORST_SAMPLES)]) <= r2w
            for k, s in enumerate(ids):
                prompt = str(worst.get_option_at_index(k).prompt)
                mark = "right→wrong" if s in r2w else "wrong→right" if s in w2r else None
                assert (mark in prompt) if mark else "→" not in prompt, (s, prompt)
            assert worst.border_title == "worst: flipped first"
            assert _footer_keys(app)["f"] == "Worst by SQNR"

            # The order holds for the next layer opened, by that layer's own SQNR.
            await pilot.press("escape")
            app.screen.jump_to(pool)  # type: ignore[attr-defined]
            await pilot.press("enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert _worst_ids(app) == flipped_first(sq_pool)[:WORST_SAMPLES]

            await pilot.press("f")
            await pilot.pause()
            assert _worst_ids(app) == by_sqnr(sq_pool, range(len(sq_pool)))[:WORST_SAMPLES]
            assert app.screen.query_one("#worst-samples", OptionList).border_title == \
                "worst samples"
            assert _footer_keys(app)["f"] == "Flipped first"

    run()


def test_viewer_without_labels_offers_no_flipped_order(fixture_trace: Path) -> None:
    """A trace without labels: no `f` in the footer, and pressing it changes nothing."""
    from qdebug.tui.app import create_app
    from qdebug.tui.screens.detail import LayerDetailScreen
    from tui_traces import sync

    @sync
    async def run() -> None:
        app = create_app(fixture_trace)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("down", "down", "down", "enter")
            assert isinstance(app.screen, LayerDetailScreen)
            await app.workers.wait_for_complete()
            await pilot.pause()
            before = _worst_ids(app)
            assert len(before) == 8 and "f" not in _footer_keys(app)
            await pilot.press("f")
            await pilot.pause()
            assert _worst_ids(app) == before and app.screen.sort_by == "sqnr"

    run()
