"""What a new user's pass on the real-model corpus found, each on a small real Keras model of
the same shape: a layer called twice (chars2vec's siamese pair), a model of several outputs
(BlazeFace's regressors + classificators), a gain where no error comes in, top-1 agreement on
outputs that are not class scores."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import qdebug
from qdebug.cli import cli
from qdebug.store.reader import Trace

pytestmark = [pytest.mark.tf, pytest.mark.slow]


def _siamese() -> Any:
    """A shared sub-model embedding two inputs (a siamese pair, as chars2vec's), their
    difference, and a shared Dense head applied to two tensors."""
    a, b = keras.Input((12,), name="a"), keras.Input((12,), name="b")
    i = keras.Input((12,))
    h = keras.layers.Dense(16, activation="tanh", name="d1")(i)
    h = keras.layers.Dense(8, name="d2")(h)
    emb = keras.Model(i, keras.layers.Dense(8, activation="tanh", name="d3")(h), name="emb")
    d = keras.layers.Subtract(name="diff")([emb(a), emb(b)])
    head = keras.layers.Dense(4, name="head")
    sq = keras.layers.Multiply(name="sq")([d, d])
    return keras.Model([a, b], keras.layers.Concatenate(name="cat")([head(d), head(sq)]))


def test_each_call_of_a_shared_layer_has_its_own_row_and_ops(tmp_path: Path) -> None:
    """The second call of a shared sub-model (and of a shared Dense) is a row of its own,
    owning that call's ops, and its consumer is re-run on the right call's values: diff owns
    its SUB alone, and its local SQNR is the SUB op's own (before: diff owned the second call's
    ops and its re-run got the first call's value for both operands)."""
    rng = np.random.default_rng(0)
    # one-hot inputs, as chars2vec's characters: quantized exactly, no error comes in
    xa = np.eye(12, dtype=np.float32)[rng.integers(0, 12, 48)]
    xb = np.eye(12, dtype=np.float32)[rng.integers(0, 12, 48)]
    path = qdebug.trace(_siamese(), [[p, q] for p, q in zip(xa, xb, strict=True)],
                        out=tmp_path / "t.h5", quiet=True)
    with qdebug.open(str(path)) as tr:
        rows = {r.name: r for r in tr.layers}
        lm, om = tr.layer_metrics(), tr.op_metrics()
        at = {r.name: i for i, r in enumerate(tr.layers)}
        for call, first in (("emb#2", "emb/d3"), ("head#2", "head")):
            assert rows[call].status == "matched" and rows[call].ops, call
            assert not set(rows[call].ops) & set(rows[first].ops)
        assert [tr.ops[j].op_type for j in rows["emb#2"].ops].count("FULLY_CONNECTED") == 3
        assert rows["diff"].inbound == ["emb", "emb#2"]
        assert [tr.ops[j].op_type for j in rows["diff"].ops] == ["SUB"]
        for name in ("diff", "head#2"):
            (op,) = rows[name].ops
            assert lm["local_sqnr_db"][at[name]] == pytest.approx(om["local_sqnr_db"][op],
                                                                  abs=0.01)
        owned = [j for r in tr.layers for j in r.ops]
        assert len(owned) == len(set(owned))  # no op has two layers
        # the first Dense after an exactly quantized input: nothing to amplify, not measured
        assert math.isinf(lm["sqnr_db"][at["a"]])
        assert math.isnan(lm["gain"][at["emb/d1"]])
        assert not np.isinf(lm["gain"]).any()


def _two_heads() -> Any:
    """A box regression head and a softmax class head on one trunk."""
    x = keras.Input((16,), name="x")
    h = keras.layers.Dense(32, activation="relu", name="trunk")(x)
    box = keras.layers.Dense(4, name="box")(h)
    emb = keras.layers.Dense(6, activation="tanh", name="emb")(h)
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    return keras.Model(x, [box, emb, cls])


def _traced_two_heads(tmp_path: Path) -> Trace:
    rng = np.random.default_rng(1)
    np.save(tmp_path / "x.npy", rng.normal(size=(64, 16)).astype(np.float32))
    # calibrated on two faint samples: every range clips, no output is healthy
    np.save(tmp_path / "calib.npy", 0.05 * rng.normal(size=(2, 16)).astype(np.float32))
    _two_heads().save(tmp_path / "m.keras")
    r = CliRunner().invoke(cli, ["trace", str(tmp_path / "m.keras"), "--data",
                                 str(tmp_path / "x.npy"), "--calib", str(tmp_path / "calib.npy"),
                                 "--out", str(tmp_path / "t.h5"), "-q"])
    assert r.exit_code == 0, r.output
    return qdebug.open(str(tmp_path / "t.h5"))


def test_every_output_gets_its_own_culprits_and_top1_only_for_class_scores(
    tmp_path: Path,
) -> None:
    """Each output that is not healthy is scored on its own, and the summary says which
    output a culprit is about (before: only the first output had culprits). Top-1 agreement
    is given for the softmax head only, not for the box regression nor the embedding."""
    with _traced_two_heads(tmp_path) as tr:
        om = tr.output_metrics()
        names = [o.name for o in tr.outputs]
        assert names == ["box", "emb", "cls"]
        assert [o.classifier for o in tr.outputs] == [False, False, True]
        assert math.isnan(om["top1_agreement"][0]) and math.isnan(om["top1_agreement"][1])
        assert 0 <= om["top1_agreement"][2] <= 1
        culprits = tr.culprits()
        about = {c.output for c in culprits}
        assert about == set(names), [(c.output, c.layer) for c in culprits]
        heads = {"box", "emb", "cls"}
        for c in culprits:  # a head is a culprit of its own output only
            assert c.layer not in heads - {c.output}, (c.output, c.layer)
        path = tr.path
    said = CliRunner().invoke(cli, ["report", str(path)]).stdout
    for name in names:
        assert f"culprits of output {name} (share of its error" in said
    md = CliRunner().invoke(cli, ["report", str(path), "--format", "markdown"]).stdout
    assert "| output | layer | kind | reason |" in md


def _traced_pair(model: Any, data: np.ndarray, tmp_path: Path, float_ops: bool = False) -> Trace:
    """``model`` as a float .tflite + the converter's INT8 .tflite (ops it cannot quantize
    left in float with ``float_ops``), traced as a pair: the op view."""
    import tensorflow as tf

    np.save(tmp_path / "x.npy", data)
    (tmp_path / "float.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_keras_model(model).convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([s[None]] for s in data)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + (
        [tf.lite.OpsSet.TFLITE_BUILTINS] if float_ops else [])
    (tmp_path / "int8.tflite").write_bytes(conv.convert())
    r = CliRunner().invoke(cli, ["trace", str(tmp_path / "float.tflite"), "--tflite",
                                 str(tmp_path / "int8.tflite"), "--data",
                                 str(tmp_path / "x.npy"), "--out", str(tmp_path / "t.h5"), "-q"])
    assert r.exit_code == 0, r.output
    return qdebug.open(str(tmp_path / "t.h5"))


def test_an_op_after_a_requantize_keeps_its_inputs_in_the_op_view(tmp_path: Path) -> None:
    """A CONCATENATION of inputs at different scales is fed by requantizing QUANTIZE ops that
    have no float tensor (BlazeFace's heads): the op rows look through them, so the ops
    before it reach the output (before: the CONCATENATION had no inputs, and its output,
    BlazeFace's classificators, no culprit), and its gain is unmeasured, never +∞."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    L = keras.layers
    x = keras.Input((16,))
    h = L.Dense(12)(x)
    a, b, c = L.Lambda(lambda t: tf.split(t, 3, axis=-1))(h)
    model = keras.Model(x, L.Concatenate()([L.Dense(4)(a) * 3.0, b, L.Activation("tanh")(c)]))
    data = np.random.default_rng(0).uniform(-1, 1, (32, 16)).astype(np.float32)
    with _traced_pair(model, data, tmp_path) as tr:
        (cat,) = [i for i, o in enumerate(tr.layers) if o.op_type == "CONCATENATION"]
        ops = {o.name: o for o in tr.ops}
        requantized = [j for j in tr.ops[tr.layers[cat].ops[0]].inputs
                       if tr.ops[j].op_type == "QUANTIZE" and not tr.ops[j].measured]
        assert requantized  # the shape of the problem: a QUANTIZE with no float tensor
        assert len(tr.layers[cat].inbound) == 3
        assert all(ops[n].measured for n in tr.layers[cat].inbound)
        assert not np.isinf(tr.layer_metrics()["gain"]).any()


def test_unequal_sample_counts_in_an_npz_name_the_arrays(tmp_path: Path) -> None:
    """chars2vec's pair with word_b cut to 10 samples: the line names each array and its
    count, and the fix (it said 'arrays have different sample counts [10, 32]')."""
    _siamese().save(tmp_path / "m.keras")
    x = np.zeros((32, 12), np.float32)
    np.savez(tmp_path / "pair.npz", a=x, b=x[:10])
    r = CliRunner().invoke(cli, ["trace", str(tmp_path / "m.keras"), "--data",
                                 str(tmp_path / "pair.npz"), "--out", str(tmp_path / "t.h5")])
    assert r.exit_code == 2, r.output
    line = r.stderr.strip().splitlines()[-1]
    assert "'a' 32, 'b' 10" in line and "a[:10]" in line, line


class _LogPower(keras.layers.Layer):
    """A spectrum-like front end in one layer, as basic-pitch's CQT + NormalizedLog: a
    projection, its power (a SQUARE left in float, requantized after), a log, normalised."""

    def build(self, shape: Any) -> None:
        self.w = self.add_weight(shape=(shape[-1], 24), initializer="glorot_uniform")

    def call(self, x: Any) -> Any:
        k = keras.ops
        p = k.square(k.matmul(x, self.w))
        lg = k.log(p + 1e-4)
        return (lg - k.mean(lg, axis=-1, keepdims=True)) * k.sqrt(p + 1e-4) / 4.0


def test_a_layer_of_many_ops_whose_ops_do_not_explain_it_stays_a_culprit(
    tmp_path: Path,
) -> None:
    """The layer's own error (its float re-run on the quantized inputs) explains almost all of
    the output's, but no op of it does (the error is born in a float op and the QUANTIZE after
    it, which have no local error of their own): the layer stays a culprit, named as the
    layer and saying so (before: it was replaced by its ops, and the only culprit left was
    one MUL at 0.03, as basic-pitch's CQT vanished behind re_lu_1 at 0.01)."""
    x = keras.Input((32,), name="x")
    h = keras.layers.Dense(16, activation="relu", name="d1")(_LogPower(name="front")(x))
    model = keras.Model(x, keras.layers.Dense(4, name="out")(h))
    data = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)
    with qdebug.open(str(qdebug.trace(model, data, out=tmp_path / "t.h5", quiet=True,
                                      store_samples=0))) as tr:
        assert any(o.op_type == "SQUARE" and o.dtype == "float32" for o in tr.ops)
        first = tr.culprits()[0]
        assert first.layer == "d1" and first.score > 0.5  # front is fused into d1's CONV
        assert "no op's own error explains it" in first.reason
        assert len([i for i in tr.layers[first.index].ops if tr.ops[i].measured]) > 3


