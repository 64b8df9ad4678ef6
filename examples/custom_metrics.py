"""Example user metrics (docs/metrics.md, "Custom metrics")::

    qdebug trace model.keras --data x.npy \
        --metric examples/custom_metrics.py:bias_lsb \
        --metric examples/custom_metrics.py:p99_abs_error \
        --output-metric examples/custom_metrics.py:top1_agrees \
        --output-metric examples/custom_metrics.py:mask_iou

``bias_lsb`` is a function of the pooled sufficient statistics: ``stats`` maps each statistic
(``count``, ``sum_e``, ``sum_e2``, ...) to one value per tensor, ``scale`` holds each tensor's
quantization step (NaN for float tensors); it returns one value per tensor. ``p99_abs_error``
(``kind = "per_sample"``) gets one sample's float and dequantized int8 tensors and returns one
number, averaged over samples. ``top1_agrees`` and ``mask_iou`` get the model's outputs (a list,
one array per output); ``mask_iou`` (``kind = "whole_set"``) gets every sample's at once.
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


def p99_abs_error(f: np.ndarray, q: np.ndarray) -> float:
    """99th percentile of |q − f| over one sample's elements"""
    return float(np.percentile(np.abs(q - f), 99))


p99_abs_error.kind = "per_sample"  # type: ignore[attr-defined]


def top1_agrees(float_outputs: list[np.ndarray], quantized_outputs: list[np.ndarray]) -> float:
    """1 when float and int8 pick the same class of the first output"""
    return float(np.argmax(float_outputs[0]) == np.argmax(quantized_outputs[0]))


def mask_iou(float_outputs: list[np.ndarray], quantized_outputs: list[np.ndarray]) -> float:
    """IoU of the float and int8 masks (first output > 0.5) over every sample"""
    f, q = float_outputs[0] > 0.5, quantized_outputs[0] > 0.5
    union = np.logical_or(f, q).sum()
    return float(np.logical_and(f, q).sum() / union) if union else 1.0


mask_iou.kind = "whole_set"  # type: ignore[attr-defined]
