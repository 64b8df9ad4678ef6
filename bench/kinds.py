"""The bench models of the kinds issue 22 found slow, built here with nothing downloaded:

- ``vgg_edges``: a subclassed VGG16-style edge detector (five conv blocks, a side output per
  block upsampled to the input size and fused, HED-like) wrapped in a functional model, 128×128;
- ``char_conv1d``: a two-input character model (Keras 3, saved ``.keras``): per word, a
  ``TimeDistributed`` Conv1D over its characters' one-hot codes, max-pooled, joined with the
  word features, then Conv1D over the words;
- ``lstm_attention``: a tf_keras text model, Embedding → two LSTMs (``unroll=True``) →
  dot-product attention → softmax (about 1,200 TFLite ops).

Each is trained for a few epochs on fixed-seed synthetic data (seconds), so its activations have
the ranges of a trained model. The builders are also what the tests' small variants use
(``size`` arguments).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

VGG_SHAPE = (128, 128, 3)
WORDS, CHARS, ALPHABET, WORD_FEATS = 24, 12, 28, 6
SEQ_LEN, VOCAB = 48, 200


def vgg_edges(shape: tuple[int, int, int] = VGG_SHAPE, width: int = 16, seed: int = 220) -> Any:
    """A subclassed VGG16-style edge detector wrapped in a functional model."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(seed)

    class VggEdges(keras.Model):
        """VGG16's conv blocks (2, 2, 3, 3, 3 convs) with one side output per block."""

        def __init__(self) -> None:
            super().__init__(name="vgg_edges")
            self.blocks: list[list[Any]] = []
            self.sides: list[Any] = []
            self.ups: list[Any] = []
            for b, (convs, mult) in enumerate(((2, 1), (2, 2), (3, 4), (3, 8), (3, 8))):
                self.blocks.append([
                    L.Conv2D(width * mult, 3, padding="same", activation="relu",
                             name=f"block{b + 1}_conv{c + 1}")
                    for c in range(convs)
                ])
                self.sides.append(L.Conv2D(1, 1, name=f"side{b + 1}"))
                self.ups.append(L.UpSampling2D(2**b, interpolation="bilinear", name=f"up{b + 1}")
                                if b else None)
            self.pools = [L.MaxPooling2D(2, name=f"pool{b + 1}") for b in range(4)]
            self.cat = L.Concatenate(name="sides")
            self.fuse = L.Conv2D(1, 1, activation="sigmoid", name="fuse")

        def call(self, x: Any) -> Any:
            sides = []
            for b, block in enumerate(self.blocks):
                if b:
                    x = self.pools[b - 1](x)
                for conv in block:
                    x = conv(x)
                s = self.sides[b](x)
                sides.append(self.ups[b](s) if self.ups[b] is not None else s)
            return self.fuse(self.cat(sides))

    inner = VggEdges()
    x = keras.Input(shape, name="image")
    return keras.Model(x, inner(x), name="vgg_edges_wrapped")


