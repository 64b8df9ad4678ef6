"""The deployment kernels (XNNPACK, ``qdebug trace --xnnpack``) beside the reference kernels:
each output's SQNR and top-1 agreement against the float model, and task accuracy, as both
computed them. Reads the store only; never imports TensorFlow."""

from __future__ import annotations

import math
from dataclasses import dataclass

from qdebug.analysis.accuracy import accuracy
from qdebug.store.reader import Trace


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
