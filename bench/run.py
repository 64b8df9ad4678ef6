"""``make bench``: qdebug against TFLite's QuantizationDebugger (wall time, N = 32 and 256 on two
models, one N each on the three kinds of bench/kinds.py), qdebug's peak memory at 100 vs 2,000
samples, then the scale run (EfficientNetB0 over 2,000 samples against plain inference),
``qdebug view``'s first screen on a ~2 GB trace against a small one, and the storage choices'
cost, the ai-edge-quantizer route beside the converter's, and ``qdebug trace`` from the shell
against the debugger script; a summary at the end. Results:
bench/out/*.json.

    .venv/bin/python bench/run.py [--repeat 2] [--skip-memory] [--skip-speed] [--skip-scale]
                                  [--skip-view] [--skip-size] [--skip-aeq] [--skip-cli]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import memory
import trace_vs_debugger
from _common import write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=2,
                   help="timing runs per tool and N; the best of each is compared")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--skip-view", action="store_true")
    p.add_argument("--skip-size", action="store_true")
    p.add_argument("--skip-aeq", action="store_true")
    p.add_argument("--skip-cli", action="store_true")
    args = p.parse_args()
    start = time.perf_counter()
    summary: list[str] = []
    out: dict[str, object] = {}
    if not args.skip_speed:
        print("== speed: qdebug trace vs QuantizationDebugger (fresh process per run) ==")
        speed = trace_vs_debugger.measure([32, 256], args.repeat)
        trace_vs_debugger.report(speed)
        write_json("trace_vs_debugger", speed)
        out["speed"] = speed["rows"]
        for row in speed["rows"]:
            worst = max(row["ratio"], row["process_ratio"])
            ok = "ok" if worst <= speed["target_ratio"] else "MISS"
            summary.append(
                f"speed  {row['model']:<14} N={row['n']:<4} qdebug {row['qdebug_work_s']:6.2f}s "
                f"debugger {row['debugger_work_s']:6.2f}s  ratio {row['ratio']:.2f}× work, "
                f"{row['process_ratio']:.2f}× process (target ≤ {speed['target_ratio']:.1f}×) {ok}"
            )
    if not args.skip_memory:
        print("\n== memory: qdebug trace at 100 vs 2,000 samples ==")
        mem = memory.measure(100, 2000)
        memory.report(mem)
        write_json("memory", mem)
        out["memory"] = {k: v for k, v in mem.items() if k != "runs"}
        worst = max(mem["peak_ratio"], mem["trace_phase_ratio"])
        ok = "ok" if worst <= mem["flat_threshold"] else "MISS"
        summary.append(
            f"memory peak RSS {mem['peak_rss_mb'][100]:.0f} MB → {mem['peak_rss_mb'][2000]:.0f} MB"
            f" ({mem['peak_ratio']:.2f}×); while tracing {mem['trace_phase_max_rss_mb'][100]:.0f}"
            f" MB → {mem['trace_phase_max_rss_mb'][2000]:.0f} MB ({mem['trace_phase_ratio']:.2f}×)"
            f" {ok}"
        )
    bench = Path(__file__).resolve().parent
    others = (
        ("scale", args.skip_scale, ["scale.py"]),
        ("view", args.skip_view,
         ["view_startup.py", "--layers", "800", "--samples", "5000", "--stored", "80"]),
        ("size", args.skip_size, ["trace_size.py"]),
        ("aeq", args.skip_aeq, ["aeq_route.py", "--repeat", "1"]),
        ("cli", args.skip_cli, ["cli_process.py", "--repeat", str(args.repeat)]),
    )
    for name, skip, argv in others:
        if skip:
            continue
        print(f"\n== {name}: {' '.join(argv)} ==", flush=True)
        proc = subprocess.run([sys.executable, str(bench / argv[0]), *argv[1:]],
                              capture_output=True, text=True, check=False)
        print(proc.stdout, end="")
        lines = [ln for ln in proc.stdout.splitlines() if "×" in ln]
        # the verdict line, or for the size table qdebug's own choice
        lines = [ln for ln in lines if "(qdebug)" in ln] or lines
        summary.append(f"{name:<6} " + (lines[-1].strip() if lines and proc.returncode == 0 else
                                         f"FAILED (exit {proc.returncode}): "
                                         + (proc.stderr.strip().splitlines() or ["?"])[-1]))
    write_json("summary", {"lines": summary, **out})
    print("\n== summary ==")
    for line in summary:
        print(line)
    print(f"(bench took {time.perf_counter() - start:.0f}s; JSON in bench/out/)")


if __name__ == "__main__":
    main()
