"""`qdebug check` on each failure-class example: it finds the problem, names the layer and exits
1 on an error-level finding, 0 otherwise; tfmot's import does not leak TF_USE_LEGACY_KERAS."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import models
from qdebug.cli import cli

pytestmark = [pytest.mark.tf, pytest.mark.slow]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _check(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = CliRunner().invoke(cli, ["check", *args, "--format", "json"])
    assert result.exit_code in (0, 1), result.stderr + result.stdout
    start = result.stdout.index("{")
    return result.exit_code, json.loads(result.stdout[start:])


def _by(doc: dict, check: str) -> list[dict]:  # type: ignore[type-arg]
    return [f for f in doc["findings"] if f["check"] == check]


def test_erf_layer_is_named_with_op_and_fix() -> None:
    code, doc = _check(f"{EXAMPLES / 'erf_gelu.py'}:build")
    assert code == 1
    ops = _by(doc, "ops")
    assert ops[0]["severity"] == "error" and ops[0]["layer"] == "my_gelu"
    assert "Erf" in ops[0]["message"] and "Activation('gelu')" in ops[0]["fix"]


def test_erf_fixed_model_passes(tmp_path: Path) -> None:
    import erf_gelu

    np.save(tmp_path / "f.npy", erf_gelu.data(32))
    code, doc = _check(f"{EXAMPLES / 'erf_gelu.py'}:build_fixed", "--data",
                       str(tmp_path / "f.npy"))
    assert code == 0 and doc["errors"] == 0, doc


def test_float64_data_and_layer_are_named(tmp_path: Path) -> None:
    import float64_data

    np.save(tmp_path / "x64.npy", float64_data.data(64))
    code, doc = _check(f"{EXAMPLES / 'float64_data.py'}:build", "--data",
                       str(tmp_path / "x64.npy"))
    assert code == 1
    layers = {(f["layer"], f["severity"]) for f in _by(doc, "dtypes")}
    assert ("pixels", "error") in layers and ("hidden", "error") in layers
    assert any("FLOAT64" in f["message"] for f in _by(doc, "dtypes"))


def test_tiny_calibration_names_clipping_layers(
    tmp_path: Path, digits_model, digits_data  # type: ignore[no-untyped-def]
) -> None:
    import tiny_calibration

    digits_model.save(tmp_path / "d.keras")
    np.save(tmp_path / "x.npy", digits_data[-120:])
    np.save(tmp_path / "tiny.npy", tiny_calibration.calib_tiny())
    np.save(tmp_path / "good.npy", tiny_calibration.calib_representative(120))
    model = str(tmp_path / "d.keras")
    code, doc = _check(model, "--data", str(tmp_path / "x.npy"), "--calib",
                       str(tmp_path / "tiny.npy"))
    assert code == 1
    calib = _by(doc, "calibration")
    assert any("8 samples" in f["message"] for f in calib)
    clipped = [f for f in calib if f["layer"] and "outside the range" in f["message"]]
    assert clipped, calib
    assert all(f["layer"] in {r.name for r in digits_model.layers} for f in clipped)
    code, doc = _check(model, "--data", str(tmp_path / "x.npy"), "--calib",
                       str(tmp_path / "good.npy"))
    assert code == 0, doc
    assert not [f for f in _by(doc, "calibration") if f["severity"] == "error"]


def test_deep_residual_warns_at_the_last_add(deep_model) -> None:  # type: ignore[no-untyped-def]
    import digits_cnn
    from qdebug.tools.check import run_checks

    found = run_checks(deep_model, digits_cnn.data()[:48], tfmot=False)
    arch = [f for f in found if f.check == "architecture"]
    assert any(f.layer == "b11_add" and "12 residual additions" in f.message for f in arch)
    assert not [f for f in found if f.severity == "error"]


def test_tfmot_on_tf_keras_names_the_layer_and_keeps_the_env() -> None:
    import tf_keras

    from qdebug.tools.check import run_checks

    before = os.environ.get("TF_USE_LEGACY_KERAS")
    x = tf_keras.Input((8,), name="x")
    h = tf_keras.layers.Dense(8, name="fc")(x)
    h = tf_keras.layers.LayerNormalization(name="norm")(h)
    model = tf_keras.Model(x, tf_keras.layers.Dense(2, name="out")(h))
    found = run_checks(model)
    assert os.environ.get("TF_USE_LEGACY_KERAS") == before
    tfmot = [f for f in found if f.check == "tfmot"]
    assert tfmot and tfmot[0].layer == "norm" and "quantize_annotate_layer" in tfmot[0].fix


def test_bad_model_path_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["check", str(tmp_path / "missing.keras")])
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_token_model_with_int32_ids_has_no_false_errors(tmp_path: Path) -> None:
    """An Embedding over int32 ids: integer data is right for it, and the trial conversion is
    calibrated with ids, not floats (both were errors before)."""
    import keras

    keras.utils.set_random_seed(4)
    ids = keras.Input((12,), dtype="int32", name="ids")
    x = keras.layers.Embedding(50, 8, name="emb")(ids)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    out = keras.layers.Dense(3, activation="softmax", name="out")(x)
    keras.Model(ids, out).save(tmp_path / "tok.keras")
    data = np.random.default_rng(0).integers(0, 50, (120, 12)).astype(np.int32)
    np.save(tmp_path / "ids.npy", data)
    code, doc = _check(str(tmp_path / "tok.keras"), "--data", str(tmp_path / "ids.npy"))
    assert code == 0 and doc["errors"] == 0, doc["findings"]
    assert any("int32" in f["message"] and f["severity"] == "info" for f in _by(doc, "dtypes"))


def test_models_without_a_layer_graph_are_checked_not_refused(tmp_path: Path) -> None:
    """A plain tf.Module SavedModel (no Keras layers) and a subclassed model, both of which
    `qdebug trace` takes: check runs what applies and says what it skipped."""
    import tensorflow as tf

    class Mod(tf.Module):
        def __init__(self) -> None:
            g = tf.random.Generator.from_seed(1)
            self.w = tf.Variable(g.normal((16, 4), stddev=0.3))

        @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32)])
        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            return tf.nn.relu(x @ self.w)

    mod = Mod()
    tf.saved_model.save(mod, str(tmp_path / "module"), signatures=mod.__call__)
    sub = models.subclassed_mlp_factory(tmp_path)
    np.save(tmp_path / "x.npy", np.random.default_rng(1).normal(size=(120, 16)).astype(np.float32))
    code, doc = _check(str(tmp_path / "module"), "--data", str(tmp_path / "x.npy"))
    assert code == 0 and doc["errors"] == 0, doc["findings"]
    assert any("no Keras layer graph" in f["message"] for f in _by(doc, "model"))
    code, doc = _check(sub, "--data", str(tmp_path / "x.npy"))
    assert code == 0 and doc["errors"] == 0, doc["findings"]
