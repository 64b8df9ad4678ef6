"""The whole process as a user meets it from the shell: ``qdebug trace`` against a script that
runs TFLite's QuantizationDebugger, on the same model, samples and calibration.

``trace_vs_debugger.py`` times ``qdebug.trace`` inside a script (the bench worker), where
starting Python, the imports and the script's exit are the script's and the same for both
tools. Here qdebug is its command line, which ends its process itself; the debugger is the
bench worker's debugger script (``_worker.py debugger``: load, convert with the same settings,
``QuantizationDebugger.run()``; it also imports qdebug's tracer, 0.09 s after TensorFlow, which
favours qdebug by that much). The two alternate, each in a fresh process, ``--repeat`` times;
the best wall time of each is compared.

    .venv/bin/python bench/cli_process.py [--models deep_residual char_conv1d] [--repeat 2]

Every bench model: the ones saved whole are given as their files; ``vgg_edges``, saved as
the weights of a subclassed model, as the factory its user would write
(``bench/kinds.py:vgg_edges_trained``: build the model, load the weights), which the command
line imports and calls. Results: ``bench/out/cli_process.json``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MODELS, prepare_model, run_worker, write_json

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.8
CLI_MODELS = ("mobilenetv2", "deep_residual", "vgg_edges", "char_conv1d", "lstm_attention")
FACTORIES = {"vgg_edges": "bench/kinds.py:vgg_edges_trained"}
"""The MODEL argument of a model not saved whole: the factory that loads it."""
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0",
       "PYTHONHASHSEED": "0"}


def qdebug_cli(name: str, n: int, out: Path) -> float:
    """Wall seconds of ``python -m qdebug trace`` on bench model ``name``."""
    m = MODELS[name]
    argv = [sys.executable, "-m", "qdebug", "trace", FACTORIES.get(name, str(m.model)),
            "--data", str(m.data),
            "--calib", str(m.calib), "--samples", str(n), "--out", str(out), "--quiet"]
    start = time.perf_counter()
    subprocess.run(argv, env=ENV, cwd=ROOT, check=True, capture_output=True, timeout=900)
    wall = time.perf_counter() - start
    out.unlink(missing_ok=True)
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(CLI_MODELS), choices=CLI_MODELS)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    rows: list[dict[str, Any]] = []
    out = ROOT / "bench" / "out" / "cli-trace.h5"
    for name in args.models:
        m = MODELS[name]
        n = max(m.samples) if m.samples else 32
        prepare_model(m, n)
        q, d = [], []
        for _ in range(args.repeat):
            q.append(qdebug_cli(name, n, out))
            d.append(run_worker(["debugger", "--n", str(n), "--model", name])["process_wall_s"])
        rows.append({"model": name, "n": n, "qdebug_cli_s": min(q), "debugger_script_s": min(d),
                     "ratio": min(q) / min(d), "runs": {"qdebug": q, "debugger": d}})
        print(f"{name:15s} N={n:<4d} qdebug trace {min(q):6.2f} s   debugger script "
              f"{min(d):6.2f} s   {min(q) / min(d):.2f}×", flush=True)
    write_json("cli_process", {"rows": rows, "target_ratio": TARGET})
    worst = max(r["ratio"] for r in rows)
    best = min(r["ratio"] for r in rows)
    print(f"qdebug trace / debugger script = {best:.2f}–{worst:.2f}× whole process "
          f"(target ≤ {TARGET}×) {'ok' if worst <= TARGET else 'MISS'}")


if __name__ == "__main__":
    main()
