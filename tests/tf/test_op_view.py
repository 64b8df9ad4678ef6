"""The op graph as the backbone: every op of the deployed model measured, Keras layers a view on
top, and models without a layer graph (subclassed, plain SavedModel, ``model.export()``, a
float + INT8 ``.tflite`` pair) traced as ops. Small real models, real conversion and LiteRT."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import qdebug
from qdebug.analysis.culprits import is_healthy
from qdebug.cli import cli
from qdebug.store.reader import open_trace

#: The trace's op_local_error for a pair (docs/trace-format.md).
LOCAL_METHOD = "float ops fed the quantized inputs (qdebug)"

pytestmark = [pytest.mark.tf, pytest.mark.slow]

N = 16


def _trace(tmp: Path, model: str, *extra: str) -> qdebug.store.reader.Trace:  # type: ignore[name-defined]
    out = tmp / "t.h5"
    r = CliRunner().invoke(
        cli, ["trace", model, "--data", str(tmp / "x.npy"), "--out", str(out), "-q", *extra]
    )
    assert r.exit_code == 0, r.stderr
    return qdebug.open(str(out))


def _conv_model(name: str = "convnet") -> Any:
    import keras

    keras.utils.set_random_seed(5)
    inp = keras.Input((10, 10, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="sigmoid", name="gate")(x)
    x = x * y  # a Keras 3 op node, not a layer
    x = keras.layers.SeparableConv2D(8, 3, padding="same", name="sep")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(4, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out, name=name)
    bn = model.get_layer("bn")
    rng = np.random.default_rng(0)
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma, beta, rng.normal(size=mean.shape), rng.uniform(0.5, 2, var.shape)])
    return model


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("opview")
    np.save(d / "x.npy", np.random.default_rng(1).random((N, 10, 10, 3), dtype=np.float32))
    return d


def test_every_op_is_a_row_and_layers_are_a_view(images: Path) -> None:
    _conv_model().save(images / "m.keras")
    with _trace(images, str(images / "m.keras")) as tr:
        assert tr.view == "layers" and tr.meta["deployed"].startswith("full integer")
        om = tr.op_metrics()
        measured = [i for i, o in enumerate(tr.ops) if o.status == "measured"]
        assert len(measured) >= 7
        assert all(np.isfinite(om["sqnr_db"][i]) for i in measured)
        assert all(tr.ops[i].has_local and np.isfinite(om["local_sqnr_db"][i]) for i in measured)
        status = {r.name: r.status for r in tr.layers}
        # The op node x * y is a layer row of its own; SeparableConv2D's value lives inside the
        # BatchNorm's CONV_2D: fused, never matched to its DEPTHWISE_CONV_2D.
        mul = next(r for r in tr.layers if r.class_name == "Multiply")  # named multiply_N
        assert mul.status == "matched" and [tr.ops[i].op_type for i in mul.ops] == ["MUL"]
        assert status["sep"] == "fused" and status["bn"] == "matched"
        bn = next(r for r in tr.layers if r.name == "bn")
        assert [tr.ops[i].op_type for i in bn.ops] == ["DEPTHWISE_CONV_2D", "CONV_2D"]
        lm = tr.layer_metrics()
        for i, r in enumerate(tr.layers):
            if r.ops and r.status == "matched":  # the layer's row is its last op's output
                assert lm["sqnr_db"][i] == pytest.approx(om["sqnr_db"][r.ops[-1]], abs=1e-9)
        # A layer of one op that the Keras re-run covers has the same local error as its op
        # from the numeric-verify model: two independent constructions of f(x̂).
        gap = next(i for i, r in enumerate(tr.layers) if r.name == "gap")
        assert lm["local_sqnr_db"][gap] == pytest.approx(
            om["local_sqnr_db"][tr.layers[gap].ops[-1]], abs=0.05
        )


def _sub_factory(folder: Path) -> str:
    (folder / "subnet.py").write_text(
        "import keras\n"
        "class Net(keras.Model):\n"
        "    def __init__(self, **kw):\n"
        "        super().__init__(**kw)\n"
        "        self.c = keras.layers.Conv2D(8, 3, activation='relu')\n"
        "        self.p = keras.layers.GlobalAveragePooling2D()\n"
        "        self.d = keras.layers.Dense(4)\n"
        "    def call(self, x):\n"
        "        return self.d(self.p(self.c(x)))\n"
        "def build():\n"
        "    keras.utils.set_random_seed(3)\n"
        "    return Net(name='subnet')\n"
    )
    return f"{folder / 'subnet.py'}:build"


def test_subclassed_model_is_traced_as_ops(images: Path) -> None:
    with _trace(images, _sub_factory(images)) as tr:
        assert tr.view == "ops"
        assert [r.class_name for r in tr.layers][:2] == ["QUANTIZE", "CONV_2D"]
        assert len(tr.layers) == sum(o.status == "measured" for o in tr.ops)
        assert all(r.name.startswith("subnet") or "(" in r.name or "_" in r.name
                   for r in tr.layers)
        om = tr.output_metrics()
        assert math.isfinite(om["sqnr_db"][0])
        # ops are ranked like layers; a healthy output names none of them as a culprit
        from qdebug.analysis.culprits import is_healthy, rank_layers

        ranked = rank_layers(tr.layers, tr.layer_metrics(), tr.layer_pooled_stats(),
                             float(om["sqnr_db"][0]), tr.outputs[0].layer)
        assert ranked and all(c.score >= 0.01 for c in ranked[:1])
        healthy = is_healthy(float(om["sqnr_db"][0]), float(om["top1_agreement"][0]))
        assert (tr.culprits() == []) == healthy


def test_tf_module_savedmodel_and_keras3_export_folder(images: Path) -> None:
    import tensorflow as tf

    class Mod(tf.Module):
        def __init__(self) -> None:
            g = tf.random.Generator.from_seed(2)
            self.w = tf.Variable(g.normal([3, 3, 3, 8]))
            self.v = tf.Variable(g.normal([8, 4]))

        @tf.function(input_signature=[tf.TensorSpec([None, 10, 10, 3], tf.float32)])
        def __call__(self, x: Any) -> Any:
            h = tf.nn.relu(tf.nn.conv2d(x, self.w, 1, "SAME"))
            return tf.matmul(tf.reduce_mean(h, [1, 2]), self.v)

    mod = Mod()
    tf.saved_model.save(mod, str(images / "module"), signatures=mod.__call__)
    _conv_model("exported").export(str(images / "exported"))
    for folder, ops in (("module", {"CONV_2D", "MEAN", "FULLY_CONNECTED"}),
                        ("exported", {"CONV_2D", "DEPTHWISE_CONV_2D", "MUL", "SOFTMAX"})):
        with _trace(images, str(images / folder)) as tr:
            assert tr.view == "ops", folder
            assert ops <= {r.class_name for r in tr.layers}, folder
            assert tr.meta["op_local_error"] == "numeric-verify model"
            # the deployed outputs, read where the verify model holds them, are the plain
            # model's to the bit (no false "instrumentation changed the output")
            assert int(tr.meta["instrumentation_mismatched_samples"]) == 0, folder


def test_float_outputs_after_dequantize_are_the_deployed_models_to_the_bit(
    tmp_path: Path,
) -> None:
    """A module whose float logits come out of a DEQUANTIZE (a new user's model): once the
    INT8 values are read from the verify model, the outputs are its own DEQUANTIZE's, not
    recomputed in numpy (whose rounding differed from LiteRT's in 30 of 48 samples here: a
    false "instrumentation changed the output")."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    class Mlp(tf.Module):
        def __init__(self) -> None:
            g = tf.random.Generator.from_seed(7)
            self.w1 = tf.Variable(g.normal((64, 32), stddev=0.2))
            self.b1 = tf.Variable(tf.zeros(32))
            self.w2 = tf.Variable(g.normal((32, 10), stddev=0.2))
            self.b2 = tf.Variable(tf.zeros(10))

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
        def __call__(self, x: Any) -> Any:
            return {"logits": tf.nn.relu(x @ self.w1 + self.b1) @ self.w2 + self.b2}

    mlp = Mlp()
    tf.saved_model.save(mlp, str(tmp_path / "mlp"), signatures=mlp.__call__)
    np.save(tmp_path / "x.npy", (load_digits().data.astype(np.float32) / 16.0)[:48])
    with _trace(tmp_path, str(tmp_path / "mlp")) as tr:
        assert tr.meta["op_local_error"] == "numeric-verify model"
        assert int(tr.meta["instrumentation_mismatched_samples"]) == 0
        # named as the SavedModel's signature names them, not StatefulPartitionedCall
        assert [o.name for o in tr.outputs] == ["logits"] and tr.meta["input_names"] == ["x"]


def test_float_and_int8_tflite_pair(images: Path) -> None:
    import tensorflow as tf

    model = _conv_model("pair")
    x = np.load(images / "x.npy")
    (images / "float.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())

    def rep() -> Any:
        for s in x:
            yield [s[None]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    (images / "int8.tflite").write_bytes(conv.convert())
    with _trace(images, str(images / "float.tflite"), "--tflite",
                str(images / "int8.tflite")) as tr:
        # no numeric-verify model for a pair: qdebug's float ops fed the INT8 model's inputs
        assert tr.view == "ops" and tr.meta["op_local_error"] == LOCAL_METHOD
        assert tr.meta["calib_source"].startswith("none: int8.tflite")  # nothing calibrated
        lm = tr.layer_metrics()
        assert all(np.isfinite(lm["sqnr_db"]))
        assert tr.outputs[0].classifier
        # every quantized op has its own error (before: none, so no culprit and no gain)
        quantized = [i for i, o in enumerate(tr.ops) if o.measured and o.dtype == "int8"
                     and not o.name.startswith("quantize(")]
        assert quantized and all(tr.ops[i].has_local for i in quantized)
        assert not np.isnan(tr.op_metrics()["local_sqnr_db"][quantized]).any()
        om = tr.output_metrics()
        healthy = is_healthy(float(om["sqnr_db"][0]), float(om["top1_agreement"][0]))
        path = tr.path
    said = CliRunner().invoke(cli, ["report", str(path)]).stdout
    assert "measures no op's own error" not in said
    assert ("healthy: every output" in said) if healthy else ("culprits" in said)
    # the float file alone: quantized by ai-edge-quantizer (tests/tf/test_aeq.py), not refused
    r = CliRunner().invoke(cli, ["trace", str(images / "float.tflite"), "--data",
                                 str(images / "x.npy"), "--out", str(images / "alone.h5")])
    assert r.exit_code == 0, r.stderr
    with open_trace(images / "alone.h5") as alone:
        assert alone.meta.quantizer.name == "ai-edge-quantizer"
    # the INT8 file alone: said to be the quantized side, before any data is read (it was
    # told its int8 input takes token ids)
    r = CliRunner().invoke(cli, ["trace", str(images / "int8.tflite"), "--data",
                                 str(images / "x.npy"), "--out", str(images / "no.h5")])
    assert r.exit_code == 2 and "is a quantized .tflite" in r.stderr, r.stderr
    assert f"--tflite {images / 'int8.tflite'}" in r.stderr


def test_integer_ids_pass_through_unscaled(tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(6)
    ids = keras.Input((12,), dtype="int32", name="ids")
    h = keras.layers.Embedding(50, 8, name="emb")(ids)
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    out = keras.layers.Dense(3, activation="softmax", name="probs")(h)
    keras.Model(ids, out, name="tokens").save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", np.random.default_rng(2).integers(0, 50, (N, 12), dtype=np.int32))
    with _trace(tmp_path, str(tmp_path / "m.keras")) as tr:
        assert tr.view == "layers"
        stored = tr.inputs(int(tr.stored_samples[0]))
        assert np.array_equal(stored["ids"], np.load(tmp_path / "x.npy")[0])  # not /255
        assert np.isfinite(tr.output_metrics()["sqnr_db"][0])
        # the Embedding's integer ops (index wrap-around) are exact: its local error is its
        # GATHER's, the op that holds its tensor
        emb = tr.layer_index("emb")
        lm = tr.layer_metrics()
        assert np.isfinite(lm["local_sqnr_db"][emb])
        gather = next(i for i, o in enumerate(tr.ops) if o.op_type == "GATHER")
        assert lm["local_sqnr_db"][emb] == pytest.approx(
            tr.op_metrics()["local_sqnr_db"][gather], abs=1e-9)
    np.save(tmp_path / "x.npy", np.full((N, 12), 0.5, dtype=np.float32))
    r = CliRunner().invoke(cli, ["trace", str(tmp_path / "m.keras"), "--data",
                                 str(tmp_path / "x.npy"), "--out", str(tmp_path / "b.h5")])
    assert r.exit_code == 2 and "non-integral" in r.stderr and "/ 255" not in r.stderr


def test_recurrent_layer_conversion_error_names_the_reason_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "rnn.py").write_text(
        "import keras\n"
        "def build():\n"
        "    inp = keras.Input((6, 4))\n"
        "    return keras.Model(inp, keras.layers.Dense(2)(keras.layers.GRU(5, name='gru')(inp)))\n"
    )
    np.save(tmp_path / "x.npy", np.zeros((4, 6, 4), dtype=np.float32))
    r = CliRunner().invoke(cli, ["trace", f"{tmp_path / 'rnn.py'}:build", "--data",
                                 str(tmp_path / "x.npy"), "--out", str(tmp_path / "r.h5"), "-q"])
    assert r.exit_code == 2
    line = r.stderr.strip()
    assert "\n" not in line and "loc(" not in line
    assert "element_shape to be static" in line and "unroll=True" in line


def test_dynamic_range_tflite_is_said(images: Path) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(7)
    inp = keras.Input((64,))
    model = keras.Model(inp, keras.layers.Dense(64)(keras.layers.Dense(64, activation="relu")(inp)))
    (images / "dfloat.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_keras_model(model).convert()
    )
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: weights only
    (images / "dynamic.tflite").write_bytes(conv.convert())
    np.save(images / "v.npy", np.random.default_rng(3).normal(size=(N, 64)).astype(np.float32))
    out = images / "dyn.h5"
    r = CliRunner().invoke(cli, ["trace", str(images / "dfloat.tflite"), "--tflite",
                                 str(images / "dynamic.tflite"), "--data",
                                 str(images / "v.npy"), "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    # dynamic-range kernels quantize their float inputs on the fly: not the weights' error alone
    assert "quantized to int8 on the fly inside the kernels with int8 weights" in r.stdout
    assert "weights' alone" not in r.stdout
    with qdebug.open(str(out)) as tr:
        assert tr.meta["deployed"].startswith("dynamic range")
        assert not tr.float_islands and not any(r.float_island for r in tr.layers)


def test_xnnpack_trace_states_the_delegated_ops_and_the_kernel_difference(images: Path) -> None:
    _conv_model("xnn").save(images / "xnn.keras")
    with _trace(images, str(images / "xnn.keras"), "--xnnpack") as tr:
        delegated = tr.meta["delegated_ops"]
        assert delegated and set(delegated) <= {o.index for o in tr.ops}
        assert isinstance(tr.meta["kernel_mismatched_samples"], int)
        assert not tr.float_islands  # the output's DEQUANTIZE is no island
        om = tr.op_metrics()  # every op measured, from the reference kernels
        assert all(np.isfinite(om["sqnr_db"][i]) for i, o in enumerate(tr.ops)
                   if o.status == "measured")
        probs = next(r for r in tr.layers if r.name == "probs")
        assert probs.status == "matched" and probs.dtype == "int8"


def test_xnnpack_outputs_are_measured_against_float_beside_the_reference(images: Path) -> None:
    """--xnnpack records the deployment kernels' output SQNR, top-1 agreement and accuracy;
    checked against LiteRT's own XNNPACK interpreter run here on the trace's INT8 model, with
    the Keras model as the float reference (the trace's is the converter's float twin: the two
    agree to ~1e-6)."""
    from ai_edge_litert.interpreter import Interpreter

    from qdebug.analysis.kernels import kernels_comparison

    model = _conv_model("xnn2")
    model.save(images / "xnn2.keras")
    x = np.load(images / "x.npy")
    labels = np.arange(N) % 4
    np.save(images / "y.npy", labels)
    with _trace(images, str(images / "xnn2.keras"), "--xnnpack", "--labels",
                str(images / "y.npy")) as tr:
        (k_out,) = tr.meta.kernel_outputs
        interp = Interpreter(model_content=tr.tflite_bytes())  # default delegates: XNNPACK
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        deployed = []
        for sample in x:
            interp.set_tensor(inp["index"], sample[None])
            interp.invoke()
            deployed.append(interp.get_tensor(out["index"])[0].astype(np.float64))
        q = np.stack(deployed)
        f = model.predict(x, verbose=0).astype(np.float64)
        sqnr = 10 * np.log10(np.sum(f**2) / np.sum((f - q) ** 2))
        assert k_out.sqnr_db == pytest.approx(sqnr, abs=0.05)
        assert k_out.top1_agreement == pytest.approx(np.mean(q.argmax(1) == f.argmax(1)))
        assert tr.meta.kernel_accuracy == pytest.approx(np.mean(q.argmax(1) == labels))
        k = kernels_comparison(tr)
        assert k is not None and k.outputs[0].name == "probs"
        ref = tr.output_metrics()
        assert k.outputs[0].reference_sqnr_db == pytest.approx(float(ref["sqnr_db"][0]))
        assert np.isfinite(k.reference_accuracy) and np.isfinite(k.float_accuracy)
        # the kernels' difference in LSB of the output: a whole number of steps of its grid
        lsb = k_out.max_abs_diff_lsb
        assert lsb == pytest.approx(round(lsb), abs=1e-3)
        assert (lsb > 0) == (tr.meta.kernel_mismatched_samples > 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def _dynamic_pair(d: Path) -> None:
    """A float + INT8 ``.tflite`` pair whose largest tensors are dynamic: TILE by a count only
    known at run time (the size of a WHERE), so before the first invoke LiteRT gives them shape
    (1, 1); after it they are (1, 65536)."""
    import tensorflow as tf

    class Tiled(tf.Module):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.w = tf.Variable(rng.normal(size=(64, 8)).astype("float32") * 0.1)

        @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32, name="x")])
        def __call__(self, x: Any) -> Any:
            h = tf.nn.relu(tf.matmul(x, self.w))
            n = tf.size(tf.where(x > -1e9))  # 128, data-dependent: not folded
            t = tf.nn.relu(tf.tile(x, tf.stack([1, n * 8])) * 2.0)
            return {"y": tf.reduce_mean(t, axis=1, keepdims=True)
                    + tf.reduce_sum(h, axis=1, keepdims=True)}

    m = Tiled()
    x = np.random.default_rng(1).random((16, 64), dtype=np.float32)
    np.save(d / "x.npy", x)
    fn = m.__call__.get_concrete_function()
    (d / "float.tflite").write_bytes(tf.lite.TFLiteConverter.from_concrete_functions(
        [fn], m).convert())

    def rep() -> Any:
        for s in x:
            yield [s[None]]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    (d / "int8.tflite").write_bytes(conv.convert())


def test_store_budget_is_sized_from_the_real_dynamic_tensors(tmp_path: Path) -> None:
    """The store budget holds for dynamic tensors: samples are sized from the tensors after an
    invoke, not from the (1, 1) LiteRT shows before it (which stored all 16 samples, ~10 MB,
    under a 2 MB budget)."""
    import h5py

    _dynamic_pair(tmp_path)
    budget = 2.0
    r = CliRunner().invoke(cli, [
        "trace", str(tmp_path / "float.tflite"), "--tflite", str(tmp_path / "int8.tflite"),
        "--data", str(tmp_path / "x.npy"), "--out", str(tmp_path / "t.h5"),
        "--store-budget", str(budget)])
    assert r.exit_code == 0, r.stderr
    with h5py.File(tmp_path / "t.h5") as f:
        count = int(f["samples/index"].shape[0])
        arrays = [f[f"activations/{k}/{n}"] for k in f["activations"]
                  for n in f[f"activations/{k}"]]
        arrays += [f[f"samples/inputs/{k}"] for k in f["samples/inputs"]]
        per = sum(a.size * a.dtype.itemsize for a in arrays) / max(count, 1)
        assert max(a.shape[1:] for a in arrays if a.ndim == 2)[0] == 65536  # the tiled tensor
    assert 1 <= count < 16
    assert count * per <= budget * 2**20 < (count + 1) * per  # as many as fit, no more
    assert f"activations of {count} sample(s) stored ({per / 2**20:.1f} MB each" in r.stdout


@pytest.fixture(scope="module")
def deconv_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A float + float16-weights ``.tflite`` pair with MediaPipe's Convolution2DTransposeBias
    custom op, built here (tests/helpers/custom_ops.py)."""
    import custom_ops

    return custom_ops.write_pair(tmp_path_factory.mktemp("deconv"))


def test_custom_op_xnnpack_runs_is_traced(deconv_pair: tuple[Path, Path, Path]) -> None:
    """A valid .tflite with a custom op LiteRT runs through XNNPACK (it was refused: "unresolved
    custom op … builtin ops only"): it traces, the custom op is a measured row like any other,
    and the delegate's own DELEGATE nodes are no rows."""
    import h5py

    float_tfl, half_tfl, x = deconv_pair
    out = x.parent / "deconv.h5"
    r = CliRunner().invoke(cli, ["trace", str(float_tfl), "--tflite", str(half_tfl),
                                 "--data", str(x), "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    with qdebug.open(str(out)) as tr:
        types = [o.op_type for o in tr.ops]
        assert "DELEGATE" not in types
        row = types.index("Convolution2DTransposeBias")
        assert tr.ops[row].status == "measured"
        sq = tr.op_metrics()["sqnr_db"][row]
        assert math.isfinite(sq) and sq > 40  # float16 weights against float32: small error
        assert [r.class_name for r in tr.layers] == ["CONV_2D", "Convolution2DTransposeBias",
                                                     "CONV_2D", "LOGISTIC"]
        # which kernels gave the values, and that nothing went unobserved, is said
        assert "custom op Convolution2DTransposeBias" in tr.meta["kernels"]
        (note,) = [w for w in tr.meta["warnings"] if "custom op Convolution2DTransposeBias" in w]
        assert note.startswith("the deployed and the float model have the custom op")
        assert "XNNPACK" in note and "every op's output could be observed" in note
        assert not [o for o in tr.ops if o.status == "hidden"]
    with h5py.File(out) as f:
        assert f.attrs["complete"]
    assert "custom op Convolution2DTransposeBias" in r.stdout  # the summary's warning line


def test_ops_inside_a_delegate_partition_are_hidden_and_named(
        deconv_pair: tuple[Path, Path, Path]) -> None:
    """Where XNNPACK fuses several ops into one partition (here: without preserving every
    tensor), the tensors inside it are never written — LiteRT refuses to read them — and
    exactly those ops are marked hidden, named in the note, and out of the measured rows."""
    from qdebug.tracer.litert import LiteModel, kernel_notes
    from qdebug.tracer.matching import align_tensors
    from qdebug.tracer.oprows import build_op_table

    float_tfl, _, x = deconv_pair
    content = float_tfl.read_bytes()
    fused, every = LiteModel(content, preserve=False), LiteModel(content, preserve=True)
    assert fused.custom_ops == ("Convolution2DTransposeBias",) and fused.xnnpack
    sample = [np.load(x)[0]]
    fused.invoke(sample)
    every.invoke(sample)
    hidden = fused.hidden_tensors()
    assert hidden
    for op in fused.model_ops():
        for t in op.outputs:
            if t in hidden:
                with pytest.raises(ValueError, match="null"):
                    fused.get(t)
            else:
                np.testing.assert_allclose(fused.get(t), every.get(t), atol=1e-5)
    assert every.hidden_tensors() == set()  # preserving every tensor: one partition per op
    table = build_op_table(fused, every, align_tensors(every, fused))
    assert {r.tensor_index for r in table.rows if r.status == "hidden"} == hidden
    assert not set(table.measured()) & {i for i, r in enumerate(table.rows)
                                         if r.tensor_index in hidden}
    (note,) = kernel_notes(fused, every)
    assert "custom op Convolution2DTransposeBias" in note and "XNNPACK" in note
    assert f"the values of {len(fused.hidden_ops())} op(s)" in note
    for op in fused.hidden_ops():
        assert f"{op.op_type} #{op.index}" in note
    assert "every op's output could be observed" in kernel_notes(every, every)[0]


def test_a_custom_op_no_kernel_has_is_named(deconv_pair: tuple[Path, Path, Path]) -> None:
    """A custom op neither the builtin kernels nor XNNPACK implement: one line naming it."""
    from qdebug.errors import TfliteModelError
    from qdebug.tracer.litert import LiteModel

    content = deconv_pair[0].read_bytes().replace(b"Convolution2DTransposeBias",
                                                  b"Convolution2DTransposeBiaz")
    with pytest.raises(TfliteModelError, match="custom op 'Convolution2DTransposeBiaz'"):
        LiteModel(content, preserve=True)
