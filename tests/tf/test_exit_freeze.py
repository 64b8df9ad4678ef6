"""A script that called ``qdebug.trace`` exits without Python's last collections walking
TensorFlow's objects (``qdebug.tracer.tfenv.freeze_at_exit``): the heap is frozen only as the
interpreter exits, never before, and ``QDEBUG_EXIT_GC=1`` keeps the collections."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import atexit, gc, sys
import numpy as np
# Registered before the trace, so it runs after qdebug's own exit hook (atexit is LIFO).
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0, flush=True))
import keras
import qdebug

keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
                          keras.layers.Dense(3)])
x = np.random.default_rng(0).normal(size=(16, 8)).astype("float32")
qdebug.trace(model, x, calib=x, out=sys.argv[1], quiet=True)
print("frozen after the trace:", gc.get_freeze_count() > 0, flush=True)

class Cycle:
    def __init__(self):
        self.me = self

for _ in range(50):
    Cycle()
print("cycles made after the trace collected:", gc.collect() >= 50, flush=True)
"""


@pytest.mark.parametrize("keep", [False, True], ids=["default", "QDEBUG_EXIT_GC=1"])
def test_the_heap_is_frozen_only_as_the_process_exits(tmp_path: Path, keep: bool) -> None:
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "QDEBUG_EXIT_GC"}
    if keep:
        env["QDEBUG_EXIT_GC"] = "1"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "t.h5")], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "frozen after the trace: False" in done.stdout
    assert "cycles made after the trace collected: True" in done.stdout
    assert f"frozen at exit: {not keep}" in done.stdout
    assert (tmp_path / "t.h5").stat().st_size > 0
