"""Task accuracy against labels: the trace's float and int8 accuracy equal an independent
computation (plain Keras, plain LiteRT), every report shows them, diff gates on them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qdebug
from qdebug.analysis.accuracy import accuracy, sample_order
from qdebug.output.report_json import report_json

pytestmark = [pytest.mark.tf, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


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


def test_diff_max_accuracy_drop_exits_1_on_tiny_calibration(tmp_path: Path) -> None:
    """examples/tiny_calibration.py on all 1797 digits: the tiny calibration set costs the
    trained CNN accuracy (little: measured 1 sample), so a zero tolerance exits 1 and a
    tolerance above the measured drop exits 0."""
    sys.path.insert(0, str(ROOT / "examples"))
    import digits_cnn
    import tiny_calibration

    np.save(tmp_path / "x.npy", digits_cnn.data())
    np.save(tmp_path / "y.npy", digits_cnn.labels())
    np.save(tmp_path / "tiny.npy", tiny_calibration.calib_tiny())
    np.save(tmp_path / "good.npy", tiny_calibration.calib_representative())
    model = f"{ROOT / 'examples' / 'tiny_calibration.py'}:build_trained"
    for name in ("good", "tiny"):
        done = _qdebug("trace", model, "--data", tmp_path / "x.npy", "--calib",
                       tmp_path / f"{name}.npy", "--labels", tmp_path / "y.npy", "--out",
                       tmp_path / f"{name}.h5", "--quiet", "--store-samples", "0")
        assert done.returncode == 0, done.stderr
    # Only the accuracy gate: every other threshold is opened wide.
    wide = ["--max-output-drop", "1000", "--max-layer-drop", "1000", "--max-top1-drop", "1"]
    res = _qdebug("diff", tmp_path / "good.h5", tmp_path / "tiny.h5", *wide,
                  "--max-accuracy-drop", "0", "--format", "json")
    assert res.returncode == 1, res.stdout + res.stderr
    body = json.loads(res.stdout)
    assert [r for r in body["reasons"] if r.startswith("int8 accuracy")], body["reasons"]
    drop = -body["int8_accuracy"]["delta"]
    assert drop > 0
    assert body["float_accuracy"]["delta"] == 0  # the float model is the same
    res = _qdebug("diff", tmp_path / "good.h5", tmp_path / "tiny.h5", *wide,
                  "--max-accuracy-drop", f"{drop + 0.001:.4f}")
    assert res.returncode == 0, res.stdout
    res = _qdebug("diff", tmp_path / "good.h5", tmp_path / "tiny.h5", "--max-accuracy-drop", "0")
    assert "int8 accuracy" in res.stdout
