"""With ``--xnnpack``: the deployment kernels' (XNNPACK's) outputs measured as the reference
kernels' are, against the float model: pooled SQNR, top-1 agreement and, with labels, accuracy;
and how far they are from the reference kernels' outputs (samples that differ, in LSB)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qdebug.analysis.kernels import json_db as _json_float
from qdebug.metrics import QuantParams, dequantize, sqnr_from_sums
from qdebug.store.schema import OutputRecord


@dataclass
class KernelComparison:
    """Sums over the samples, per LiteRT output position (filled one sample at a time)."""

    sum_f2: dict[int, float] = field(default_factory=dict)
    sum_e2: dict[int, float] = field(default_factory=dict)
    agree: dict[int, int] = field(default_factory=dict)
    """Samples whose arg-max class is the float model's."""
    max_diff: dict[int, float] = field(default_factory=dict)
    """The largest difference from the reference kernels (dequantized output units)."""
    preds: dict[int, list[int]] = field(default_factory=dict)
    """Per sample, the deployment kernels' arg-max class."""
    samples: int = 0
    mismatched: int = 0
    """Samples whose outputs differ between the deployment and the reference kernels."""
    max_abs_diff: float = 0.0
    """The largest such difference, in dequantized output units."""

    def add(self, floats: Sequence[np.ndarray], deployed: Sequence[np.ndarray],
            reference: Sequence[np.ndarray], qps: Sequence[QuantParams | None]) -> None:
        """One sample: per output position, the float model's output, and the deployment and
        reference kernels' raw outputs with their quantization (None: a float output)."""
        differs = False
        for pos, (f, dep, ref, qp) in enumerate(zip(floats, deployed, reference, qps,
                                                     strict=True)):
            f64 = np.asarray(f, np.float64).reshape(-1)
            d = np.asarray(dequantize(dep, qp), np.float64).reshape(-1)
            r = np.asarray(dequantize(ref, qp), np.float64).reshape(-1)
            self.sum_f2[pos] = self.sum_f2.get(pos, 0.0) + float(f64 @ f64)
            e = f64 - d
            self.sum_e2[pos] = self.sum_e2.get(pos, 0.0) + float(e @ e)
            pred = int(np.argmax(d)) if d.size else -1
            self.preds.setdefault(pos, []).append(pred)
            self.agree[pos] = self.agree.get(pos, 0) + int(
                f64.size > 0 and pred == int(np.argmax(f64)))
            diff = float(np.max(np.abs(d - r))) if d.size else 0.0
            if diff > 0:
                differs = True
                self.max_abs_diff = max(self.max_abs_diff, diff)
            self.max_diff[pos] = max(self.max_diff.get(pos, 0.0), diff)
        self.samples += 1
        self.mismatched += differs

    def attrs(self, outputs: Sequence[OutputRecord], out_index: Sequence[int],
              truth: np.ndarray | None, labelled: int | None) -> dict[str, Any]:
        """The trace's root attributes (docs/trace-format.md): ``kernel_outputs`` per output
        in the trace's order, ``kernel_accuracy`` with labels (``labelled``: the position in
        ``outputs`` of the labelled output), and the older mismatch counts."""
        rows = []
        for o, pos in zip(outputs, out_index, strict=True):
            with np.errstate(divide="ignore", invalid="ignore"):
                sq = float(sqnr_from_sums(np.array([self.sum_f2.get(pos, 0.0)]),
                                          np.array([self.sum_e2.get(pos, 0.0)]))[0])
            top1 = self.agree.get(pos, 0) / self.samples if o.classifier and self.samples else None
            diff = self.max_diff.get(pos, math.nan)
            # in LSB of the integer tensor the output is read from (a graph output after the
            # DEQUANTIZE is float: its scale is the output record's)
            lsb = diff / o.scale if math.isfinite(o.scale) and o.scale > 0 else math.nan
            rows.append({
                "sqnr_db": _json_float(sq),
                "top1_agreement": top1,
                "max_abs_diff": _json_float(diff),
                "max_abs_diff_lsb": _json_float(lsb),
                # the sums, so that shards' numbers can be pooled (qdebug merge)
                "sum_f2": self.sum_f2.get(pos, 0.0),
                "sum_e2": self.sum_e2.get(pos, 0.0),
                "agreeing": self.agree.get(pos, 0),
            })
        out: dict[str, Any] = {
            "kernel_samples": self.samples,
            "kernel_mismatched_samples": self.mismatched,
            "kernel_max_abs_diff": self.max_abs_diff,
            "kernel_outputs": rows,
        }
        if truth is not None and labelled is not None:
            preds = np.asarray(self.preds.get(out_index[labelled], []), np.int64)
            if len(preds) == len(truth) and len(truth):
                out["kernel_accuracy"] = float(np.mean(preds == np.asarray(truth)))
        return out