def test_a_dynamic_range_model_is_described_once_and_has_no_saturation(tmp_path: Path) -> None:
    """fer's published dynamic-range .tflite, in small: the deployed model's sentence once in
    the summary (it was printed again as a warning), and no saturation for float activations,
    which have no int8 rails (they read 0.0%), as they have no LSB."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(64, 3, activation="relu", name="conv")(x)  # weights the
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)  # converter quantizes: ≥ 1024
    h = keras.layers.Dense(64, activation="relu", name="fc")(h)
    model = keras.Model(x, keras.layers.Dense(5, activation="softmax", name="probs")(h))
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 3))
            .astype(np.float32))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: dynamic range
    (tmp_path / "dr.tflite").write_bytes(conv.convert())
    r = CliRunner().invoke(cli, ["trace", str(tmp_path / "m.keras"), "--data",
                                 str(tmp_path / "x.npy"), "--tflite", str(tmp_path / "dr.tflite"),
                                 "--out", str(tmp_path / "t.h5")])
    assert r.exit_code == 0, r.output
    said = CliRunner().invoke(cli, ["report", str(tmp_path / "t.h5")]).stdout
    assert said.count("dynamic range (int8 weights") == 1, said
    table = said.split("worst layers", 1)[1].split("every layer:", 1)[0]
    rows = [ln for ln in table.splitlines()[2:] if ln.strip()]
    assert rows and all(ln.rstrip().endswith("—") for ln in rows), table


def test_diff_reads_exact_ops_as_exact(tmp_path: Path) -> None:
    """fer against itself with a layer kept in float: a max-pool is exact in both traces (its
    local SQNR is float32's noise over an exact value, ~140 dB, never the same twice), so its
    local Δ is 0, not ±100 dB; a layer that becomes exact (kept in float) reads +∞."""
    import json

    keras.utils.set_random_seed(0)
    L = keras.layers
    x = keras.Input((12, 12, 3), name="image")
    h = L.Conv2D(8, 3, padding="same", name="conv")(x)
    h = L.ReLU(name="relu")(L.BatchNormalization(name="bn")(h))
    h = L.MaxPooling2D(name="pool")(h)
    h = L.Conv2D(8, 3, activation="relu", name="conv2")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    keras.Model(x, L.Dense(4, activation="softmax", name="probs")(h)).save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).uniform(0, 1, (24, 12, 12, 3))
            .astype(np.float32))
    for name, extra in (("a", []), ("b", ["--keep-float", "conv2"])):
        r = CliRunner().invoke(cli, ["trace", str(tmp_path / "m.keras"), "--data",
                                     str(tmp_path / "x.npy"), "--out", str(tmp_path / f"{name}.h5"),
                                     "-q", *extra])
        assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["diff", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"),
                                 "--format", "json"])
    rows = {row["name"]: row for row in json.loads(r.stdout)["layers"]}
    assert rows["pool"]["local_sqnr_db"] == {"base": "inf", "new": "inf", "delta": 0.0}
    assert rows["conv2"]["local_sqnr_db"]["new"] == "inf"
    assert rows["conv2"]["local_sqnr_db"]["delta"] == "inf"


def test_an_op_left_in_float_keeps_its_inputs_in_the_op_view(tmp_path: Path) -> None:
    """An op the converter leaves in float (a SQUARE) reads the int8 op before it through a
    DEQUANTIZE with no float tensor, and the int8 op after it reads it through a QUANTIZE: the
    op rows look through both, so the float op's error is not all counted as its own (with
    the QUANTIZE alone looked through, basic-pitch's float EXPAND_DIMS after its log became
    the first culprit of its onset output, 0.28, for error born upstream)."""

    x = keras.Input((32,), name="x")
    h = keras.layers.Dense(16, activation="relu", name="d1")(_LogPower(name="front")(x))
    model = keras.Model(x, keras.layers.Dense(4, name="out")(h))
    data = np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32)
    with _traced_pair(model, data, tmp_path, float_ops=True) as tr:
        (square,) = [r for r in tr.layers if r.op_type == "SQUARE"]
        assert square.float_island and square.inbound  # the FULLY_CONNECTED, via DEQUANTIZE
        after = [r for r in tr.layers if square.name in r.inbound]
        assert after  # the ADD after it, via QUANTIZE
        assert square.name not in {c.layer for c in tr.culprits()}
