"""Wall time of ``qdebug trace`` against TFLite's QuantizationDebugger on the same model and the
same samples, each run in a fresh process.

Both tools convert each bench model (MobileNetV2 alpha 0.35 96×96 with non-trivial BatchNorm
statistics, the trained deep residual net of examples/, and the three kinds of bench/kinds.py:
a subclassed VGG-style model in a functional one, a two-input Conv1D model, an unrolled LSTM
with attention) with the same converter settings
(Optimize.DEFAULT, a 200-sample representative dataset, TFLITE_BUILTINS_INT8) and then run N
samples. "work" is measured inside the process from the start of the work (before the converter
is created) to its end; "process" is the whole subprocess, imports included. The target is
qdebug ≤ 0.8× the debugger on both (issue 22), measured in the same run.

    .venv/bin/python bench/trace_vs_debugger.py [--samples 32 256] [--repeat 1] [--models ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CALIB_SAMPLES, MODELS, prepare_model, run_worker, write_json

TARGET = 0.8


def measure(
    samples: list[int], repeat: int, log: Any = print, models: list[str] | None = None
) -> dict[str, Any]:
    """Run both tools ``repeat`` times per model and N, alternating them; keep every run."""
    names = models or list(MODELS)
    sizes = {name: list(MODELS[name].samples or samples) for name in names}
    for name in names:
        prepare_model(MODELS[name], max(sizes[name]))
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        for n in sizes[name]:
            for r in range(repeat):
                for tool in ("qdebug", "debugger"):
                    args = [tool, "--n", str(n), "--model", name]
                    args += ["--breakdown"] if tool == "qdebug" else []
                    result = run_worker(args)
                    runs.setdefault(f"{tool}/{name}/{n}", []).append(result)
                    log(f"  {name:<14} {tool:<8} N={n:<4} run {r + 1}/{repeat}: work "
                        f"{result['work_s']:6.2f}s, process {result['process_wall_s']:6.2f}s "
                        f"(imports {result['import_s']:.1f}s, "
                        f"model+data load {result['setup_s']:.1f}s)")
    rows = []
    for name in names:
        for n in sizes[name]:
            qs, ds = runs[f"qdebug/{name}/{n}"], runs[f"debugger/{name}/{n}"]
            q = min(qs, key=lambda x: x["work_s"])
            d = min(ds, key=lambda x: x["work_s"])
            q_proc = min(x["process_wall_s"] for x in qs)
            d_proc = min(x["process_wall_s"] for x in ds)
            rows.append({
                "model": name,
                "n": n,
                "qdebug_work_s": q["work_s"],
                "debugger_work_s": d["work_s"],
                "ratio": q["work_s"] / d["work_s"],
                "qdebug_process_s": q_proc,
                "debugger_process_s": d_proc,
                "process_ratio": q_proc / d_proc,
                "qdebug_import_s": statistics.median(x["import_s"] for x in qs),
                "debugger_import_s": statistics.median(x["import_s"] for x in ds),
                "qdebug_phases_s": q["phases_s"],
                "qdebug_calls": q["calls"],
                "debugger_phases_s": d["phases_s"],
                "debugger_layers": d.get("layers"),
                "trace_bytes": q.get("trace_bytes"),
                "git_commit": q.get("git_commit"),
            })
    return {"models": {n: MODELS[n].description for n in names},
            "calib_samples": CALIB_SAMPLES, "repeat": repeat, "target_ratio": TARGET,
            "rows": rows, "runs": runs}


def report(result: dict[str, Any], log: Any = print) -> None:
    """Print the table, the ratios and qdebug's phase breakdown."""
    log("")
    log(f"{'model':<14} | {'N':>4} | {'qdebug work':>11} | {'debugger work':>13} | "
        f"{'ratio':>6} | {'process q/d':>13} | {'ratio':>6}")
    log("-" * 86)
    for row in result["rows"]:
        log(f"{row['model']:<14} | {row['n']:>4} | {row['qdebug_work_s']:>10.2f}s | "
            f"{row['debugger_work_s']:>12.2f}s | {row['ratio']:>5.2f}× | "
            f"{row['qdebug_process_s']:>5.1f}s/{row['debugger_process_s']:.1f}s | "
            f"{row['process_ratio']:>5.2f}×")
    for row in result["rows"]:
        worst = max(row["ratio"], row["process_ratio"])
        ok = "meets" if worst <= result["target_ratio"] else "MISSES"
        log(f"{row['model']} N={row['n']}: qdebug/debugger = {row['ratio']:.2f}× work, "
            f"{row['process_ratio']:.2f}× whole process ({ok} the ≤ "
            f"{result['target_ratio']:.1f}× target)")
    for row in result["rows"]:
        log("")
        log(f"qdebug phases, {row['model']} N={row['n']} (debugger: " + ", ".join(
            f"{k} {v:.2f}s" for k, v in row["debugger_phases_s"].items()) + ")")
        for name, sec in row["qdebug_phases_s"].items():
            log(f"  {name:<40} {sec:7.2f}s")
            prefix = name + "/"
            for key, c in sorted(row["qdebug_calls"].items(), key=lambda kv: -kv[1]["s"]):
                if key.startswith(prefix) and c["s"] >= 0.005:
                    what = key[len(prefix):]
                    log(f"      {what:<36} {c['s']:7.2f}s  ({c['calls']} calls)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, nargs="+", default=[32, 256])
    p.add_argument("--repeat", type=int, default=1, help="runs per tool and N (the best is kept)")
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None)
    args = p.parse_args()
    start = time.perf_counter()
    result = measure(args.samples, args.repeat, models=args.models)
    report(result)
    path = write_json("trace_vs_debugger", result)
    print(f"\nwrote {path} ({time.perf_counter() - start:.0f}s)")


if __name__ == "__main__":
    main()