def char_conv1d(words: int = WORDS, chars: int = CHARS, seed: int = 230) -> Any:
    """A two-input Conv1D/TimeDistributed character model (Keras 3)."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    c_in = keras.Input((words, chars, ALPHABET), name="chars")
    f_in = keras.Input((words, WORD_FEATS), name="word_feats")
    h = L.TimeDistributed(L.Conv1D(32, 3, padding="same", activation="relu"), name="td_conv")(c_in)
    h = L.TimeDistributed(L.Conv1D(32, 3, padding="same", activation="relu"), name="td_conv2")(h)
    h = L.TimeDistributed(L.GlobalMaxPooling1D(), name="td_pool")(h)
    h = L.Concatenate(name="join")([h, L.Dense(16, activation="relu", name="feat_dense")(f_in)])
    h = L.Conv1D(64, 3, padding="same", activation="relu", name="word_conv1")(h)
    h = L.Conv1D(64, 3, padding="same", activation="relu", name="word_conv2")(h)
    h = L.GlobalMaxPooling1D(name="word_pool")(h)
    h = L.Dense(32, activation="relu", name="dense")(h)
    out = L.Dense(5, activation="softmax", name="probs")(h)
    return keras.Model([c_in, f_in], out, name="char_conv1d")


def lstm_attention(seq_len: int = SEQ_LEN, units: int = 32, seed: int = 240) -> Any:
    """A tf_keras text model: Embedding, two unrolled LSTMs, attention, softmax."""
    import tf_keras

    L = tf_keras.layers
    tf_keras.utils.set_random_seed(seed)
    ids = tf_keras.Input((seq_len,), dtype="int32", name="ids")
    h = L.Embedding(VOCAB, 16, name="embed")(ids)
    h = L.LSTM(units, return_sequences=True, unroll=True, name="lstm_1")(h)
    h = L.LSTM(units, return_sequences=True, unroll=True, name="lstm_2")(h)
    a = L.Attention(name="attention")([h, h])
    h = L.GlobalAveragePooling1D(name="pool")(a)
    out = L.Dense(4, activation="softmax", name="probs")(h)
    return tf_keras.Model(ids, out, name="lstm_attention")


def images(n: int, seed: int, shape: tuple[int, int, int] = VGG_SHAPE) -> np.ndarray:
    """Deterministic images in [0, 1] with edges: a few random rectangles and discs on a
    smooth background, plus noise."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.empty((n, h, w, c), np.float32)
    for i in range(n):
        img = np.broadcast_to(rng.uniform(0.2, 0.5, c), (h, w, c)).copy()
        for _ in range(4):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            r = rng.integers(h // 10, h // 3)
            mask = ((yy - y0) ** 2 + (xx - x0) ** 2 < r * r) if rng.random() < 0.5 else (
                (abs(yy - y0) < r) & (abs(xx - x0) < r // 2 + 1))
            img[mask] = rng.uniform(0, 1, c)
        out[i] = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
    return out


def chars(n: int, seed: int, words: int = WORDS, n_chars: int = CHARS) -> list[np.ndarray]:
    """Two-input samples: one-hot characters (n, words, chars, alphabet), word features."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, ALPHABET, (n, words, n_chars))
    onehot = np.eye(ALPHABET, dtype=np.float32)[codes]
    feats = rng.normal(0, 1, (n, words, WORD_FEATS)).astype(np.float32)
    return [onehot, feats]


def token_ids(n: int, seed: int, seq_len: int = SEQ_LEN) -> np.ndarray:
    """Token ids (n, seq_len), Zipf-like."""
    rng = np.random.default_rng(seed)
    return np.minimum(rng.zipf(1.3, (n, seq_len)), VOCAB - 1).astype(np.int32)


def _labels(x: Any, classes: int) -> np.ndarray:
    """Synthetic labels that depend on the input (so training has something to learn)."""
    first = x[0] if isinstance(x, list) else x
    flat = np.asarray(first, np.float64).reshape(len(first), -1)
    return (np.abs(flat[:, ::7].sum(axis=1) * 7.31).astype(np.int64) % classes).astype(np.int32)


def train(model: Any, x: Any, kind: str, epochs: int = 2) -> None:
    """A few epochs on the synthetic data (seconds)."""
    if kind == "vgg_edges":
        gray = np.asarray(x).mean(axis=-1, keepdims=True)
        gy, gx = np.gradient(gray, axis=(1, 2))
        y = (np.hypot(gy, gx) > 0.05).astype(np.float32)
        model.compile(optimizer="adam", loss="binary_crossentropy")
    else:
        y = _labels(x, int(model.output_shape[-1]))
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)


BUILD = {"vgg_edges": vgg_edges, "char_conv1d": char_conv1d, "lstm_attention": lstm_attention}
DATA = {"vgg_edges": images, "char_conv1d": chars, "lstm_attention": token_ids}
SUFFIX = {"vgg_edges": ".weights.h5", "char_conv1d": ".keras", "lstm_attention": ".h5"}
"""The subclassed model is saved as its weights (a subclassed layer saved whole needs its class
registered to load); ``load`` builds it and loads them."""
WEIGHTS = Path(__file__).resolve().parent / "out" / f"vgg_edges{SUFFIX['vgg_edges']}"


def load(kind: str, path: Path) -> Any:
    """The saved model of ``kind``, loaded as its user would."""
    if kind == "vgg_edges":
        model = vgg_edges()
        model.load_weights(path)
        return model
    if kind == "lstm_attention":
        import tf_keras

        return tf_keras.models.load_model(path)
    import keras

    return keras.models.load_model(path)


def vgg_edges_trained() -> Any:
    """Factory for the command line: ``qdebug trace bench/kinds.py:vgg_edges_trained``."""
    return load("vgg_edges", WEIGHTS)


def build_and_save(kind: str, model_path: Path, data_path: Path, calib_path: Path,
                   n: int, calib: int) -> None:
    """Build, train and save ``kind`` with its traced samples and calibration set (.npz: one
    array per input, by input name)."""
    model = BUILD[kind]()
    train(model, DATA[kind](128, 1), kind)
    if kind == "vgg_edges":
        model.save_weights(model_path)
    else:
        model.save(model_path)
    names = ["chars", "word_feats"] if kind == "char_conv1d" else None
    for path, count, seed in ((data_path, n, 2), (calib_path, calib, 3)):
        x = DATA[kind](count, seed)
        arrays = dict(zip(names, x, strict=True)) if names else {"x": x}
        np.savez(path, **arrays)
