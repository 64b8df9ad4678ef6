"""The model and data forms `qdebug trace` accepts beyond .keras + .npy: a tf_keras SavedModel
folder, a factory, an .npz for a two-input model, a folder of images, a data function."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import models
import qdebug

pytestmark = [pytest.mark.tf, pytest.mark.slow]


def test_tf_keras_savedmodel_folder_and_npz_two_inputs(tmp_path: Path) -> None:
    import tf_keras

    L = tf_keras.layers
    a, b = tf_keras.Input((6,), name="left"), tf_keras.Input((4,), name="right")
    h = L.Concatenate(name="cat")([L.Dense(8, activation="relu", name="da")(a),
                                   L.Dense(8, activation="relu", name="db")(b)])
    model = tf_keras.Model([a, b], L.Dense(3, activation="softmax", name="out")(h), name="tk2")
    model.save(tmp_path / "saved")  # a SavedModel folder
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", right=rng.normal(size=(12, 4)).astype(np.float32),
             left=rng.normal(size=(12, 6)).astype(np.float32))
    path = qdebug.trace(str(tmp_path / "saved"), str(tmp_path / "x.npz"), out=tmp_path / "t.h5",
                        quiet=True)
    with qdebug.open(str(path)) as tr:
        assert tr.meta["keras_flavour"] == "tf_keras"
        assert tr.meta["input_names"] == ["left", "right"]
        assert {r.name: r.status for r in tr.layers}["cat"] == "matched"
        assert tr.n_samples == 12


def test_folder_of_images_is_resized_and_scaled(tmp_path: Path) -> None:
    import tensorflow as tf

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        img = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
        tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(img))
    (folder / "notes.txt").write_text("ignored")
    import keras

    x = keras.Input((8, 8, 3), name="img")
    model = keras.Model(x, keras.layers.Conv2D(4, 3, name="c")(x), name="imgnet")
    path = qdebug.trace(model, str(folder), out=tmp_path / "t.h5", quiet=True, store_samples=5)
    with qdebug.open(str(path)) as tr:
        assert tr.n_samples == 5
        stored = tr.inputs(0)["img"]
        assert stored.shape == (8, 8, 3) and stored.min() >= 0.0 and stored.max() <= 1.0


def test_data_function_with_batched_dataset_and_factory_model(tmp_path: Path) -> None:
    (tmp_path / "factory.py").write_text(
        "import numpy as np, tensorflow as tf, keras\n"
        "def build():\n"
        "    x = keras.Input((5,), name='v')\n"
        "    return keras.Model(x, keras.layers.Dense(2, name='d')(x), name='fm')\n"
        "def data():\n"
        "    x = np.random.default_rng(0).normal(size=(10, 5)).astype('float32')\n"
        "    return tf.data.Dataset.from_tensor_slices((x, np.zeros(10))).batch(4)\n"
    )
    path = qdebug.trace(f"{tmp_path / 'factory.py'}:build", f"{tmp_path / 'factory.py'}:data",
                        out=tmp_path / "t.h5", quiet=True)
    with qdebug.open(str(path)) as tr:
        assert tr.n_samples == 10  # batches of (x, label) pairs were split into samples
        assert tr.model_name == "fm" and tr.layers[-1].status == "matched"


def test_tracing_is_deterministic_per_sample(tmp_path: Path) -> None:
    model = models.two_in_two_out()
    xs = models.random_inputs(model, 20)
    data = [list(s) for s in zip(*xs, strict=True)]
    a = qdebug.open(str(qdebug.trace(model, data, out=tmp_path / "a.h5", quiet=True)))
    b = qdebug.open(str(qdebug.trace(model, data, out=tmp_path / "b.h5", quiet=True)))
    sa, sb = a.layer_sample_stats(), b.layer_sample_stats()
    for k in sa:  # the same model, data and options: bit-identical per-sample statistics
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    np.testing.assert_array_equal(a.top1_match(), b.top1_match())


@pytest.mark.parametrize("flavour", ["keras", "tf_keras"])
def test_sequential_models_of_both_flavours(flavour: str, tmp_path: Path) -> None:
    import importlib

    K = importlib.import_module(flavour)
    model = K.Sequential(
        [K.Input((12,)), K.layers.Dense(8, activation="relu", name="d1"),
         K.layers.Dropout(0.1, name="dr"), K.layers.Dense(3, activation="softmax", name="d2")],
        name="seq",
    )
    x = np.random.default_rng(0).normal(size=(20, 12)).astype(np.float32)
    with qdebug.open(str(qdebug.trace(model, x, out=tmp_path / "t.h5", quiet=True))) as tr:
        statuses = [(r.class_name, r.status, r.related) for r in tr.layers]
        assert statuses == [("InputLayer", "input", ""), ("Dense", "matched", ""),
                            ("Dropout", "folded", "d1"), ("Dense", "matched", "")]
        assert tr.outputs[0].classifier and tr.output_metrics()["sqnr_db"][0] > 30


def test_integer_ids_for_a_float_input_are_told_to_cast_not_to_scale(tmp_path: Path) -> None:
    """Token ids given as int64 to a float32 id input (Keras' default Input dtype before an
    Embedding): the hint casts them, x.astype('float32'); /255 would destroy the ids. Only uint8
    pixel data is told to scale by 1/255 — by `trace` and by `check` alike."""
    import keras

    from cli_helpers import run_qdebug

    ids_in = keras.Input((6,), name="ids")  # float32, as Keras makes it
    h = keras.layers.Flatten()(keras.layers.Embedding(50, 4)(ids_in))
    keras.Model(ids_in, keras.layers.Dense(3)(h)).save(tmp_path / "ids.keras")
    np.save(tmp_path / "ids.npy", np.random.default_rng(0).integers(0, 50, (8, 6)))
    img_in = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(img_in))
    keras.Model(img_in, keras.layers.Dense(3)(h)).save(tmp_path / "img.keras")
    np.save(tmp_path / "img.npy",
            np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1)).astype(np.uint8))

    for model, data, dtype, scaled in (("ids", "ids.npy", "int64", False),
                                       ("img", "img.npy", "uint8", True)):
        out = run_qdebug("trace", tmp_path / f"{model}.keras", "--data", tmp_path / data,
                         "--out", tmp_path / f"{model}.h5")
        assert out.returncode == 2, out.stderr
        assert f"has dtype {dtype}, the model takes float32" in out.stderr
        assert ("/ 255" in out.stderr) is scaled, out.stderr
        assert ("x.astype('float32')" in out.stderr) is not scaled, out.stderr
        assert not (tmp_path / f"{model}.h5").exists()
        check = run_qdebug("check", tmp_path / f"{model}.keras", "--data", tmp_path / data)
        assert f"is {dtype}, the model takes float32" in check.stdout, check.stdout
        assert ("/ 255" in check.stdout) is scaled, check.stdout


def test_keras3_unnamed_inputs_take_data_keyed_by_the_names_qdebug_asks_for(
    tmp_path: Path,
) -> None:
    """Two unnamed keras.Input of one shape, built in Python: the data keyed by their input
    layers' names (what qdebug asks for, as for the same model loaded from .keras) calibrates
    the conversion (it failed with "conversion to INT8 failed: 'keras_tensor_1'", the
    converter's signature using the tensor names), and each array reaches its own input."""
    import keras

    keras.utils.set_random_seed(10)
    a, b = keras.Input((6,)), keras.Input((6,))
    left = keras.layers.Dense(5, activation="relu")(a)
    right = keras.layers.Dense(5, activation="tanh")(b)
    model = keras.Model([a, b], keras.layers.Dense(3)(keras.layers.Concatenate()([left, right])))
    names = [t._keras_history[0].name for t in model.inputs]
    assert names[0] != model.inputs[0].name  # input_layer_N, its tensor keras_tensor_M
    rng = np.random.default_rng(3)
    data = {n: rng.normal(size=(16, 6)).astype(np.float32) * (1 + 4 * i)
            for i, n in enumerate(names)}
    np.savez(tmp_path / "x.npz", **data)
    path = qdebug.trace(model, str(tmp_path / "x.npz"), out=tmp_path / "t.h5", quiet=True,
                        store_samples=2)
    with qdebug.open(str(path)) as tr:
        assert tr.meta["input_names"] == names
        assert all(r.status in ("matched", "input") for r in tr.layers)  # inputs not swapped
        stored = tr.inputs(1)
        for n in names:
            np.testing.assert_array_equal(stored[n], data[n][1])


@pytest.mark.parametrize(("flavour", "form"), [("keras3", "npy"), ("tf_keras", "npy"),
                                               ("keras3", "function")])
def test_a_subclassed_model_of_any_size_is_traced_at_the_datas_size(
    flavour: str, form: str, tmp_path: Path
) -> None:
    """A subclassed model that takes any image size, built once on 64×64: data of 32×32 (an
    .npy, or a data function's samples) is traced at 32×32 (it was refused: 'the model
    expects (N, 64, 64, 3)')."""
    model = models.any_size_subclassed(flavour, built_on=64)
    x = np.random.default_rng(4).uniform(size=(12, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    data = str(tmp_path / "x.npy")
    if form == "function":
        (tmp_path / "feed.py").write_text(
            f"import numpy as np\ndef data():\n    return list(np.load({data!r}))\n")
        data = f"{tmp_path / 'feed.py'}:data"
    path = qdebug.trace(model, data, out=tmp_path / "t.h5", quiet=True, store_samples=1)
    with qdebug.open(str(path)) as tr:
        assert tr.n_samples == 12
        (stored,) = tr.inputs(0).values()
        assert stored.shape == (32, 32, 3)
        assert np.isfinite(tr.output_metrics()["sqnr_db"][0])
