"""Scale: ``qdebug trace`` on a large model over thousands of samples.

EfficientNetB0 (``weights=None``, 64×64×3: 240 layers, the Rescaling/Normalization stem,
swish activations, squeeze-and-excitation multiplies), traced on synthetic images generated on
the fly (so the benchmark's own data does not grow with N), in a fresh process per N:

- peak RSS of the process and the largest RSS while tracing samples, at a small and a large N:
  flat in N means the ratio large/small is ≤ 1.10;
- time per traced sample (the ``trace`` phase: the INT8 model with every tensor preserved, a
  plain INT8 run, the float twin, the numeric-verify model, segment re-runs, statistics and
  writes, with the next batch's interpreters in a worker thread) against plain float Keras
  inference (``model(x)``, same batch size) plus plain INT8 LiteRT inference (same kernels as the
  trace, one interpreter, outputs only), both measured in the same process right after the trace
  on the same samples. Target (issue 22): ≤ 1.2×.

    .venv/bin/python bench/scale.py [--small 200] [--large 2000] [--baseline 300]

Not part of ``make test``; about 8–10 minutes on 2 cores. Results: bench/out/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import OUT, RESULT_TAG, SEED, write_json

SHAPE = (64, 64, 3)
MODEL = OUT / "efficientnetb0_64.keras"
CALIB = 64
BATCH = 16
FLAT = 1.10


def build_model() -> None:
    """Save EfficientNetB0 (random weights, fixed seed) once; later runs reuse the file."""
    if MODEL.exists():
        return
    import keras

    keras.utils.set_random_seed(SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    keras.applications.EfficientNetB0(weights=None, input_shape=SHAPE).save(MODEL)


class Images:
    """``n`` deterministic images in [0, 255] generated one at a time (re-iterable)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        import numpy as np

        yy, xx = np.meshgrid(np.linspace(0, 1, SHAPE[0]), np.linspace(0, 1, SHAPE[1]),
                             indexing="ij")
        for i in range(self.n):
            rng = np.random.default_rng(self.seed * 100_003 + i)
            f = rng.uniform(0.5, 4.0, (SHAPE[2], 2))
            img = np.stack([np.sin(2 * np.pi * (a * yy + b * xx)) for a, b in f], axis=-1)
            img += rng.normal(0, 0.1, img.shape)
            yield ((img + 1.5) * 85).clip(0, 255).astype(np.float32)


def _baselines(model: Any, tflite: bytes, data: Any, n: int) -> dict[str, float]:
    """Seconds per sample of plain float Keras and plain INT8 LiteRT on the first ``n``."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    samples = [x for _, x in zip(range(n), data, strict=False)]
    model(np.stack(samples[:BATCH]))  # warm-up (graph tracing)
    start = time.perf_counter()
    for i in range(0, n, BATCH):
        chunk = samples[i : i + BATCH]
        chunk += [chunk[-1]] * (BATCH - len(chunk))
        np.asarray(model(np.stack(chunk), training=False))
    keras_s = (time.perf_counter() - start) / n
    interp = Interpreter(
        model_content=tflite,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    out = interp.get_output_details()[0]["index"]
    start = time.perf_counter()
    for x in samples:
        interp.set_tensor(inp, x[None])
        interp.invoke()
        interp.get_tensor(out)
    lite_s = (time.perf_counter() - start) / n
    return {"keras_float_s": keras_s, "litert_int8_s": lite_s}


def worker(n: int, baseline: int) -> dict[str, Any]:
    """One run in this (fresh) process: trace N samples, then the baselines."""
    from _worker import RssSampler, Timers, instrument_qdebug, peak_rss_mb

    from qdebug.tracer.tfenv import import_tf

    import_tf()
    import keras
    import numpy as np

    import qdebug

    model = keras.models.load_model(MODEL, compile=False)
    calib = np.stack(list(Images(CALIB, seed=3)))
    timers = Timers()
    phases = instrument_qdebug(timers)
    out = OUT / f"scale-{n}.h5"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    with RssSampler(timers) as sampler:
        path = qdebug.trace(model, Images(n, seed=7), calib=calib, calib_samples=CALIB,
                            out=out, quiet=True, batch_size=BATCH)
    work = time.perf_counter() - start
    result: dict[str, Any] = {
        "n": n, "work_s": work, "phases_s": phases,
        "trace_s_per_sample": phases["trace"] / n, "calls": timers.as_dict(),
        "peak_rss_mb": peak_rss_mb(),
        "trace_phase_max_rss_mb": sampler.max_mb.get("trace", float("nan")),
        "trace_bytes": Path(path).stat().st_size,
    }
    with qdebug.open(path) as tr:
        tflite = tr.tflite_bytes()
        result["layers"] = len(tr.layers)
    Path(path).unlink()
    if baseline:
        result.update(_baselines(model, tflite, Images(baseline, seed=7), baseline))
    return result


def _run(n: int, baseline: int) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", str(n), "--baseline", str(baseline)],
        capture_output=True, text=True, env=env, timeout=1500, check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-30:])
        raise RuntimeError(f"worker N={n} failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_TAG):])
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--small", type=int, default=200)
    p.add_argument("--large", type=int, default=2000)
    p.add_argument("--baseline", type=int, default=300, help="samples for the baselines")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(RESULT_TAG + json.dumps(worker(args.worker, args.baseline)), flush=True)
        return
    build_model()
    t0 = time.perf_counter()
    small = _run(args.small, 0)
    print(f"N={args.small}: peak RSS {small['peak_rss_mb']:.0f} MB, while tracing "
          f"{small['trace_phase_max_rss_mb']:.0f} MB, {small['work_s']:.0f} s", flush=True)
    large = _run(args.large, args.baseline)
    print(f"N={args.large}: peak RSS {large['peak_rss_mb']:.0f} MB, while tracing "
          f"{large['trace_phase_max_rss_mb']:.0f} MB, {large['work_s']:.0f} s", flush=True)
    plain = large["keras_float_s"] + large["litert_int8_s"]
    summary = {
        "model": f"EfficientNetB0 weights=None {SHAPE}", "layers": large["layers"],
        "peak_ratio": large["peak_rss_mb"] / small["peak_rss_mb"],
        "trace_phase_ratio": large["trace_phase_max_rss_mb"] / small["trace_phase_max_rss_mb"],
        "ms_per_sample": {
            "qdebug_trace": 1000 * large["trace_s_per_sample"],
            "keras_float": 1000 * large["keras_float_s"],
            "litert_int8": 1000 * large["litert_int8_s"],
        },
        "time_ratio": large["trace_s_per_sample"] / plain,
        "total_s": time.perf_counter() - t0,
        "runs": {"small": small, "large": large},
    }
    write_json("scale", summary)
    ms = summary["ms_per_sample"]
    print(f"{summary['model']}, {summary['layers']} layers")
    print(f"memory {args.small} → {args.large} samples: peak {summary['peak_ratio']:.2f}×, "
          f"while tracing {summary['trace_phase_ratio']:.2f}× (flat: ≤ {FLAT}×)")
    print(f"per sample: qdebug {ms['qdebug_trace']:.1f} ms vs float Keras "
          f"{ms['keras_float']:.1f} ms + INT8 LiteRT {ms['litert_int8']:.1f} ms = "
          f"{summary['time_ratio']:.2f}× (target ≤ 1.2×); total {summary['total_s']:.0f} s")


if __name__ == "__main__":
    main()
