"""Example user metrics for ``qdebug trace --metric examples/custom_metrics.py:bias_lsb``.

A metric is a function of the pooled sufficient statistics (docs/metrics.md): ``stats`` maps
each statistic (``count``, ``sum_e``, ``sum_e2``, ...) to one value per tensor, ``scale`` holds
each tensor's quantization step (NaN for float tensors). It returns one value per tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def bias_lsb(stats: Mapping[str, np.ndarray], scale: np.ndarray) -> np.ndarray:
    """Σ(q−f)/n / scale: the systematic shift of int8 against float, in LSB"""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(stats["sum_e"] / stats["count"] / scale)


bias_lsb.unit = "LSB"  # type: ignore[attr-defined]
bias_lsb.needs = ("count", "sum_e")  # type: ignore[attr-defined]
