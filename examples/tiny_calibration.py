"""A calibration set too small and unlike the real inputs: eight images of zeros and ones
calibrate the ranges of a digits CNN that then sees all ten digits. ``qdebug check --data
--calib`` counts how much of the evaluation data falls outside the calibrated ranges and names
the layers; a representative calibration set of 200 digits fixes it.

What it costs the task: on the trained CNN, traced with ``--labels``, the eight images cost
nothing measurable; the same eight images at 60 % of their brightness (``calib_faint``: a
calibration pipeline that scales its images differently from the deployed one) make the input's
own range too narrow: on all 1,797 digits INT8 accuracy drops by several points (96.8 % to
92.4 % in one run) while the float model is unchanged; on the 300 digits this script traces,
the output loses 29 dB and top-1 agreement 3 points (accuracy happened to hold at 95.3 %).
``qdebug diff --max-accuracy-drop 0.01`` exits 1 on it.

Run: ``python examples/tiny_calibration.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from digits_cnn import build as _build_cnn
from digits_cnn import data, labels

HERE = Path(__file__).resolve().parent


def build() -> Any:
    """The digits CNN of examples/digits_cnn.py, trained briefly."""
    return _build_cnn(epochs=4)


def build_trained() -> Any:
    """The same CNN trained to a useful accuracy (for task accuracy against labels: a model
    trained briefly is near chance, so quantization cannot cost it accuracy)."""
    return _build_cnn(epochs=12)


def calib_tiny() -> np.ndarray:
    """Eight images, zeros and ones only."""
    return data()[np.isin(labels(), [0, 1])][:8]


def calib_faint() -> np.ndarray:
    """The eight images of ``calib_tiny`` at 60 % of their brightness (in [0, 0.6]): every
    evaluated pixel brighter than that clips at the input's quantization (at three quarters the
    well-trained CNN lost under a point)."""
    return calib_tiny() * np.float32(0.6)


def calib_representative(n: int = 200) -> np.ndarray:
    """``n`` images of every digit, drawn at random."""
    x = data()
    return x[np.random.default_rng(1).choice(len(x), n, replace=False)]


if __name__ == "__main__":
    from _walkthrough import OUT, qdebug, save

    model = f"{HERE / 'tiny_calibration.py'}:build"
    x = save("digits_eval.npy", data()[-300:])
    tiny = save("digits_calib_tiny.npy", calib_tiny())
    good = save("digits_calib_representative.npy", calib_representative())
    qdebug("check", model, "--data", x, "--calib", tiny)  # exit 1: names the clipping layers
    qdebug("check", model, "--data", x, "--calib", good)  # exit 0
    qdebug("trace", model, "--data", x, "--calib", tiny, "--out", str(OUT / "calib_tiny.h5"))
    qdebug("trace", model, "--data", x, "--calib", good, "--out", str(OUT / "calib_good.h5"))
    qdebug("diff", str(OUT / "calib_good.h5"), str(OUT / "calib_tiny.h5"))  # exit 1
    # What it costs the task: the trained CNN against the labels, good vs faint calibration.
    trained = f"{HERE / 'tiny_calibration.py'}:build_trained"
    y = save("digits_eval_labels.npy", labels()[-300:])
    faint = save("digits_calib_faint.npy", calib_faint())
    for name, calib in (("good", good), ("faint", faint)):
        qdebug("trace", trained, "--data", x, "--calib", calib, "--labels", y, "--out",
               str(OUT / f"calib_{name}_labels.h5"))
    qdebug("diff", str(OUT / "calib_good_labels.h5"), str(OUT / "calib_faint_labels.h5"),
           "--max-accuracy-drop", "0.01")  # exit 1: output SQNR and top-1 agreement drop
