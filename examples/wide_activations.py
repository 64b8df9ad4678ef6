"""A CNN whose activations have a few channels 64× wider than the rest: int8 fails, int16 fixes.

Trained networks sometimes grow a channel whose activations dwarf the others' (outlier
channels). With per-tensor int8 activations the whole tensor shares one step, sized for the
outlier: every other channel keeps a level or two and the output is lost. Here three
consecutive convolutions (``conv1``..``conv3``) each have one such channel (channel 16, its
kernel scaled 64×, its outgoing weights zero, so it changes nothing the model computes
after training). Keeping layers in float fixes it, but a wide tensor must be float on both
sides (the layer that writes it and the one that reads it): four float layers. 16-bit
activations on the same ops fix it too, for a fraction of the bytes: ``qdebug fix
--allow int16,float`` finds that. ``build()`` trains it in a few seconds; ``data()`` gives the
digits images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from digits_cnn import data, labels

#: The layers with an outlier channel, and how much wider it is.
WIDE = ("conv1", "conv2", "conv3")
FACTOR = 64.0


def _net(filters: int) -> Any:
    import keras

    L = keras.layers
    x_in = keras.Input((8, 8, 1), name="image")
    h = x_in
    for i in range(1, 5):
        h = L.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(h)
    h = L.Flatten(name="flat")(h)
    out = L.Dense(10, activation="softmax", name="probs")(h)
    return keras.Model(x_in, out, name="wide_activations")


def build(epochs: int = 8, seed: int = 0) -> Any:
    """The trained model (Keras 3) with one outlier channel added to each of ``WIDE``: the
    same function as the model trained without them."""
    import keras

    keras.utils.set_random_seed(seed)
    trained = _net(16)
    trained.compile(optimizer=keras.optimizers.Adam(2e-3),
                    loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    trained.fit(data(), labels(), epochs=epochs, batch_size=64, verbose=0)
    model = _net(17)
    for i in range(1, 5):
        kernel, bias = trained.get_layer(f"conv{i}").get_weights()
        if i > 1:  # the input channel 16 (the outlier, if any): nobody reads it
            kernel = np.concatenate([kernel, np.zeros_like(kernel[:, :, :1])], axis=2)
        wide = f"conv{i}" in WIDE
        extra = np.abs(kernel[..., :1]) * (FACTOR if wide else 0.0)
        kernel = np.concatenate([kernel, extra], axis=3)
        bias = np.concatenate([bias, [FACTOR * 0.1 if wide else 0.0]]).astype(np.float32)
        model.get_layer(f"conv{i}").set_weights([kernel, bias])
    w, b = trained.get_layer("probs").get_weights()  # flattened (8, 8, 16) -> (8, 8, 17)
    w = np.concatenate([w.reshape(8, 8, 16, -1), np.zeros((8, 8, 1, w.shape[1]), w.dtype)], 2)
    model.get_layer("probs").set_weights([w.reshape(8 * 8 * 17, -1), b])
    return model


__all__ = ["FACTOR", "WIDE", "build", "data", "labels"]


if __name__ == "__main__":  # python examples/wide_activations.py
    from pathlib import Path

    from _walkthrough import OUT, qdebug, save

    model = f"{Path(__file__).resolve()}:build"
    x = save("wide_x.npy", data()[:256])
    qdebug("trace", model, "--data", x, "--out", str(OUT / "wide.h5"))
    qdebug("sensitivity", model, "--data", x, "--scheme", "int16", "--layers", "4")
    qdebug("fix", model, "--data", x, "--target-output-sqnr", "38", "--allow", "int16,float",
           "--out", str(OUT / "wide_fixed.h5"))  # 7 ops at int16, +224 B model
    # the converter's float fallback, for comparison: 4 layers, +21.5 KiB model
    qdebug("fix", model, "--data", x, "--target-output-sqnr", "38", "--max-float-layers", "5",
           "--out", str(OUT / "wide_fixed_float.h5"))
