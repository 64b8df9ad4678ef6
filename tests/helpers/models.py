"""Small real models for the tracer tests, built in seconds (no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _randomize_bn(model: Any, seed: int = 0) -> None:
    """Give every BatchNormalization non-trivial moving statistics (fresh models have identity
    statistics, which hide BN from fused TFLite names)."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if layer.__class__.__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                    rng.normal(0, 0.1, beta.shape).astype(np.float32),
                    rng.normal(0, 0.2, mean.shape).astype(np.float32),
                    rng.uniform(0.5, 2.0, var.shape).astype(np.float32),
                ]
            )


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out


def _mobilenet_v2(K: Any) -> Any:
    K.utils.set_random_seed(0)
    m = K.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3), classes=10)
    _randomize_bn(m)
    return m


def mobilenet_v2_keras3() -> Any:
    import keras

    return _mobilenet_v2(keras)


def mobilenet_v2_tf_keras() -> Any:
    import tf_keras

    return _mobilenet_v2(tf_keras)


def nested() -> Any:
    import keras

    keras.utils.set_random_seed(1)
    L = keras.layers
    inner_in = keras.Input((8, 8, 4), name="inner_in")
    h = L.Conv2D(8, 3, padding="same", name="inner_conv")(inner_in)
    h = L.BatchNormalization(name="inner_bn")(h)
    h = L.ReLU(name="inner_relu")(h)
    inner = keras.Model(inner_in, h, name="block")
    x = keras.Input((8, 8, 3), name="x")
    y = L.Conv2D(4, 1, name="stem")(x)
    y = inner(y)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    out = L.Dense(5, activation="softmax", name="head")(y)
    m = keras.Model(x, out, name="nested")
    _randomize_bn(m)
    return m


def two_in_two_out() -> Any:
    import keras

    keras.utils.set_random_seed(2)
    L = keras.layers
    a = keras.Input((16,), name="a")
    b = keras.Input((8,), name="b")
    ha = L.Dense(12, activation="relu", name="da")(a)
    hb = L.Dense(12, activation="relu", name="db")(b)
    s = L.Add(name="add")([ha, hb])
    c = L.Concatenate(name="cat")([ha, s])
    out1 = L.Dense(4, activation="softmax", name="cls")(c)
    out2 = L.Dense(2, name="reg")(s)
    return keras.Model([a, b], [out1, out2], name="two_io")


def attention_block() -> Any:
    import keras

    keras.utils.set_random_seed(3)
    L = keras.layers
    x = keras.Input((6, 16), name="tokens")
    h = L.LayerNormalization(name="ln1")(x)
    h = L.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(h, h)
    h = L.Add(name="res1")([x, h])
    g = L.LayerNormalization(name="ln2")(h)
    g = L.Dense(32, name="ff1")(g)
    g = L.Activation("gelu", name="gelu")(g)
    g = L.Dense(16, name="ff2")(g)
    h = L.Add(name="res2")([h, g])
    h = L.GlobalAveragePooling1D(name="pool")(h)
    out = L.Dense(3, activation="softmax", name="head")(h)
    return keras.Model(x, out, name="attn")


