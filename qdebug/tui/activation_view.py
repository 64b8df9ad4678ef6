"""What the layer-detail screen shows of one stored sample: histograms and per-channel SQNR.
Pure numpy; computed in a worker thread."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qdebug import metrics
from qdebug.store.reader import Activation

BINS = 24


@dataclass(frozen=True)
class ActivationView:
    """Summary of one layer's stored activation for one sample."""

    sample: int
    edges: np.ndarray
    """Bin edges (BINS + 1) of the value histograms, in real units."""
    float_counts: np.ndarray
    int8_counts: np.ndarray
    err_edges: np.ndarray
    """Bin edges of the error histogram, in real units."""
    err_counts: np.ndarray
    channel_sqnr_db: np.ndarray
    """Per channel (last axis) SQNR of this sample, dB."""
    low: float
    """The calibrated range's ends (NaN for a float tensor)."""
    high: float
    scale: float
    sqnr_db: float
    clipped: int
    """Float values outside the representable range (beyond half an LSB)."""
    size: int

    @property
    def range_used(self) -> float:
        """Fraction of the calibrated range the float values span (NaN for a float tensor)."""
        width = self.high - self.low
        if math.isnan(width) or width <= 0:
            return math.nan
        return float((self.edges[-1] - self.edges[0]) / width)


def summarize(act: Activation, sample: int, bins: int = BINS) -> ActivationView:
    """Histograms of float and dequantized int8 values over one range, of the error, and the
    per-channel SQNR (channel = last axis)."""
    f = np.asarray(act.float, dtype=np.float64)
    q = np.asarray(act.dequantized, dtype=np.float64)
    qp = act.qp
    low, high = (qp.low, qp.high) if qp is not None else (math.nan, math.nan)
    scale = qp.scale if qp is not None else math.nan
    ends = [f.min(initial=0.0), f.max(initial=0.0), q.min(initial=0.0), q.max(initial=0.0)]
    # bins span the data, not the calibrated range: a range far wider than the data would
    # squeeze everything into one bin; the range's ends are marked where they fall inside
    lo, hi = min(ends), max(ends)
    if hi <= lo:
        pad = scale if qp is not None else max(abs(lo), 1.0) * 1e-3
        lo, hi = lo - pad, hi + pad
    edges = np.linspace(lo, hi, bins + 1)
    e = (q - f).ravel()
    elim = float(np.abs(e).max(initial=0.0)) or 1.0
    err_edges = np.linspace(-elim, elim, bins + 1)
    if f.ndim:
        f2 = f.reshape(-1, f.shape[-1])
        q2 = q.reshape(-1, q.shape[-1])
        channels = np.array([metrics.sqnr_db(f2[:, c], q2[:, c]) for c in range(f2.shape[1])])
    else:
        channels = np.array([metrics.sqnr_db(f.reshape(1), q.reshape(1))])
    clipped = 0
    if qp is not None:
        clipped = int(np.count_nonzero(qp.outside(f)))
    return ActivationView(
        sample=sample,
        edges=edges,
        float_counts=np.histogram(f, edges)[0],
        int8_counts=np.histogram(q, edges)[0],
        err_edges=err_edges,
        err_counts=np.histogram(e, err_edges)[0],
        channel_sqnr_db=channels,
        low=low,
        high=high,
        scale=scale,
        sqnr_db=metrics.sqnr_db(f, q),
        clipped=clipped,
        size=int(f.size),
    )
