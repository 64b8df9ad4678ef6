"""A small CNN trained in seconds on scikit-learn's bundled 8×8 digits (no downloads).

Used by ``make demo`` and the tests. ``build()`` returns a trained Keras 3 model (trained on
``split()``'s first part, about 97 % accurate on the held-out rest); ``data()`` the float32
images in [0, 1], shape (N, 8, 8, 1).
"""

from __future__ import annotations

import numpy as np

#: Samples ``build`` trains on; the rest (360 of 1797) are held out.
TRAIN = 1437


def data(n: int | None = None) -> np.ndarray:
    """The digits images as float32 in [0, 1], (N, 8, 8, 1)."""
    from sklearn.datasets import load_digits

    x = load_digits().images.astype(np.float32) / 16.0
    return x[:n, :, :, None] if n else x[:, :, :, None]


def labels() -> np.ndarray:
    """The digit labels."""
    from sklearn.datasets import load_digits

    return load_digits().target


def split() -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training samples and of the held-out ones (a fixed shuffle: the digits
    are stored writer by writer, so the last samples alone would be one group of writers)."""
    order = np.random.default_rng(0).permutation(1797)
    return np.sort(order[:TRAIN]), np.sort(order[TRAIN:])


def build(epochs: int = 15, seed: int = 0):  # type: ignore[no-untyped-def]
    """A trained Conv-BN-ReLU CNN with a residual block, dropout and a softmax head."""
    import keras

    keras.utils.set_random_seed(seed)
    L = keras.layers
    x_in = keras.Input((8, 8, 1), name="image")
    h = L.Conv2D(16, 3, padding="same", name="conv1")(x_in)
    # momentum 0.9: with Keras' 0.99 the moving statistics are still far from the data's after
    # a few hundred steps, and the model is then right on 60 % of the digits at inference
    h = L.BatchNormalization(momentum=0.9, name="bn1")(h)
    h = L.ReLU(name="relu1")(h)
    r = L.Conv2D(16, 3, padding="same", name="res_conv")(h)
    r = L.ReLU(name="res_relu")(r)
    h = L.Add(name="res_add")([h, r])
    h = L.MaxPooling2D(name="pool")(h)
    h = L.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    h = L.Dropout(0.2, name="dropout")(h)
    h = L.Dense(32, activation="relu", name="fc")(h)
    out = L.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(x_in, out, name="digits_cnn")
    train, _ = split()
    # a high rate, decayed to zero: fast early, and no last-epoch wobble at the end
    steps = epochs * -(-len(train) // 64)
    rate = keras.optimizers.schedules.CosineDecay(5e-3, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(data()[train], labels()[train], epochs=epochs, batch_size=64, verbose=0)
    return model