def random_inputs(model: Any, n: int, seed: int = 0) -> list[np.ndarray]:
    """Random float32 samples for each model input, (n, ...)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in model.inputs:
        shape = [d for d in t.shape[1:]]
        out.append(rng.normal(0, 1, (n, *shape)).astype(np.float32))
    return out


def subclassed_mlp_factory(folder: Path) -> str:
    """Write a subclassed keras.Model (Dense 8 → Dense 4 over 16 features, no layer graph) as
    ``folder/sub.py`` and return its factory spec ``path:build``."""
    (folder / "sub.py").write_text(
        "import keras\n\n"
        "class Net(keras.Model):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.d1 = keras.layers.Dense(8, activation='relu')\n"
        "        self.d2 = keras.layers.Dense(4)\n"
        "    def call(self, x):\n"
        "        return self.d2(self.d1(x))\n\n"
        "def build():\n"
        "    keras.utils.set_random_seed(2)\n"
        "    return Net()\n"
    )
    return f"{folder / 'sub.py'}:build"


def _keras(flavour: str) -> Any:
    if flavour == "keras3":
        import keras

        return keras
    import tf_keras

    return tf_keras


def wrapped_three_outputs(flavour: str) -> Any:
    """A functional model wrapping a subclassed model that returns three tensors (4, 3 and 2
    values over 6 features): one layer of the wrapper computes all three outputs."""
    K = _keras(flavour)
    K.utils.set_random_seed(4)

    class Heads(K.Model):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__(name="heads")
            self.body = K.layers.Dense(8, activation="relu")
            self.a = K.layers.Dense(4)
            self.b = K.layers.Dense(3)
            self.c = K.layers.Dense(2)

        def call(self, x: Any) -> Any:
            h = self.body(x)
            return self.a(h), self.b(h), self.c(h)

    x = K.Input((6,), name="x")
    return K.Model(x, list(Heads()(x)), name="three_heads")


def any_size_subclassed(flavour: str, built_on: int = 64) -> Any:
    """A subclassed conv net that takes images of any size (Conv2D → global pooling → Dense),
    built once on ``built_on`` × ``built_on`` images."""
    K = _keras(flavour)
    K.utils.set_random_seed(5)

    class AnySize(K.Model):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__(name="any_size")
            self.conv = K.layers.Conv2D(4, 3, activation="relu")
            self.pool = K.layers.GlobalAveragePooling2D()
            self.head = K.layers.Dense(3)

        def call(self, x: Any) -> Any:
            return self.head(self.pool(self.conv(x)))

    model = AnySize()
    model(np.zeros((1, built_on, built_on, 3), np.float32))
    return model


def fixed_batch_savedmodel(folder: Path) -> Path:
    """A tf_keras SavedModel whose serving signature fixes the batch at 1 (as audio and
    on-device exports do), with a custom block that Keras revives from the saved functions
    (which accept batch 1 only) rather than from a config: write it and return the folder."""
    import tensorflow as tf
    import tf_keras as K

    K.utils.set_random_seed(6)

    class Block(K.layers.Layer):  # type: ignore[misc,name-defined]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.conv = K.layers.Conv1D(8, 3, padding="same")
            self.norm = K.layers.BatchNormalization()

        def call(self, x: Any, training: Any = None) -> Any:
            return tf.nn.relu(self.norm(self.conv(x), training=training) + 0.1)

    x = K.Input((16, 8), batch_size=1, name="audio")
    h = K.layers.Conv1D(8, 3, padding="same", name="stem")(x)
    h = Block(name="block")(h)
    h = K.layers.GlobalAveragePooling1D(name="pool")(h)
    model = K.Model(x, K.layers.Dense(4, activation="softmax", name="head")(h), name="fixed1")
    rng = np.random.default_rng(6)
    norm = model.get_layer("block").norm
    norm.set_weights([rng.uniform(0.5, 1.5, 8).astype(np.float32),
                      rng.normal(0, 0.1, 8).astype(np.float32),
                      rng.normal(0, 0.2, 8).astype(np.float32),
                      rng.uniform(0.5, 2.0, 8).astype(np.float32)])
    model.save(folder)
    return folder


def folded_squeeze_savedmodel(folder: Path) -> Path:
    """A tf_keras SavedModel where a squeeze of the channel axis (16, 1) → (16,) has no op of
    its own (the converter merges it with the next layer's reshape, so it is folded into the
    input), feeding a custom layer of several ops that Keras revives from its saved function,
    which takes (None, 16) only (basic-pitch's FlattenAudioCh → CQT): write it, return the
    folder."""
    import tensorflow as tf
    import tf_keras as K

    K.utils.set_random_seed(7)

    class Frames(K.layers.Layer):  # type: ignore[misc,name-defined]
        def call(self, x: Any) -> Any:
            return tf.nn.relu(tf.reduce_max(tf.reshape(x, (-1, 4, 4)), axis=-1) - 0.1)

    x = K.Input((16, 1), name="audio")
    h = Frames(name="frames")(K.layers.Reshape((16,), name="squeeze")(x))
    K.Model(x, K.layers.Dense(3, name="out")(h), name="folded").save(folder)
    return folder
