"""One benchmark run in a fresh process: ``qdebug`` (qdebug.trace) or ``debugger`` (TFLite's
QuantizationDebugger) on the bench model and the first N samples. Prints one JSON line tagged
``BENCH_RESULT`` with import, setup and work times, a phase breakdown, and peak RSS."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The qdebug next to this bench/ folder, even when another checkout is installed in the venv.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from _common import MODELS, OUT, RESULT_TAG, load_model, load_samples


def git_commit() -> str:
    """The commit of the checkout holding this script (and whether it has local edits)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "qdebug"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+local edits in qdebug/" if dirty else "")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far: ``VmHWM``, its own address space's
    (Linux's ``ru_maxrss`` carries over the parent's peak at the fork that started it)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Current resident set size, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class SyntheticSamples:
    """A re-iterable source of ``n`` deterministic images generated on the fly, so that the
    benchmark's own data does not grow the process with N (a 2,000-sample array is 220 MB)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Any]:
        from _common import synthetic_images

        for i in range(self.n):
            yield synthetic_images(1, self.seed * 100_003 + i)[0]


class RssSampler:
    """Samples VmRSS every ``interval`` seconds in a thread; keeps the maximum per phase."""

    def __init__(self, timers: Timers, interval: float = 0.02) -> None:
        import threading

        self.timers = timers
        self.interval = interval
        self.max_mb: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            rss = current_rss_mb()
            key = self.timers.phase
            self.max_mb[key] = max(self.max_mb.get(key, 0.0), rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Timers:
    """Accumulated seconds and call counts, keyed by ``phase/what``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.phase = "setup"

    def wrap(self, owner: Any, attr: str, label: str | Callable[..., str]) -> None:
        """Time every call of ``owner.attr`` (a function on a class or module)."""
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            name = label(*args) if callable(label) else label
            key = f"{self.phase}/{name}"
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - start
                self.calls[key] += 1

        setattr(owner, attr, timed)

    def as_dict(self) -> dict[str, Any]:
        return {
            k: {"s": round(v, 4), "calls": self.calls[k]} for k, v in sorted(self.seconds.items())
        }


