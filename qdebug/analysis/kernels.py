"""The deployment kernels (XNNPACK, ``qdebug trace --xnnpack``) beside the reference kernels:
each output's SQNR and top-1 agreement against the float model, and task accuracy, as both
computed them. Reads the store only; never imports TensorFlow."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qdebug.analysis.accuracy import accuracy
from qdebug.metrics import sqnr_from_sums
from qdebug.store.meta import TraceMeta
from qdebug.store.reader import Trace

#: The root attributes ``--xnnpack`` writes (docs/trace-format.md).
KERNEL_ATTRS = ("kernel_mismatched_samples", "kernel_max_abs_diff", "kernel_samples",
                "kernel_outputs", "kernel_accuracy")


@dataclass(frozen=True)
class KernelsOutput:
    """One output: the reference kernels' numbers (every other number of the trace is theirs)
    and the deployment kernels', both against the float model."""

    name: str
    reference_sqnr_db: float
    deployment_sqnr_db: float
    reference_top1: float
    """NaN where the output is not a classifier."""
    deployment_top1: float
    max_diff: float
    """The largest difference between the two kernels' outputs (dequantized units)."""
    max_diff_lsb: float
    """The same in LSB of the output (NaN for an output without an integer grid)."""


@dataclass(frozen=True)
class KernelsComparison:
    """What ``--xnnpack`` recorded, with the reference kernels' numbers beside it."""

    delegated_ops: int
    ops: int
    samples: int
    mismatched_samples: int
    """Samples whose outputs differ between the two kernels."""
    outputs: tuple[KernelsOutput, ...]
    float_accuracy: float
    """With ``--labels``; NaN without."""
    reference_accuracy: float
    deployment_accuracy: float


def kernels_comparison(trace: Trace) -> KernelsComparison | None:
    """The comparison, or None when the trace was not made with ``--xnnpack``. A trace from
    before schema 1.4 has the mismatch count only: its outputs are empty."""
    meta = trace.meta
    if meta.kernel_mismatched_samples is None:
        return None
    om = trace.output_metrics()
    outputs = tuple(
        KernelsOutput(o.name, float(om["sqnr_db"][j]), k.sqnr_db, float(om["top1_agreement"][j]),
                      k.top1_agreement, k.max_abs_diff, k.max_abs_diff_lsb)
        for j, (o, k) in enumerate(zip(trace.outputs, meta.kernel_outputs, strict=False))
    )
    acc = accuracy(trace)
    return KernelsComparison(
        delegated_ops=len(meta.delegated_ops),
        ops=len(trace.ops),
        samples=trace.n_samples,
        mismatched_samples=meta.kernel_mismatched_samples,
        outputs=outputs,
        float_accuracy=acc.float_accuracy if acc is not None else math.nan,
        reference_accuracy=acc.int8_accuracy if acc is not None else math.nan,
        deployment_accuracy=meta.kernel_accuracy if acc is not None else math.nan,
    )


def json_db(v: float) -> float | str | None:
    """A float for a JSON attribute: NaN is null, infinities their names (as the reports)."""
    if math.isnan(v):
        return None
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")


def merged_kernel_attrs(metas: Sequence[TraceMeta]) -> dict[str, Any]:
    """The ``--xnnpack`` attributes of a run merged from its shards' (``qdebug merge``): the
    sums pooled, the largest differences kept, accuracy weighted by samples; empty when the
    shards were not traced with ``--xnnpack``. Shards from before schema 1.4 have no sums:
    then only the mismatch counts are merged."""
    if not metas or any(m.kernel_mismatched_samples is None for m in metas):
        return {}
    counts = [_int(m.raw.get("kernel_samples"), m.n_samples) for m in metas]
    total = sum(counts)
    out: dict[str, Any] = {
        "kernel_samples": total,
        "kernel_mismatched_samples": sum(m.kernel_mismatched_samples or 0 for m in metas),
        "kernel_max_abs_diff": max(0.0 if math.isnan(m.kernel_max_abs_diff)
                                   else m.kernel_max_abs_diff for m in metas),
    }
    parts = [p for p in (m.raw.get("kernel_outputs") for m in metas) if isinstance(p, list)]
    if len(parts) == len(metas) and all(len(p) == len(parts[0]) for p in parts):
        out["kernel_outputs"] = [_merged_output([p[j] for p in parts], total)
                                 for j in range(len(parts[0]))]
    accs = [m.kernel_accuracy for m in metas]
    if all(math.isfinite(a) for a in accs) and total:
        out["kernel_accuracy"] = sum(a * c for a, c in zip(accs, counts, strict=True)) / total
    return out


def _merged_output(rows: list[Any], total: int) -> dict[str, Any]:
    def num(row: Any, key: str) -> float:
        v = row.get(key) if isinstance(row, dict) else None
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan

    f2 = sum(num(r, "sum_f2") for r in rows)
    e2 = sum(num(r, "sum_e2") for r in rows)
    agreeing = sum(num(r, "agreeing") for r in rows)
    classifier = all(isinstance(r, dict) and r.get("top1_agreement") is not None for r in rows)
    diffs = [num(r, "max_abs_diff") for r in rows]
    lsbs = [num(r, "max_abs_diff_lsb") for r in rows]
    return {
        "sqnr_db": json_db(float(sqnr_from_sums(np.array([f2]), np.array([e2]))[0])),
        "top1_agreement": agreeing / total if classifier and total else None,
        "max_abs_diff": json_db(max(diffs, default=math.nan)),
        "max_abs_diff_lsb": json_db(max(lsbs, default=math.nan)),
        "sum_f2": f2, "sum_e2": e2, "agreeing": int(agreeing) if math.isfinite(agreeing) else 0,
    }


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
