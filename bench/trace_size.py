"""Bytes per stored activation element and what the compression choice costs in write speed.

Takes the stored activations of a real trace (float reference, raw int8, f(x̂)) and writes them
again the way the tracer does (one chunk per sample and layer) with each choice: no filter, lzf
(qdebug's), gzip levels 1 and 4, with the float arrays as float32 (qdebug's) or float16. Both
sides are measured in the same run, as ratios against the uncompressed float32 baseline.

    .venv/bin/python bench/trace_size.py [TRACE]   # default: a fresh trace of the bench's
                                                   # MobileNetV2 (α 0.35, 96×96), 8 stored samples
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CALIB_PATH, DATA_PATH, MODEL_PATH, prepare, write_json

CHOICES: list[tuple[str, Any, Any]] = [
    ("none, float32", None, np.float32),
    ("lzf, float32 (qdebug)", "lzf", np.float32),
    ("gzip-1, float32", ("gzip", 1), np.float32),
    ("gzip-4, float32", ("gzip", 4), np.float32),
    ("none, float16", None, np.float16),
    ("lzf, float16", "lzf", np.float16),
]


def _arrays(trace: Path) -> list[np.ndarray]:
    out = []
    with h5py.File(trace, "r") as f:
        for g in f["activations"].values():
            for key in ("float", "int8", "float_local"):
                if key in g:
                    out.append(np.asarray(g[key][()]))
    return out


def _write(path: Path, arrays: list[np.ndarray], compression: Any, float_dtype: Any) -> float:
    start = time.perf_counter()
    with h5py.File(path, "w") as f:
        for i, a in enumerate(arrays):
            data = a.astype(float_dtype) if a.dtype.kind == "f" else a
            kw: dict[str, Any] = {}
            if isinstance(compression, tuple):
                kw = {"compression": compression[0], "compression_opts": compression[1]}
            elif compression is not None:
                kw = {"compression": compression}
            f.create_dataset(str(i), data=data, chunks=(1, *data.shape[1:]), **kw)
    return time.perf_counter() - start


def measure(trace: Path) -> dict[str, Any]:
    arrays = _arrays(trace)
    elements = sum(int(a.size) for a in arrays)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, comp, dtype in CHOICES:
            best = min(_write(Path(tmp) / "x.h5", arrays, comp, dtype) for _ in range(3))
            size = (Path(tmp) / "x.h5").stat().st_size
            rows.append({"choice": name, "bytes": size, "bytes_per_element": size / elements,
                         "write_s": best, "write_mb_s": elements / best / 1e6})
    base = rows[0]
    for r in rows:
        r["size_ratio"] = r["bytes"] / base["bytes"]
        r["time_ratio"] = r["write_s"] / base["write_s"]
    return {"trace": str(trace), "elements": elements, "rows": rows}


def report(result: dict[str, Any]) -> None:
    print(f"{result['elements']:,} stored elements (float, int8 and f(x̂) arrays) "
          f"from {result['trace']}")
    print(f"{'choice':<24} {'bytes/elem':>10} {'size':>7} {'write':>8} {'time':>6}")
    for r in result["rows"]:
        print(f"{r['choice']:<24} {r['bytes_per_element']:10.2f} {r['size_ratio']:6.2f}× "
              f"{r['write_s']:7.2f}s {r['time_ratio']:5.2f}×")


def main() -> None:
    if len(sys.argv) > 1:
        trace = Path(sys.argv[1])
    else:
        prepare(64)
        model, data, calib = MODEL_PATH, DATA_PATH, CALIB_PATH
        trace = Path(tempfile.mkdtemp()) / "size.h5"
        subprocess.run(
            [sys.executable, "-m", "qdebug", "trace", str(model), "--data", str(data),
             "--calib", str(calib), "-n", "16", "--store-samples", "8", "--out", str(trace),
             "-q"],
            check=True,
        )
    result = measure(trace)
    report(result)
    write_json("trace_size", result)


if __name__ == "__main__":
    main()