def instrument_qdebug(timers: Timers) -> dict[str, float]:
    """Wrap qdebug's phases and its hot calls with timers (about 1 µs per call: negligible
    next to an interpreter invoke). Returns the per-phase wall times, filled while tracing."""
    from qdebug import metrics, sums
    from qdebug.progress import Phases
    from qdebug.store.writer import TraceWriter
    from qdebug.tracer import convert, graph, litert, measure, pipeline
    from qdebug.tracer import segment_runner as segments

    phases: dict[str, float] = {}
    step, bar = Phases.step, Phases.bar

    def phase(original: Callable[..., Any]) -> Callable[..., Any]:
        @contextlib.contextmanager
        def timed(self: Any, name: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
            timers.phase = name
            start = time.perf_counter()
            with original(self, name, *args, **kwargs) as value:
                yield value
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
            timers.phase = "between phases"

        return timed

    Phases.step = phase(step)  # type: ignore[method-assign]
    Phases.bar = phase(bar)  # type: ignore[method-assign]

    kinds: dict[int, str] = {}
    init = litert.LiteModel.__init__

    preserved = ["int8 (preserve all)", "float twin"]  # the order the tracer creates them

    def lite_init(
        self: Any, content: bytes, *, preserve: bool = True, xnnpack: bool = False
    ) -> None:
        init(self, content, preserve=preserve, xnnpack=xnnpack)
        if not preserve:
            kinds[id(self)] = "int8 plain"
        else:
            done = sum(1 for k in kinds.values() if k in preserved)
            kinds[id(self)] = preserved[done] if done < len(preserved) else "lite"

    litert.LiteModel.__init__ = lite_init  # type: ignore[method-assign]
    timers.wrap(litert.LiteModel, "invoke", lambda self, *a: f"invoke {kinds.get(id(self))}")
    timers.wrap(litert.LiteModel, "get", lambda self, *a: f"get_tensor {kinds.get(id(self))}")
    timers.wrap(graph.Probe, "__call__", "keras probe")
    timers.wrap(sums, "sample_stats", "sums.sample_stats")
    timers.wrap(sums, "tensor_stats", "sums.tensor_stats (accumulated + local, one pass)")
    timers.wrap(sums, "error_arrays", "sums.error_arrays (q, e, ranges)")
    timers.wrap(metrics, "top1_match", "metrics.top1_match")
    timers.wrap(TraceWriter, "add_batch", "hdf5 add_batch")
    timers.wrap(TraceWriter, "store_samples_of", "hdf5 store_samples_of")
    timers.wrap(TraceWriter, "commit", "hdf5 commit")
    timers.wrap(convert, "convert_int8", "convert_int8")
    timers.wrap(convert, "convert_float", "convert_float")
    timers.wrap(convert, "convert_int8_and_twin", "convert (INT8 + float twin, one calibration)")
    # The propagation analysis, reported apart: re-running each layer on the int8 inputs, its
    # statistics, per-channel sums, and the weight comparison.
    timers.wrap(measure.Measurer, "_decompose", "analysis: decomposition (total)")
    timers.wrap(segments.SegmentRunner, "__call__", "analysis: segment re-run f(x̂)")
    timers.wrap(sums, "local_stats", "analysis: sums.local_stats")
    timers.wrap(measure.Measurer, "_channels", "analysis: per-channel sums")
    timers.wrap(pipeline, "weight_stats", "analysis: weight statistics")
    return phases


def run_qdebug(model: Any, data: Any, calib: Any, args: argparse.Namespace) -> dict[str, Any]:
    import qdebug

    timers = Timers()
    phases = instrument_qdebug(timers) if args.breakdown or args.rss_by_phase else {}
    out = OUT / f"trace-{args.model}-{args.n}.h5"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    kwargs: dict[str, Any] = {"out": out, "calib": calib, "calib_samples": len(calib),
                              "samples": args.n, "quiet": True}
    if args.store_samples is not None:
        kwargs["store_samples"] = args.store_samples
    sampler = RssSampler(timers) if args.rss_by_phase else contextlib.nullcontext()
    with sampler:
        path = qdebug.trace(model, data, **kwargs)
    work = time.perf_counter() - start
    size = Path(path).stat().st_size
    if not args.keep:
        Path(path).unlink()
    result: dict[str, Any] = {"work_s": work, "phases_s": phases, "calls": timers.as_dict(),
                              "trace_bytes": size}
    if isinstance(sampler, RssSampler):
        result["max_rss_by_phase_mb"] = sampler.max_mb
    return result


def per_input(sample: Any) -> list[Any]:
    """One sample (an array, or one array per input) as a batch of one per input."""
    return [x[None] for x in sample] if isinstance(sample, list) else [sample[None]]


def as_samples(arrays: list[Any]) -> Any:
    """One array per input as qdebug and the debugger take them: the array of a one-input
    model, else a list of samples, each one array per input."""
    if len(arrays) == 1:
        return arrays[0]
    return [list(s) for s in zip(*arrays, strict=True)]


def run_debugger(model: Any, data: Any, calib: Any, args: argparse.Namespace) -> dict[str, Any]:
    import tensorflow as tf

    def representative() -> Iterator[list[Any]]:
        for x in calib:
            yield per_input(x)

    def debug_dataset() -> Iterator[list[Any]]:
        for x in data[: args.n]:
            yield per_input(x)

    start = time.perf_counter()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=conv, debug_dataset=debug_dataset
    )
    built = time.perf_counter()
    debugger.run()
    work = time.perf_counter() - start
    return {
        "work_s": work,
        "phases_s": {"calibrate + quantize (debug model)": built - start,
                     "run": work - (built - start)},
        "layers": len(debugger.layer_statistics),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("tool", choices=["qdebug", "debugger"])
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--model", choices=sorted(MODELS), default="mobilenetv2")
    p.add_argument("--store-samples", type=int, default=None, help="default: qdebug's own")
    p.add_argument("--breakdown", action="store_true", help="time qdebug's phases and hot calls")
    p.add_argument("--keep", action="store_true", help="keep the trace file")
    p.add_argument("--source", choices=["npy", "synthetic"], default="npy",
                   help="npy: the first N samples of bench/out/data.npy, in memory (timing); "
                   "synthetic: generated on the fly (memory)")
    p.add_argument("--rss-by-phase", action="store_true",
                   help="sample RSS every 20 ms and keep the maximum of each qdebug phase")
    args = p.parse_args()

    t0 = time.perf_counter()
    which = MODELS[args.model]
    from qdebug.tracer.tfenv import import_tf

    import_tf()
    import keras  # noqa: F401

    if which.model.suffix == ".h5" and which.kind:
        import tf_keras  # noqa: F401

    # Import cost belongs to "imports", not to "work".
    import qdebug.tracer.pipeline
    t1 = time.perf_counter()
    model = load_model(which)
    data: Any
    if args.source == "npy":
        data = as_samples(load_samples(which.data, args.n))
    else:
        data = SyntheticSamples(args.n, seed=7)
    calib = as_samples(load_samples(which.calib))
    t2 = time.perf_counter()
    rss_before = current_rss_mb()
    peak_before = peak_rss_mb()
    run = run_qdebug if args.tool == "qdebug" else run_debugger
    result = run(model, data, calib, args)
    import qdebug

    result.update(
        qdebug_src=str(Path(qdebug.__file__).parent), git_commit=git_commit(),
        tool=args.tool, n=args.n, model=args.model, calib_samples=len(calib),
        import_s=t1 - t0, setup_s=t2 - t1,
        rss_before_work_mb=rss_before, peak_rss_before_work_mb=peak_before,
        peak_rss_mb=peak_rss_mb(),
    )
    print(RESULT_TAG + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
