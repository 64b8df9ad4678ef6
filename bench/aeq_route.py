"""The ai-edge-quantizer route beside the TFLite converter's, on the same model and data.

``qdebug trace MODEL --data D --calib C`` (the converter quantizes) against ``qdebug trace MODEL
--data D --calib C --quantizer aeq`` (the converter makes the float ``.tflite``, AEQ quantizes
it) on MobileNetV2 (bench/_common.py, 96×96, random BN statistics), each in a fresh process
with ``--profile``: wall time, the phases that differ (conversion against float conversion +
quantization), and each route's output SQNR on the same samples (random weights: the softmax
output is near uniform and quantizes to one level, so the timing is the point, not the SQNR).

    .venv/bin/python bench/aeq_route.py [--samples 32] [--repeat 2]

Results: bench/out/aeq_route.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CALIB_PATH, DATA_PATH, MODEL_PATH, prepare, write_json

ROUTES = {"converter": [], "aeq": ["--quantizer", "aeq"]}


def _run(route: str, n: int, folder: Path) -> dict[str, Any]:
    out = folder / f"{route}.h5"
    cmd = [sys.executable, "-m", "qdebug", "trace", str(MODEL_PATH), "--data", str(DATA_PATH),
           "--calib", str(CALIB_PATH), "-n", str(n), "--store-samples", "0", "--profile",
           "--format", "json", "--out", str(out), *ROUTES[route]]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{route}: exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
    rep = json.loads(proc.stdout)
    return {"wall_s": wall, "timings": rep.get("timings", {}),
            "output_sqnr_db": rep["output"]["sqnr_db"],
            "quantizer": rep.get("quantizer", {}).get("name"),
            "deployed": rep["model"]["deployed"]}


def measure(n: int, repeat: int) -> dict[str, Any]:
    prepare(n)
    best: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            for route in ROUTES:
                got = _run(route, n, Path(tmp))
                if route not in best or got["wall_s"] < best[route]["wall_s"]:
                    best[route] = got
    return {"model": MODEL_PATH.name, "samples": n, "repeat": repeat, "routes": best,
            "ratio": best["aeq"]["wall_s"] / best["converter"]["wall_s"]}


def report(result: dict[str, Any], log: Any = print) -> None:
    for route, r in result["routes"].items():
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in r["timings"].items()
                           if isinstance(v, int | float) and v >= 0.5)
        log(f"{route:<9} {r['wall_s']:6.1f}s  output SQNR {r['output_sqnr_db']:.1f} dB  "
            f"({r['quantizer']}; {phases})")
    log(f"aeq / converter wall time: {result['ratio']:.2f}×")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    result = measure(args.samples, args.repeat)
    report(result)
    write_json("aeq_route", result)


if __name__ == "__main__":
    main()
