"""The fast calibration route gives the very INT8 model and statistics TF's calibrator gives.

``qdebug.tracer.calibration`` can replace the converter's calibrator (``Calibrator.calibrate``)
by a two-thread run of TFLite's interpreter whose min/max are patched into the calibrator's
flatbuffer; ``QDEBUG_CALIBRATION`` picks the route (``tensorflow``: the calibrator always,
``threads``: the fast route wherever it can promise the same result, unset: auto). This script
holds the promise to account on the real models of the corpus (``bench/corpus.py``):

1. every corpus model the TFLite converter quantizes (Keras files, SavedModel folders, factory
   specs; not ``.tflite`` files nor ``--tflite`` pairs such as the dynamic-range one) is traced
   with the real CLI, ``qdebug trace MODEL --data DATA [extra] --samples 16 --calib-samples 64
   ...`` (the corpus's own command line, ``corpus.trace_argv``), three times, each in a fresh
   process: ``QDEBUG_CALIBRATION=tensorflow``, ``=threads`` and unset (auto);
2. the fresh process is this script's ``--child`` mode: it runs ``qdebug.cli.main`` on those
   arguments and, around each converter calibration, records how long it took and
   ``calibration.last_route`` (which route was taken, and why the calibrator when it was);
3. the ``tensorflow`` and ``threads`` traces are compared bit for bit: the stored INT8 model
   (``/model/int8_tflite``), ``layer_sample_stats()`` and ``output_sample_metrics("sqnr_db")``
   (raw bytes of the arrays: NaN where NaN, -0.0 apart from 0.0), and, as a sweep, every
   dataset of the two files. Where they differ, the INT8 models are compared tensor by tensor
   (quantization, buffers, op order), and a second ``tensorflow`` trace says whether the
   calibrator differs from itself the same way (TF converts an unrolled LSTM with a varying op
   order): a difference under ``last_route == "two threads"`` that the calibrator does not show
   against itself is a bug of the fast route.

    python bench/calibration_check.py                      # every converter model built
    python bench/calibration_check.py --only fer,mtcnn_onet
    python bench/calibration_check.py --table              # the saved results' table

The traces land in ``bench/out/calibration-check/``, the results in
``bench/out/calibration-check.json`` (merged with the models not run this time); a markdown
table is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import corpus  # noqa: E402  (bench/ helper: the registry, its command line and environment)

WORK = BENCH / "out" / "calibration-check"
RESULTS = BENCH / "out" / "calibration-check.json"
SAMPLES = 16
CALIB_SAMPLES = 64
TIMEOUT = 1800.0
ROUTES = ("tensorflow", "threads", "auto")
FAST = "two threads"
"""``calibration.last_route`` when the fast route made the calibrated model."""


# --------------------------------------------------------------------------- the child process


def child(record: Path, args: list[str]) -> None:
    """Run ``qdebug`` on ``args`` here, recording each calibration's route and seconds into
    ``record`` (JSON), whatever the exit."""
    from qdebug.tracer import calibration

    calls: list[dict[str, Any]] = []
    real = calibration.faster_calibration

    @contextlib.contextmanager
    def timed() -> Iterator[None]:
        with real():
            from tensorflow.lite.python.optimize import calibrator as module

            inner = module.Calibrator.calibrate

            def calibrate(self: Any, gen: Any) -> Any:
                start = time.perf_counter()
                try:
                    return inner(self, gen)
                finally:
                    calls.append({"route": calibration.last_route,
                                  "seconds": time.perf_counter() - start})

            module.Calibrator.calibrate = calibrate
            try:
                yield
            finally:
                module.Calibrator.calibrate = inner

    calibration.faster_calibration = timed
    code: Any = 0
    sys.argv = ["qdebug", *args]
    try:
        from qdebug.cli import main

        main()
    except SystemExit as exc:
        code = exc.code
    finally:
        record.write_text(json.dumps({"exit": code if isinstance(code, int) else 1,
                                      "calls": calls}))
    sys.exit(code)


# --------------------------------------------------------------------------- models and runs


def converter_models(folder: Path, only: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """The built corpus models the TFLite converter quantizes: ``(name, build.json)``."""
    found = []
    for spec_path in sorted(folder.glob("*/build.json")):
        name = spec_path.parent.name
        spec = json.loads(spec_path.read_text())
        if only and name not in only:
            continue
        if str(spec["model"]).endswith(".tflite") or "--tflite" in spec["extra"]:
            continue
        found.append((name, spec))
    return found


def cli_args(name: str, spec: dict[str, Any], folder: Path, h5: Path) -> list[str]:
    """The corpus's ``qdebug trace`` arguments for ``name``, writing ``h5``, calibrating on
    ``CALIB_SAMPLES``."""
    argv = corpus.trace_argv(name, spec, folder, SAMPLES)
    args = argv[argv.index("trace"):]
    args[args.index("--out") + 1] = str(h5)
    args[args.index("--calib-samples") + 1] = str(CALIB_SAMPLES)
    return args


def run_trace(args: list[str], route: str, h5: Path) -> dict[str, Any]:
    """One trace in a fresh process under ``QDEBUG_CALIBRATION=route`` (unset for auto)."""
    env = corpus._env()
    env.pop("QDEBUG_CALIBRATION", None)
    if route != "auto":
        env["QDEBUG_CALIBRATION"] = route
    record = h5.with_suffix(".record.json")
    record.unlink(missing_ok=True)
    h5.unlink(missing_ok=True)
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(record), "--", *args]
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=TIMEOUT,
                              check=False, cwd=corpus.ROOT)
        stderr = proc.stderr
    except subprocess.TimeoutExpired:
        stderr = f"timeout after {TIMEOUT:.0f} s"
    took = time.perf_counter() - start
    got = json.loads(record.read_text()) if record.exists() else {"exit": None, "calls": []}
    calls = got["calls"]
    return {
        "env": route, "exit": got["exit"], "wall_s": round(took, 1),
        "routes": [c["route"] for c in calls],
        "calibration_s": round(sum(c["seconds"] for c in calls), 2) if calls else None,
        "error": "" if got["exit"] == 0 else corpus._first_error(stderr),
        "h5": str(h5),
    }


# --------------------------------------------------------------------------- comparing traces


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bit for bit (so NaN-aware): dtype, shape and bytes; strings by value."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return bool(np.array_equal(a, b))
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _datasets(path: Path) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = np.asarray(obj[()])
        f.visititems(visit)
    return out


def api_arrays(path: Path) -> tuple[bytes, dict[str, np.ndarray]]:
    """The stored INT8 model, and the per-sample statistics as the reader gives them."""
    import qdebug

    with qdebug.open(path) as tr:
        stats = {f"layer_sample_stats/{k}": v for k, v in tr.layer_sample_stats().items()}
        stats["output_sample_metrics/sqnr_db"] = tr.output_sample_metrics("sqnr_db")
        return tr.tflite_bytes(), stats


def compare(a: Path, b: Path) -> dict[str, Any]:
    """Whether traces ``a`` and ``b`` hold the same INT8 model and statistics, and where not."""
    model_a, stats_a = api_arrays(a)
    model_b, stats_b = api_arrays(b)
    stats_diff = sorted(k for k in stats_a.keys() | stats_b.keys()
                        if k not in stats_a or k not in stats_b
                        or not same_bits(stats_a[k], stats_b[k]))
    raw_a, raw_b = _datasets(a), _datasets(b)
    raw_diff = sorted(k for k in raw_a.keys() | raw_b.keys()
                      if k not in raw_a or k not in raw_b or not same_bits(raw_a[k], raw_b[k]))
    out: dict[str, Any] = {
        "model_identical": model_a == model_b,
        "stats_identical": not stats_diff,
        "stats_differing": stats_diff,
        "datasets_differing": len(raw_diff),
        "datasets_compared": len(raw_a.keys() | raw_b.keys()),
        "datasets_differing_first": raw_diff[:12],
    }
    if model_a != model_b:
        out["model_diff"] = model_diff(model_a, model_b)
    return out


def _tensor(graph: Any, t: int) -> dict[str, Any]:
    tensor = graph.Tensors(t)
    q = tensor.Quantization()
    scale = q.ScaleAsNumpy().tolist() if q is not None and q.ScaleLength() else []
    zp = q.ZeroPointAsNumpy().tolist() if q is not None and q.ZeroPointLength() else []
    return {"name": tensor.Name().decode(), "type": tensor.Type(), "buffer": tensor.Buffer(),
            "shape": tensor.ShapeAsNumpy().tolist() if tensor.ShapeLength() else [],
            "scale": scale, "zero_point": zp}


def _buffer(model: Any, index: int) -> bytes:
    buf = model.Buffers(index)
    return buf.DataAsNumpy().tobytes() if buf is not None and buf.DataLength() else b""


def _by_name(model: Any, graph: Any) -> dict[str, tuple[dict[str, Any], bytes]]:
    """Each tensor and its data by name (a repeated name gets ``#2``, ``#3``...)."""
    out: dict[str, tuple[dict[str, Any], bytes]] = {}
    for t in range(graph.TensorsLength()):
        d = _tensor(graph, t)
        name, k = d["name"], 1
        while name in out:
            k += 1
            name = f"{d['name']}#{k}"
        out[name] = (d, _buffer(model, d["buffer"]))
    return out


def model_diff(a: bytes, b: bytes, limit: int = 8) -> dict[str, Any]:
    """Where two INT8 flatbuffers differ: op order and the first tensors (by name) whose
    quantization, type, shape or data differ."""
    from tensorflow.lite.python import schema_py_generated as schema

    ma, mb = schema.Model.GetRootAsModel(a, 0), schema.Model.GetRootAsModel(b, 0)
    ga, gb = ma.Subgraphs(0), mb.Subgraphs(0)

    def ops(model: Any, graph: Any) -> list[int]:
        return [max(model.OperatorCodes(graph.Operators(i).OpcodeIndex()).BuiltinCode(),
                    model.OperatorCodes(graph.Operators(i).OpcodeIndex())
                    .DeprecatedBuiltinCode()) for i in range(graph.OperatorsLength())]

    ta, tb = _by_name(ma, ga), _by_name(mb, gb)
    differing = []
    for name in sorted(ta.keys() & tb.keys()):
        (da, ba), (db, bb) = ta[name], tb[name]
        what = [k for k in ("type", "shape", "scale", "zero_point") if da[k] != db[k]]
        if ba != bb:
            what.append("data")
        if what:
            differing.append({"tensor": name, "differs_in": what,
                              **({"scale": [da["scale"][:4], db["scale"][:4]]}
                                 if "scale" in what else {})})
    return {
        "bytes": [len(a), len(b)],
        "ops": [ga.OperatorsLength(), gb.OperatorsLength()],
        "op_order_same": ops(ma, ga) == ops(mb, gb),
        "tensors": [ga.TensorsLength(), gb.TensorsLength()],
        "names_only_in_one": len(ta.keys() ^ tb.keys()),
        "tensors_differing": len(differing),
        "first_differing": differing[:limit],
    }


# --------------------------------------------------------------------------- one model


def check_model(name: str, spec: dict[str, Any], folder: Path, work: Path) -> dict[str, Any]:
    """The three traces of ``name``, compared; a second calibrator trace where they differ."""
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        h5 = work / f"{name}.{route}.h5"
        runs[route] = run_trace(cli_args(name, spec, folder, h5), route, h5)
        print(f"  {name} {route}: exit {runs[route]['exit']}, {runs[route]['wall_s']} s, "
              f"{runs[route]['routes']}", file=sys.stderr, flush=True)
    res: dict[str, Any] = {"model": name, "runs": runs}
    if any(r["exit"] != 0 for r in runs.values()):
        return res
    tf_h5, fast_h5 = Path(runs["tensorflow"]["h5"]), Path(runs["threads"]["h5"])
    res["threads_vs_tensorflow"] = compare(tf_h5, fast_h5)
    res["auto_vs_tensorflow"] = compare(tf_h5, Path(runs["auto"]["h5"]))
    if not _identical(res["threads_vs_tensorflow"]) or not _identical(res["auto_vs_tensorflow"]):
        h5 = work / f"{name}.tensorflow2.h5"
        runs["tensorflow2"] = run_trace(cli_args(name, spec, folder, h5), "tensorflow", h5)
        if runs["tensorflow2"]["exit"] == 0:
            res["tensorflow_vs_tensorflow"] = compare(tf_h5, h5)
    res["verdict"] = verdict(res)
    return res


def _identical(c: dict[str, Any]) -> bool:
    return bool(c["model_identical"] and c["stats_identical"] and not c["datasets_differing"])


def verdict(res: dict[str, Any]) -> str:
    """``identical``, ``calibrator nondeterministic too`` (the threads trace differs from the
    calibrator's no more than the calibrator's own two do), or ``FAST ROUTE DIFFERS``."""
    c = res["threads_vs_tensorflow"]
    fast = FAST in res["runs"]["threads"]["routes"]
    if _identical(c):
        return "identical"
    own = res.get("tensorflow_vs_tensorflow")
    if own is not None and not _identical(own):
        return "calibrator nondeterministic too"
    return "FAST ROUTE DIFFERS" if fast else "differs (calibrator both times)"


# --------------------------------------------------------------------------- the table


def _route_cell(run: dict[str, Any]) -> str:
    return "; ".join(dict.fromkeys(run["routes"])) or "–"


def _yes(c: dict[str, Any] | None, key: str) -> str:
    return "–" if c is None else ("yes" if c[key] else "no")


def markdown(results: list[dict[str, Any]]) -> str:
    head = ("| model | route under `threads` | route auto picks | calibration s: calibrator / "
            "threads / auto | INT8 model identical | statistics identical | all datasets | "
            "verdict |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        runs = r["runs"]
        times = " / ".join("–" if runs[k]["calibration_s"] is None else
                           f"{runs[k]['calibration_s']:.2f}" for k in ROUTES)
        c = r.get("threads_vs_tensorflow")
        raw = "–" if c is None else f"{c['datasets_compared'] - c['datasets_differing']}" \
            f"/{c['datasets_compared']}"
        failed = [f"{k}: exit {v['exit']} {v['error'][:80]}" for k, v in runs.items()
                  if v["exit"] != 0]
        rows.append(
            f"| {r['model']} | {_route_cell(runs['threads'])} | {_route_cell(runs['auto'])} | "
            f"{times} | {_yes(c, 'model_identical')} | {_yes(c, 'stats_identical')} | {raw} | "
            f"{r.get('verdict') or '; '.join(failed)} |".replace("\n", " "))
    return "\n".join(rows)


def save(results: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """Merge ``results`` into ``path`` (by model); return all of them, sorted."""
    old: dict[str, Any] = {}
    if path.exists():
        with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
            old = {r["model"]: r for r in json.loads(path.read_text())["results"]}
    old.update({r["model"]: r for r in results})
    merged = [old[k] for k in sorted(old)]
    path.write_text(json.dumps({"samples": SAMPLES, "calib_samples": CALIB_SAMPLES,
                                "results": merged}, indent=2) + "\n")
    return merged


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(Path(argv[1]), argv[3:])  # --child RECORD -- ARGS...
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated corpus model names")
    parser.add_argument("--corpus", type=Path, default=corpus.DEFAULT_OUT,
                        help="the built corpus (bench/corpus.py --build NAME)")
    parser.add_argument("--work", type=Path, default=WORK, help="where the traces go")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file")
    parser.add_argument("--table", action="store_true",
                        help="print the table of the results file; run nothing")
    args = parser.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    if args.table:
        saved = json.loads(args.json.read_text())["results"]
        print(markdown([r for r in saved if not only or r["model"] in only]))
        return 0
    models = converter_models(args.corpus, only)
    missing = sorted(set(only) - {n for n, _ in models})
    if missing:
        parser.error(f"not built or not a converter model: {', '.join(missing)}")
    results = []
    for name, spec in models:
        print(f"{name}:", file=sys.stderr, flush=True)
        results.append(check_model(name, spec, args.corpus, args.work))
        save(results, args.json)
    print(markdown(results))
    bad = [r["model"] for r in results if r.get("verdict") == "FAST ROUTE DIFFERS"]
    if bad:
        print(f"\nthe fast route differs from the calibrator on: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
