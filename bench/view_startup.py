"""Time to first screen and peak memory of ``qdebug view`` on a large and a small trace.

    python bench/view_startup.py [--layers 400 --samples 5000 --stored 16] [--keep DIR]

Builds two synthetic but valid traces with the real ``TraceWriter`` (a large one: hundreds of
layers, thousands of samples, stored activations, ~1 GB; and a small one), then, for each, starts
the viewer headless in a fresh process (``App.run_test``) and measures the time from opening the
trace until the layer table is populated, and the process's peak RSS. Prints both and the ratios
large/small. The issue's targets: under 1 s, within 1.5× of the small trace, memory flat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _worker import peak_rss_mb  # noqa: E402

from qdebug.analysis.culprits import find_culprits  # noqa: E402
from qdebug.store.schema import LayerRecord, OutputRecord  # noqa: E402
from qdebug.store.writer import TraceWriter  # noqa: E402

TAG = "VIEW_STARTUP "
BATCH = 256


def _layers(n: int, shape: tuple[int, ...]) -> list[LayerRecord]:
    """A chain: input, then conv/bn (fused into the relu that follows)/relu triples."""
    out = [LayerRecord("input", "InputLayer", [], [None, *shape], "input", tensor_name="in",
                       tensor_index=0, op_type="QUANTIZE", dtype="int8", scale=0.02,
                       zero_point=0, match_rel_error=0.0)]
    for i in range(1, n):
        kind = ("conv", "bn", "relu")[(i - 1) % 3]
        name = f"block{(i - 1) // 3}_{kind}"
        fused = kind != "relu"
        relu = f"block{(i - 1) // 3}_relu"
        out.append(LayerRecord(
            name, {"conv": "Conv2D", "bn": "BatchNormalization", "relu": "ReLU"}[kind],
            [out[-1].name], [None, *shape], "fused" if fused else "matched",
            related=relu if fused else "", tensor_name="" if fused else f"t{i}",
            tensor_index=-1 if fused else i, op_type="" if fused else "CONV_2D",
            dtype="" if fused else "int8", scale=math.nan if fused else 0.02,
            zero_point=0 if fused else -128, match_rel_error=0.0,
        ))
    return out


def build(path: Path, n_layers: int, n_samples: int, n_stored: int,
          shape: tuple[int, ...]) -> Path:
    """Write a synthetic trace whose accumulated SQNR decays with depth."""
    rng = np.random.default_rng(0)
    layers = _layers(n_layers, shape)
    measured = [i for i, r in enumerate(layers) if r.measured]
    outputs = [OutputRecord("out", layers[-1].name, layers[-1].tensor_name, 0.02, -128, True)]
    attrs = {"model_name": f"synthetic_{n_layers}", "keras_flavour": "keras3",
             "kernels": "builtin (deterministic)", "warnings": [],
             "converter": {"calib_samples": 200, "int8_io": False,
                           "optimizations": "DEFAULT", "supported_ops": "TFLITE_BUILTINS_INT8"}}
    size = int(np.prod(shape))
    sqnr = np.linspace(50.0, 12.0, n_layers)
    with TraceWriter(path, attrs=attrs, layers=layers, outputs=outputs, input_names=["x"],
                     tflite=b"", float_islands=[], store_samples=n_stored,
                     rank_culprits=find_culprits) as w:
        for start in range(0, n_samples, BATCH):
            b = min(BATCH, n_samples - start)
            f2 = rng.uniform(0.5, 1.5, (b, n_layers)) * size
            e2 = f2 * 10 ** (-sqnr / 10) * rng.uniform(0.5, 1.5, (b, n_layers))
            stats = {"count": np.full((b, n_layers), float(size)), "sum_f2": f2,
                     "sum_q2": f2 + e2, "sum_fq": f2, "sum_e": np.zeros((b, n_layers)),
                     "sum_e2": e2, "max_abs_e": np.sqrt(e2 / size) * 4,
                     "saturated": np.zeros((b, n_layers)), "clipped": np.zeros((b, n_layers)),
                     "sum_e2_clipped": np.zeros((b, n_layers))}
            for s in stats:  # the accumulated statistics; local ones stay absent (NaN)
                stats[s][:, [i for i in range(n_layers) if i not in set(measured)]] = np.nan
            out_stats = {k: v[:, -1:] for k, v in stats.items()}
            w.add_batch(stats, out_stats, np.ones((b, 1), dtype=np.int8))
        for k in range(n_stored):
            base = rng.normal(0.0, 1.0, size + len(measured)).astype(np.float32)
            acts = {}
            for j, i in enumerate(measured):
                fl = base[j : j + size].reshape(shape)
                raw = np.clip(np.rint(fl / 0.02) - 128, -128, 127).astype(np.int8)
                acts[i] = (fl, raw)
            w.store_sample(k, [base[:size].reshape(shape)], acts)
        return w.commit()


def measure(path: Path) -> dict[str, float]:
    """In this process: open the trace, start the app; time until the layer table first paints
    rows, and until every row is in."""
    t0 = time.perf_counter()
    from qdebug.tui.app import create_app
    from qdebug.tui.widgets.layer_table import LayerTable

    t_import = time.perf_counter() - t0

    painted: list[float] = []
    render_line = LayerTable.render_line

    def spy(self: LayerTable, y: int) -> Any:
        if not painted and self.row_count:
            painted.append(time.perf_counter())
        return render_line(self, y)

    LayerTable.render_line = spy  # type: ignore[method-assign, assignment]

    async def run() -> tuple[float, float]:
        start = time.perf_counter()
        app = create_app(path)
        async with app.run_test(size=(120, 40)) as pilot:
            while not painted:
                await pilot.pause(0.001)
            while not app.screen.query_one(LayerTable).complete:
                await pilot.pause(0.001)
            return painted[0] - start, time.perf_counter() - start

    first, complete = asyncio.run(run())
    peak = peak_rss_mb()
    return {"import_s": t_import, "first_screen_s": first, "table_complete_s": complete,
            "peak_rss_mb": peak}


def _measure_in_subprocess(path: Path) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, "--measure", str(path)],
                          capture_output=True, text=True, check=True)
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith(TAG))
    return dict(json.loads(line[len(TAG):]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=400)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--stored", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="write the traces here and keep them")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(TAG + json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        small = build(folder / "small.h5", 13, 256, 8, (8, 8, 16))
        large = build(folder / "large.h5", args.layers, args.samples, args.stored, (32, 32, 32))
        print(f"built traces in {time.perf_counter() - t:.1f} s: "
              f"small {small.stat().st_size / 1e6:.1f} MB, large {large.stat().st_size / 1e9:.2f} "
              f"GB ({args.layers} layers, {args.samples} samples, {args.stored} stored)")
        # The large trace was just written: let the disk take it, and read each trace once,
        # so that what is timed is the viewer, not the write-back of gigabytes.
        os.sync()
        for path in (small, large):
            _measure_in_subprocess(path)
        runs: dict[str, list[dict[str, float]]] = {"small": [], "large": []}
        for _ in range(args.repeat):  # interleaved, so load on the machine hits both alike
            for name, path in (("small", small), ("large", large)):
                runs[name].append(_measure_in_subprocess(path))
        results = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                   for name, rs in runs.items()}
        print(f"{'trace':<7}{'first screen':>14}{'all rows':>12}{'import':>10}{'peak RSS':>12}")
        for name, r in results.items():
            print(f"{name:<7}{r['first_screen_s'] * 1000:>11.0f} ms"
                  f"{r['table_complete_s'] * 1000:>9.0f} ms{r['import_s'] * 1000:>7.0f} ms"
                  f"{r['peak_rss_mb']:>9.0f} MB")
        t_ratio = results["large"]["first_screen_s"] / results["small"]["first_screen_s"]
        m_ratio = results["large"]["peak_rss_mb"] / results["small"]["peak_rss_mb"]
        c_ratio = results["large"]["table_complete_s"] / results["small"]["table_complete_s"]
        print(f"large/small: first screen {t_ratio:.2f}× (target ≤ 1.5×; large < 1 s: "
              f"{results['large']['first_screen_s'] < 1}), all rows {c_ratio:.2f}×, "
              f"peak RSS {m_ratio:.2f}×")


if __name__ == "__main__":
    main()
