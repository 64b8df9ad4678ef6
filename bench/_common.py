"""Shared pieces of the benchmarks: the model, the samples, and running a worker in a fresh
subprocess that reports JSON on its last stdout line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kinds

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
MODEL_PATH = OUT / "mobilenetv2_a035_96.keras"
CALIB_PATH = OUT / "calib.npy"
DATA_PATH = OUT / "data.npy"
SEED = 1234
SHAPE = (96, 96, 3)
CALIB_SAMPLES = 200
"""Calibration set size for both tools (qdebug's default ``--calib-samples``)."""
RESULT_TAG = "BENCH_RESULT "


def synthetic_images(
    n: int, seed: int, shape: tuple[int, int, int] = SHAPE, lo: float = -1.0, hi: float = 1.0
) -> Any:
    """``n`` deterministic smooth images in [lo, hi] (default [-1, 1], MobileNetV2's input
    range): a few random low-frequency sinusoids per channel plus a little noise. No
    downloads."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w, c = shape
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    out = np.empty((n, h, w, c), dtype=np.float32)
    for i in range(n):
        img = np.zeros((h, w, c), dtype=np.float64)
        for _ in range(4):
            fy, fx = rng.uniform(0.5, 4.0, 2)
            phase = rng.uniform(0, 2 * np.pi)
            amp = rng.uniform(0.2, 0.6, c)
            img += np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)[..., None] * amp
        img += rng.normal(0, 0.05, img.shape)
        img = np.clip(img / max(np.abs(img).max(), 1e-6), -1, 1)
        out[i] = img if (lo, hi) == (-1.0, 1.0) else lo + (img + 1) * 0.5 * (hi - lo)
    return out


def build_model() -> Any:
    """MobileNetV2 (alpha 0.35, 96×96, random weights) with non-trivial BatchNorm statistics:
    moving mean/variance and gamma/beta set from a fixed-seed generator, so that BN is not the
    identity (an identity BN would be a too-easy case for the converter and for matching)."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(SEED)
    model = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=SHAPE)
    rng = np.random.default_rng(SEED)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                rng.normal(0.0, 0.1, beta.shape).astype(np.float32),
                rng.normal(0.0, 0.2, mean.shape).astype(np.float32),
                rng.uniform(0.5, 2.0, var.shape).astype(np.float32),
            ])
    return model


def prepare(max_samples: int) -> None:
    """Write the model, the calibration set and ``max_samples`` traced samples to bench/out/
    (once; later runs reuse them so every worker sees the very same model and samples)."""
    import numpy as np

    OUT.mkdir(parents=True, exist_ok=True)
    if not MODEL_PATH.exists():
        build_model().save(MODEL_PATH)
    if not CALIB_PATH.exists():
        np.save(CALIB_PATH, synthetic_images(CALIB_SAMPLES, SEED + 1))
    if not DATA_PATH.exists() or len(np.load(DATA_PATH, mmap_mode="r")) < max_samples:
        np.save(DATA_PATH, synthetic_images(max_samples, SEED + 2))


@dataclass(frozen=True)
class BenchModel:
    """A model both tools are timed on, with its traced samples and calibration set."""

    name: str
    description: str
    model: Path
    data: Path
    calib: Path
    samples: tuple[int, ...] = ()
    """The N it is timed at (empty: the bench's own, 32 and 256)."""
    kind: str = ""
    """A model of bench/kinds.py (built and loaded there); empty: a plain Keras file."""


DEEP_RESIDUAL = BenchModel(
    "deep_residual",
    "examples/deep_residual.py: 12 residual blocks (52 Keras layers), trained on digits",
    OUT / "deep_residual.keras", OUT / "digits_data.npy", OUT / "digits_calib.npy",
)
MOBILENETV2 = BenchModel(
    "mobilenetv2", "MobileNetV2 alpha=0.35 96x96, random weights, random BN statistics",
    MODEL_PATH, DATA_PATH, CALIB_PATH,
)
KINDS = tuple(
    BenchModel(name, description, OUT / f"{name}{kinds.SUFFIX[name]}", OUT / f"{name}_data.npz",
               OUT / f"{name}_calib.npz", (n,), name)
    for name, description, n in (
        ("vgg_edges", "subclassed VGG16-style edge detector in a functional model, 128x128", 24),
        ("char_conv1d", "two-input Conv1D/TimeDistributed char model (Keras 3, .keras)", 192),
        ("lstm_attention", "2 unrolled LSTMs + attention (tf_keras, ~1,200 ops)", 96),
    )
)
MODELS = {m.name: m for m in (MOBILENETV2, DEEP_RESIDUAL, *KINDS)}


def load_model(which: BenchModel) -> Any:
    """The bench model, loaded as its user would."""
    if which.kind:
        return kinds.load(which.kind, which.model)
    import keras

    return keras.models.load_model(which.model)


def load_samples(path: Path, n: int | None = None) -> list[Any]:
    """The first ``n`` samples of a bench ``.npy`` or ``.npz`` (one array per input), as one
    array per input."""
    import numpy as np

    if path.suffix == ".npy":
        return [np.ascontiguousarray(np.load(path, mmap_mode="r")[:n])]
    with np.load(path) as z:
        return [np.ascontiguousarray(z[k][:n]) for k in z.files]


def prepare_model(which: BenchModel, max_samples: int) -> None:
    """Build ``which`` and its samples into bench/out/ once (later runs reuse them)."""
    if which is MOBILENETV2:
        prepare(max_samples)
        return
    import numpy as np

    OUT.mkdir(parents=True, exist_ok=True)
    if which.kind:
        if not (which.model.exists() and which.data.exists() and which.calib.exists()):
            run_script("import kinds; from pathlib import Path; kinds.build_and_save("
                       f"{which.kind!r}, Path({str(which.model)!r}), Path({str(which.data)!r}), "
                       f"Path({str(which.calib)!r}), {max(which.samples)}, {CALIB_SAMPLES})")
        return
    sys.path.insert(0, str(BENCH.parent / "examples"))
    import deep_residual

    if not which.model.exists():
        deep_residual.build().save(which.model)
    images = deep_residual.data()
    if not which.calib.exists():
        np.save(which.calib, images[:CALIB_SAMPLES])
    if not which.data.exists() or len(np.load(which.data, mmap_mode="r")) < max_samples:
        rest = images[CALIB_SAMPLES:]
        np.save(which.data, np.concatenate([rest] * (max_samples // len(rest) + 1))[:max_samples])


def run_script(code: str) -> None:
    """Run ``code`` in a fresh process (a model built there leaves no TensorFlow state here)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(BENCH)!r}); "
                    "from qdebug.tracer.tfenv import import_tf; import_tf(); " + code],
                   env=env, check=True)


def run_worker(args: list[str], timeout: float = 900.0) -> dict[str, Any]:
    """Run ``python bench/_worker.py ARGS`` in a fresh process; return its JSON result."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0",
           "PYTHONHASHSEED": "0"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(BENCH / "_worker.py"), *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-30:])
        raise RuntimeError(f"worker {args} failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_TAG):])
    result["process_wall_s"] = wall
    return result


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to bench/out/NAME.json."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
