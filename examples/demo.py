"""`make demo`: train a small CNN on bundled digits, trace it, show the result.

Everything is local: scikit-learn's digits ship with the package. The model trains on 1437 of
the 1797 digits; the trace runs the 360 it never saw, with their labels, and is calibrated on
200 training digits. Outputs go to examples/out/ (model and data) and traces/ (the trace). On
an interactive terminal the viewer opens; otherwise the summary is printed.
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
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> int:
    OUT.mkdir(exist_ok=True)
    model_path = OUT / "digits_cnn.keras"
    data_path = OUT / "digits.npy"
    calib_path = OUT / "digits_calib.npy"
    labels_path = OUT / "digits_labels.npy"
    sys.path.insert(0, str(HERE))
    from qdebug.tracer.tfenv import import_tf

    import_tf()  # quietly: TensorFlow's C++ start-up notices are noise here
    import digits_cnn

    if not model_path.exists():
        print("training a small CNN on scikit-learn's digits (a few seconds)...", flush=True)
        digits_cnn.build().save(model_path)
    x, y = digits_cnn.data(), digits_cnn.labels()
    train, held_out = digits_cnn.split()
    np.save(data_path, x[held_out])
    np.save(labels_path, y[held_out])
    np.save(calib_path, x[train[:200]])
    trace_path = ROOT / "traces" / "digits_cnn-demo.h5"
    qdebug = [sys.executable, "-m", "qdebug"]
    # paths from the repository root (the command's folder), as a user would type them
    args = [
        "trace", model_path, "--data", data_path, "--calib", calib_path, "--labels",
        labels_path, "--out", trace_path,
    ]
    cmd = [*qdebug, *(os.path.relpath(a, ROOT) if isinstance(a, Path) else a for a in args)]
    print("$ qdebug " + " ".join(cmd[3:]), flush=True)
    rc = subprocess.call(cmd, cwd=ROOT)
    if rc != 0:
        return rc
    from qdebug.cli import cli

    if sys.stdin.isatty() and sys.stdout.isatty() and "view" in cli.commands:
        return subprocess.call([*qdebug, "view", str(trace_path)], cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
