"""The picture of a deep model in docs/scripting.md: ``deep_residual`` with 37 blocks (153
layers), trained on the digits, calibrated on its eight images of zeros and ones (ranges that
clip), traced and drawn by ``qdebug plot``::

    python examples/deep_plot.py docs/images/plot-deep.png

Writes the model and data to examples/out/ and the trace to traces/deep_residual-37.h5. A few
minutes on two cores (most of it training).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
ROOT = HERE.parent
BLOCKS = 37
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str]) -> int:
    picture = Path(argv[0]) if argv else ROOT / "docs" / "images" / "plot-deep.png"
    OUT.mkdir(exist_ok=True)
    sys.path.insert(0, str(HERE))
    import deep_residual

    model_path = OUT / f"deep_residual_{BLOCKS}.keras"
    if not model_path.exists():
        deep_residual.build(epochs=20, blocks=BLOCKS).save(model_path)
    np.save(OUT / "deep_data.npy", deep_residual.data()[:256])
    np.save(OUT / "deep_calib_tiny.npy", deep_residual.calib_tiny())
    trace = ROOT / "traces" / f"deep_residual-{BLOCKS}.h5"
    qdebug = [sys.executable, "-m", "qdebug"]
    steps = [
        ["trace", str(model_path), "--data", str(OUT / "deep_data.npy"), "--calib",
         str(OUT / "deep_calib_tiny.npy"), "--out", str(trace)],
        ["plot", str(trace), "--out", str(picture), "--force"],
    ]
    for step in steps:
        rc = subprocess.call([*qdebug, *step], cwd=ROOT)
        if rc != 0:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
