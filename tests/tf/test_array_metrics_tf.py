"""``--metric`` with a function of one sample's (float, int8) arrays and ``--output-metric`` over
the model's outputs, on the digits CNN traced for real: the trace, the CSV and the markdown
report carry values equal to an independent numpy computation — the layers' from the stored
activations (dequantized here), the outputs' from Keras and the LiteRT interpreter run here on
the trace's own INT8 model. The metrics' module is deleted before any report reads the trace."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import qdebug
from cli_helpers import run_qdebug
from qdebug.cli import cli

pytestmark = [pytest.mark.tf, pytest.mark.slow]
N = 40
METRICS = '''
import numpy as np


def p99_abs_error(f, q):
    """99th percentile of |q − f| over one sample's elements"""
    return np.percentile(np.abs(q - f), 99)


p99_abs_error.kind = "per_sample"
p99_abs_error.unit = "value"


def same_class(fo, qo):
    """1 when float and int8 pick the same class"""
    return float(np.argmax(fo[0]) == np.argmax(qo[0]))


def mean_prob_error(fo, qo):
    """mean |q − f| of the class probabilities"""
    return float(np.mean(np.abs(qo[0] - fo[0])))


def max_prob_error(fo, qo):
    """max |q − f| of the class probabilities over every sample"""
    return float(np.max(np.abs(qo[0] - fo[0])))


