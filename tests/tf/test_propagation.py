"""The error decomposition on real models: accumulated = local + propagated, agreement with
TFLite's QuantizationDebugger, weights, and the story on a deep residual network."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import models
import qdebug
from qdebug.analysis.culprits import COARSE_SCORE, is_healthy
from qdebug.store.reader import Trace

pytestmark = [pytest.mark.tf, pytest.mark.slow]


def _trace(model: Any, n: int, out: Path, **kw: Any) -> Trace:
    xs = models.random_inputs(model, n, seed=3)
    data: Any = xs[0] if len(xs) == 1 else [list(s) for s in zip(*xs, strict=True)]
    return qdebug.open(str(qdebug.trace(model, data, out=out, quiet=True, **kw)))


@pytest.mark.parametrize("build", [models.two_in_two_out, models.attention_block, models.nested])
def test_accumulated_is_local_plus_propagated(build: Any, tmp_path: Path) -> None:
    tr = _trace(build(), 20, tmp_path / "t.h5", store_samples=4)
    check = tr._f["analysis/segment_check"][()]
    per = tr.layer_sample_stats()
    checked = []
    for i, r in enumerate(tr.layers):
        if r.status != "matched":
            continue
        # A layer of several ops is re-run in Keras: on float inputs the re-run reproduces the
        # float model, so f(x̂) − f(x) is the error the layer passed on and (q − f) = local +
        # propagated. A layer of one op takes f(x̂) from the converter's numeric-verify model.
        assert len(r.ops) == 1 or check[i] <= 1e-5, (r.name, check[i])
        for s in tr.stored_samples:
            a = tr.activation(i, int(s))
            assert a.local_ref is not None, r.name
            q, f, fh = a.dequantized.astype(np.float64), a.float.astype(np.float64), a.local_ref
            acc, local, prop = q - f, q - fh, fh - f
            np.testing.assert_allclose(local + prop, acc, atol=1e-6 * max(1.0, np.abs(f).max()))
            assert per["sum_local_e2"][s, i] == pytest.approx((local**2).sum(), rel=1e-4, abs=1e-12)
        checked.append(r.class_name)
    multi_input = {"Add", "Concatenate", "MultiHeadAttention"}
    if build is not models.nested:
        assert multi_input & set(checked), checked
    assert len(checked) >= 4


def test_gain_is_ratio_of_propagated_to_incoming_error(tmp_path: Path) -> None:
    tr = _trace(models.two_in_two_out(), 20, tmp_path / "t.h5")
    lm = tr.layer_metrics()
    g = tr._f["metrics/layers/pooled"]
    i = [r.name for r in tr.layers].index("add")
    assert lm["gain"][i] == pytest.approx(
        np.sqrt(g["stat_sum_prop_e2"][i] / g["stat_sum_in_e2"][i])
    )
    # Add sums its inputs: its gain is near 1 (correlated input errors can push it either way).
    assert 0.5 < lm["gain"][i] < 1.5
    assert np.isnan(lm["gain"][0])  # an input has no incoming error


def test_local_error_agrees_with_quantization_debugger(tmp_path: Path) -> None:
    import tensorflow as tf
    from scipy.stats import spearmanr

    model = models.mobilenet_v2_keras3()
    x = models.random_inputs(model, 12, seed=5)[0]
    tr = qdebug.open(str(qdebug.trace(model, x, out=tmp_path / "t.h5", quiet=True,
                                      calib_samples=12)))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i : i + 1]] for i in range(12))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    dbg = tf.lite.experimental.QuantizationDebugger(
        converter=conv, debug_dataset=lambda: ([x[i : i + 1]] for i in range(12))
    )
    dbg.run()
    buf = io.StringIO()
    dbg.layer_statistics_dump(buf)
    buf.seek(0)
    # The debugger converts through a SavedModel, qdebug through the frozen graph (same ops):
    # fused names there carry an empty component (";;") that ours do not.
    theirs = {re.sub(";+", ";", row["tensor_name"]): float(row["mean_squared_error"])
              for row in csv.DictReader(buf)}
    lm = tr.layer_metrics()
    pairs = [(i, theirs[r.tensor_name]) for i, r in enumerate(tr.layers)
             if r.status == "matched" and r.tensor_name in theirs]
    assert len(pairs) >= 60
    ours = [lm["local_mse"][i] for i, _ in pairs]
    rho = spearmanr(ours, [t for _, t in pairs]).statistic
    assert rho >= 0.9
    first_op_layer = next(i for i, r in enumerate(tr.layers) if r.status == "matched")
    for i, t in pairs:
        if not 0.5 < lm["local_mse"][i] / t < 2.0:
            # The debugger feeds the model's first op the float input instead of the quantized
            # one, so what it reports there is our accumulated error, not the local one.
            assert i == first_op_layer, tr.layers[i].name
            assert lm["mse"][i] == pytest.approx(t, rel=0.05)


def test_weight_sqnr_matches_an_independent_computation(tmp_path: Path, digits_model) -> None:  # type: ignore[no-untyped-def]
    from ai_edge_litert.interpreter import Interpreter

    tr = _trace(digits_model, 8, tmp_path / "t.h5")
    i = [r.name for r in tr.layers].index("conv2")  # a conv without BatchNorm to fold
    w_sqnr = tr.layer_metrics()["weight_sqnr_db"][i]
    kernel = digits_model.get_layer("conv2").get_weights()[0]  # HWIO
    interp = Interpreter(model_content=tr.tflite_bytes())
    interp.allocate_tensors()
    detail = next(d for d in interp.get_tensor_details()
              if d["name"].endswith("conv2_1/convolution") and d["dtype"] == np.int8)
    q = interp.get_tensor(detail["index"]).astype(np.float64)  # OHWI
    s = detail["quantization_parameters"]["scales"]
    deq = np.transpose(q * s[:, None, None, None], (1, 2, 3, 0))
    expected = 10 * np.log10((kernel.astype(np.float64) ** 2).sum() / ((deq - kernel) ** 2).sum())
    assert w_sqnr == pytest.approx(expected, abs=0.01)
    ch = tr.weight_channels("conv2")
    assert ch is not None and ch["sqnr_db"].shape == (32,)


def test_deep_residual_story(tmp_path: Path) -> None:
    """Calibrated on eight images of zeros and ones, one layer clips and the rest inherit."""
    import deep_residual as dr

    model = dr.build(epochs=4, blocks=8)
    x = dr.data()[:300]
    tiny = qdebug.open(str(qdebug.trace(model, x, calib=dr.calib_tiny(), out=tmp_path / "a.h5",
                                        quiet=True)))
    good = qdebug.open(str(qdebug.trace(model, x, calib=dr.data()[:300],
                                        out=tmp_path / "b.h5", quiet=True)))
    assert tiny.output_metrics()["sqnr_db"][0] < good.output_metrics()["sqnr_db"][0] - 3
    culprits = tiny.culprits()
    clipping = [c for c in culprits if c.kind == "clipping"]
    assert len(clipping) >= 2 and all("calibrated range" in c.reason for c in clipping)
    assert not [c for c in good.culprits() if c.kind == "clipping"]
    # Well calibrated (27 dB, not healthy), the culprits name what is worth acting on: no
    # layer whose error is rounding noise explaining a small share of the output's (b7_conv2
    # and eight more were listed as "rounding noise 0.29 LSB — healthy")
    assert good.culprits() and not is_healthy(float(good.output_metrics()["sqnr_db"][0]))
    assert not [c for c in good.culprits() if "healthy" in c.reason]
    assert all(c.score >= COARSE_SCORE for c in good.culprits() if c.kind == "rounding")
    lm = tiny.layer_metrics()
    assert all(lm["clip_share"][c.index] >= 0.3 for c in clipping)
    # Scores are shares of the output's error born at each layer: together they account for
    # most of it.
    assert sum(c.score for c in culprits) >= 0.5
    # Downstream of the first layer that clips, some layers only inherit: almost none of their
    # error is their own.
    first = min(i for i, r in enumerate(tiny.layers)
                if r.status == "matched" and lm["clip_share"][i] >= 0.3)
    after = [i for i, r in enumerate(tiny.layers) if i > first and r.status == "matched"]
    assert min(lm["local_share"][after]) < 0.1
