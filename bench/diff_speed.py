"""``qdebug diff`` speed: two 500-layer traces, with few and with many stored samples.

diff reads only the summary tables, so its time must not grow with the stored activations.
Result: bench/out/diff_speed.json.

    .venv/bin/python bench/diff_speed.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "helpers"))

from _common import write_json

import qdebug
from synthetic_traces import make_trace

LAYERS = 500
SAMPLES = 2000
TARGET_S = 1.0


def _best_diff_seconds(base: Path, new: Path, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        qdebug.diff(base, new)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stored in (0, 64):
            paths = [
                make_trace(Path(tmp) / f"{name}-{stored}.h5", layers=LAYERS, samples=SAMPLES,
                           width=64, store=stored, noise_lsb=noise)
                for name, noise in (("base", {}), ("new", {250: 4.0}))
            ]
            size_mb = sum(p.stat().st_size for p in paths) / 1e6
            seconds = _best_diff_seconds(*paths)
            rows.append({"stored_samples": stored, "files_mb": round(size_mb, 1),
                         "diff_s": round(seconds, 4)})
            print(f"{LAYERS} layers, {SAMPLES} samples, {stored:3d} stored "
                  f"({size_mb:7.1f} MB): diff {seconds * 1000:6.1f} ms")
    ok = all(r["diff_s"] < TARGET_S for r in rows)
    ratio = rows[1]["diff_s"] / rows[0]["diff_s"]
    print(f"target < {TARGET_S:g} s: {'ok' if ok else 'MISS'}; many/few stored: {ratio:.2f}×")
    write_json("diff_speed", {"layers": LAYERS, "samples": SAMPLES, "target_s": TARGET_S,
                              "rows": rows, "ratio_many_to_few_stored": round(ratio, 3)})


if __name__ == "__main__":
    main()