max_prob_error.kind = "whole_set"
'''
OUTPUT_METRICS = ("same_class", "mean_prob_error", "max_prob_error")


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, digits_model, digits_data) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("array_metrics")
    digits_model.save(d / "digits.keras")
    x = digits_data[:N]
    np.save(d / "x.npy", x)
    np.save(d / "calib.npy", digits_data[N : N + 100])
    (d / "user_metrics_mod.py").write_text(METRICS)
    spec = f"{d / 'user_metrics_mod.py'}"
    common = [
        "trace", str(d / "digits.keras"), "--data", str(d / "x.npy"), "--calib",
        str(d / "calib.npy"), "--store-samples", str(N), "--batch-size", "16", "-q",
        "--metric", f"{spec}:p99_abs_error",
        *[a for m in OUTPUT_METRICS for a in ("--output-metric", f"{spec}:{m}")],
    ]
    for out, shard in (("t.h5", []), ("s1.h5", ["--shard", "1/2"]), ("s2.h5", ["--shard", "2/2"])):
        r = CliRunner().invoke(cli, [*common, "--out", str(d / out), *shard])
        assert r.exit_code == 0, r.output
    (d / "user_metrics_mod.py").unlink()  # reports and the merge must not need it
    return {"trace": d / "t.h5", "x": x, "keras": digits_model.predict(x, verbose=0),
            "shards": [d / "s1.h5", d / "s2.h5"], "dir": d}


def _layer_expected(tr: Any) -> dict[int, float]:
    """Per layer with stored activations, the mean over samples of the 99th percentile of
    |q − f|, q dequantized here from the raw int8 values."""
    out = {}
    for i in range(len(tr.layers)):
        if not tr.has_activations(i):
            continue
        per = []
        for s in range(N):
            act = tr.activation(i, s)
            q = act.raw.astype(np.float64)
            if act.qp is not None:
                q = (q - act.qp.zero_point) * act.qp.scale
            per.append(np.percentile(np.abs(q - act.float.astype(np.float64)), 99))
        out[i] = float(np.mean(per))
    return out


def _output_expected(tflite: bytes, x: np.ndarray, keras_probs: np.ndarray) -> dict[str, float]:
    """The output metrics from Keras' probabilities and the LiteRT reference kernels' output
    on each sample (dequantized here when it is int8)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_content=tflite, num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zero = out["quantization"]
    q = []
    for sample in x:
        interp.set_tensor(inp["index"], sample[None].astype(np.float32))
        interp.invoke()
        raw = interp.get_tensor(out["index"])[0].astype(np.float64)
        q.append((raw - zero) * scale if out["dtype"] == np.int8 else raw)  # else dequantized
    qa, fa = np.array(q), keras_probs.astype(np.float64)
    return {
        "same_class": float(np.mean(np.argmax(qa, 1) == np.argmax(fa, 1))),
        "mean_prob_error": float(np.mean(np.abs(qa - fa).mean(axis=1))),
        "max_prob_error": float(np.max(np.abs(qa - fa))),
    }


def test_the_trace_holds_values_equal_to_numpy(traced: dict[str, Any]) -> None:
    with qdebug.open(traced["trace"]) as tr:
        want = _layer_expected(tr)
        m = tr.custom_metrics()["p99_abs_error"]
        assert m.kind == "per_sample" and m.unit == "value" and not m.error
        assert len(want) >= 8 and m.samples is not None
        for i, v in want.items():
            assert m.values[i] == pytest.approx(v, rel=1e-5), tr.layers[i].name
            assert m.samples[i] == N
        ops = tr.custom_metrics("ops")["p99_abs_error"].values
        same = [(k, i) for k, o in enumerate(tr.ops) for i in want
                if o.tensor_index == tr.layers[i].tensor_index]
        assert len(same) >= 6  # an op producing a layer's tensor measures the same values
        for k, i in same:
            assert ops[k] == pytest.approx(m.values[i], rel=1e-9)
        probs = tr.layer_index("probs")
        assert tr.custom_metrics("outputs")["p99_abs_error"].values[0] == pytest.approx(
            m.values[probs], rel=1e-9)
        expected = _output_expected(tr.tflite_bytes(), traced["x"], traced["keras"])
        model = tr.custom_metrics("model")
        assert [model[k].kind for k in OUTPUT_METRICS] == ["per_sample", "per_sample",
                                                           "whole_set"]
        assert model["same_class"].values[0] == expected["same_class"]
        for name in ("mean_prob_error", "max_prob_error"):
            # Keras against the trace's float twin: ~1e-7, a thousandth of the int8 error
            assert model[name].values[0] == pytest.approx(expected[name], rel=1e-3)
        assert 0 < expected["mean_prob_error"] < expected["max_prob_error"]


def test_csv_and_markdown_show_both_kinds(traced: dict[str, Any]) -> None:
    with qdebug.open(traced["trace"]) as tr:
        want = _layer_expected(tr)
        names = [r.name for r in tr.layers]
        expected = _output_expected(tr.tflite_bytes(), traced["x"], traced["keras"])
    res = run_qdebug("report", traced["trace"], "--format", "csv")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["layer"] for r in rows] == names
    for i, row in enumerate(rows):
        if i in want:
            assert float(row["p99_abs_error"]) == pytest.approx(want[i], rel=1e-5)
        assert float(row["same_class"]) == expected["same_class"]
        assert float(row["max_prob_error"]) == pytest.approx(expected["max_prob_error"],
                                                             rel=1e-3)
    res = run_qdebug("report", traced["trace"], "--format", "markdown")
    assert res.returncode == 0, res.stderr
    text = res.stdout
    section = text.split("### Custom metrics", 1)[1].split("###", 1)[0]
    assert f"| `same_class` | per_sample | {expected['same_class']:.3g} |" in section
    assert f"| `max_prob_error` | whole_set | {expected['max_prob_error']:.3g} |" in section
    assert "| `p99_abs_error` | per_sample | per layer (table below) | value |" in section
    table = text.split("### Per-layer", 1)[1].splitlines()
    header = next(line for line in table if line.startswith("| #"))
    col = [c.strip() for c in header.split("|")].index("p99_abs_error")
    for i, v in want.items():
        line = next(t for t in table if f"| `{names[i]}` |" in t)
        assert [c.strip() for c in line.split("|")][col] == f"{v:.3g}"
    rep = json.loads(run_qdebug("report", traced["trace"], "--format", "json").stdout)
    got = {m["name"]: m for m in rep["output_metrics"]}
    assert got["same_class"]["samples"] == N and got["same_class"]["value"] == expected[
        "same_class"]


def test_shards_merge_into_the_whole_runs_means(traced: dict[str, Any]) -> None:
    """Per-sample means merge weighted by samples, which is the whole run's mean; a whole-set
    metric needs its function, so the merge keeps it as NaN with each shard's value."""
    merged = traced["dir"] / "merged.h5"
    res = run_qdebug("merge", *traced["shards"], "--out", merged, "-q")
    assert res.returncode == 0, res.stderr
    with qdebug.open(traced["trace"]) as whole, qdebug.open(merged) as m:
        sizes = []
        for path in traced["shards"]:
            with qdebug.open(path) as s:
                sizes.append(s.n_samples)
                assert s.custom_metrics("model")["same_class"].samples[0] == s.n_samples  # type: ignore[index]
        assert sum(sizes) == N and 0 < sizes[0] < N
        for part in ("layers", "ops", "outputs"):
            a, b = whole.custom_metrics(part)["p99_abs_error"], m.custom_metrics(part)[
                "p99_abs_error"]
            np.testing.assert_allclose(b.values, a.values, rtol=1e-12, equal_nan=True)
            np.testing.assert_array_equal(b.samples, a.samples)
        for name in ("same_class", "mean_prob_error"):
            assert m.custom_metrics("model")[name].values[0] == pytest.approx(
                whole.custom_metrics("model")[name].values[0], rel=1e-12)
        kept = m.custom_metrics("model")["max_prob_error"]
        assert np.isnan(kept.values[0]) and "the shards' values:" in kept.error


def test_a_model_without_keras_layers_gets_them_on_its_ops(traced: dict[str, Any],
                                                           digits_model) -> None:  # type: ignore[no-untyped-def]
    """A float/INT8 .tflite pair is traced op by op (its layer table is the measured ops): each
    tensor is measured once, the rows equal the ops, and both equal the Keras trace's ops."""
    import tensorflow as tf

    d = traced["dir"]
    (d / "float.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_keras_model(digits_model).convert())
    with qdebug.open(traced["trace"]) as keras_trace:
        (d / "int8.tflite").write_bytes(keras_trace.tflite_bytes())
        want = keras_trace.custom_metrics("ops")["p99_abs_error"].values
        same = keras_trace.custom_metrics("model")["same_class"].values[0]
    (d / "m.py").write_text(METRICS)
    r = CliRunner().invoke(cli, [
        "trace", str(d / "float.tflite"), "--tflite", str(d / "int8.tflite"), "--data",
        str(d / "x.npy"), "--out", str(d / "pair.h5"), "--batch-size", "16", "-q",
        "--metric", f"{d / 'm.py'}:p99_abs_error", "--output-metric", f"{d / 'm.py'}:same_class",
    ])
    assert r.exit_code == 0, r.output
    with qdebug.open(d / "pair.h5") as tr:
        assert tr.view == "ops"
        ops = tr.custom_metrics("ops")["p99_abs_error"]
        rows = tr.custom_metrics()["p99_abs_error"]
        by_name = {o.name: k for k, o in enumerate(tr.ops)}
        for i, layer in enumerate(tr.layers):
            assert rows.values[i] == ops.values[by_name[layer.name]]
        assert np.isfinite(ops.values).sum() >= 8
        np.testing.assert_allclose(ops.values, want, rtol=1e-4, equal_nan=True)
        assert tr.custom_metrics("model")["same_class"].values[0] == same
