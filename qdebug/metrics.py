"""Error metrics between a float reference and its int8 counterpart. Pure numpy.

Every metric is defined once in ``docs/metrics.md``. Metrics are computed from *sufficient
statistics*: per-sample sums (``STATS``) that can be added across samples, so a trace of any
length is summarised in constant memory and pooled metrics are exact, not averages of averages.
Argument order is always (float, int8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

#: Per-sample sufficient statistics of the accumulated error q − f. All are additive over
#: samples except ``max_abs_e`` (max).
ACCUMULATED_STATS: tuple[str, ...] = (
    "count",  # number of elements
    "sum_f2",  # Σ f²
    "sum_q2",  # Σ q²
    "sum_fq",  # Σ f·q
    "sum_e",  # Σ (q − f)
    "sum_e2",  # Σ (q − f)²
    "max_abs_e",  # max |q − f|
    "saturated",  # int8 values at an end of the range that does not represent 0
    "clipped",  # float values outside the representable range (beyond half an LSB)
    "sum_e2_clipped",  # Σ (q − f)² over the clipped elements
)
#: Per-sample sufficient statistics of the decomposition (f̂ = f(x̂), the layer's float
#: computation on the INT8 model's own inputs).
LOCAL_STATS: tuple[str, ...] = (
    "sum_ref2",  # Σ f̂²
    "sum_local_e",  # Σ (q − f̂)
    "sum_local_e2",  # Σ (q − f̂)²
    "sum_prop_e2",  # Σ (f̂ − f)²
    "sum_in_e2",  # Σ (x̂ − x)² over all of the layer's inputs
)
STATS: tuple[str, ...] = ACCUMULATED_STATS + LOCAL_STATS

Stats = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of one tensor: real = scale · (q − zero_point)."""

    scale: float
    zero_point: int
    qmin: int = -128
    qmax: int = 127

    @property
    def low(self) -> float:
        """The smallest representable real value."""
        return (self.qmin - self.zero_point) * self.scale

    @property
    def high(self) -> float:
        """The largest representable real value."""
        return (self.qmax - self.zero_point) * self.scale

    @property
    def clip_low(self) -> float:
        """Float values below this are clipped: half a step under the lowest representable."""
        return self.low - 0.5 * self.scale

    @property
    def clip_high(self) -> float:
        """Float values above this are clipped: half a step over the highest representable."""
        return self.high + 0.5 * self.scale

    def outside(self, f: np.ndarray) -> np.ndarray:
        """Where float values ``f`` fall outside the representable range by more than half a
        step: what rounding cannot reach, so the range clips it (the ``clipped`` statistic)."""
        return (f < self.clip_low) | (f > self.clip_high)

    def saturated(self, raw: np.ndarray, f: np.ndarray) -> np.ndarray:
        """Where raw integers sit at an end of the range that does not represent 0 and the
        float value there does not round to that end (the ``saturated`` statistic): clipped,
        or pushed onto the rail by error. A value at the end because the data is there (a
        pixel at the calibrated maximum) is not saturation."""
        raw = np.asarray(raw)
        out = np.zeros(raw.shape, dtype=bool)
        half = 0.5 * self.scale
        same = np.shape(f) == raw.shape
        for end, value in ((self.qmin, self.low), (self.qmax, self.high)):
            if end == self.zero_point:
                continue
            if not same:
                out |= (raw == end) & (np.abs(np.asarray(f, dtype=np.float64) - value) > half)
                continue
            # The float64 test only where the integers are at that end (a few values of a
            # rail-touching tensor, not all of them): the same answers, a fraction of the work.
            at = np.flatnonzero(raw == end)
            out.reshape(-1)[at] = np.abs(
                np.asarray(f).reshape(-1)[at].astype(np.float64) - value) > half
        return out


def dequantize(raw: np.ndarray, qp: QuantParams | None) -> np.ndarray:
    """Real values of raw integers ``raw`` (float arrays pass through as float32)."""
    if qp is None or not np.issubdtype(raw.dtype, np.integer):
        return np.asarray(raw, dtype=np.float32)
    q = raw.astype(np.float32)
    q -= np.float32(qp.zero_point)
    q *= np.float32(qp.scale)
    return q


def _rowsum(x: np.ndarray) -> np.ndarray:
    """Row sums of float32 values (pairwise summation) as float64."""
    return np.asarray(x.sum(axis=1), dtype=np.float64)


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row of two (n, d) float32 arrays, Σ a·b as float64.

    A BLAS dot product per row: vector partial sums keep the relative error near 1e-7
    (docs/metrics.md, "Precision"), at a fifth of the time of a float64 sum, and each row's
    result depends on that row alone, never on the rows batched with it.
    """
    n = a.shape[0]
    if a.shape[1] == 0:
        return np.zeros(n)
    return np.matmul(a[:, None, :], b[:, :, None]).reshape(n).astype(np.float64)


def _rows(x: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).reshape(n, -1)


def pool(per_sample: Stats, axis: int = 0) -> dict[str, np.ndarray]:
    """Combine per-sample statistics over ``axis`` (sum, or max for ``max_abs_e``)."""
    return {
        k: (np.max(v, axis=axis) if k == "max_abs_e" else np.sum(v, axis=axis))
        for k, v in per_sample.items()
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(num, dtype=np.float64) / np.asarray(den, dtype=np.float64)


#: Severity bands of an SQNR in dB, worst first (docs/metrics.md): a value is in the first band
#: whose ceiling it is below. The viewer's colours, the Model Explorer overlays and the viewer's
#: help all come from these.
SQNR_BANDS: tuple[tuple[float, str], ...] = (
    (10.0, "badly hurt"),
    (20.0, "poor"),
    (30.0, "fair"),
    (40.0, "good"),
    (math.inf, "near float"),
)


#: An SQNR at or above this (dB) is float32's own rounding over an exact value — a max-pool,
#: a reshape, an op kept in float read ~130–150 dB — so it is read as exact (+∞) where two are
#: compared: exact against exact is no change, not a 100 dB swing.
EXACT_DB = 100.0


def sqnr_band(value: float) -> int | None:
    """The index in ``SQNR_BANDS`` of an SQNR in dB (+∞: the last band); None for NaN."""
    if math.isnan(value):
        return None
    return next(i for i, (ceiling, _) in enumerate(SQNR_BANDS)
                if value < ceiling or i == len(SQNR_BANDS) - 1)


def sqnr_from_sums(signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """10·log10(signal / noise) in float64: +inf for no noise, −inf for noise on no signal, NaN
    for neither. The one home of SQNR in dB (docs/metrics.md): every SQNR qdebug reports, of a
    layer, an op, a channel, a weight or a sample, is this of its Σf² and Σe²."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(10.0 * np.log10(_ratio(signal, noise)))


_db = sqnr_from_sums


def _lsb(noise: np.ndarray, count: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """√(noise / count) / scale; NaN without a scale."""
    rmse = np.sqrt(_ratio(noise, count))
    return np.full_like(rmse, np.nan) if scale is None else np.asarray(_ratio(rmse, scale))


def _sqnr_db(s: Stats, scale: np.ndarray | None) -> np.ndarray:
    return _db(s["sum_f2"], s["sum_e2"])


def _rmse_lsb(s: Stats, scale: np.ndarray | None) -> np.ndarray:
    return _lsb(s["sum_e2"], s["count"], scale)


def _cosine(s: Stats, scale: np.ndarray | None) -> np.ndarray:
    return _ratio(s["sum_fq"], np.sqrt(s["sum_f2"] * s["sum_q2"]))


def _local_sqnr_db(s: Stats, scale: np.ndarray | None) -> np.ndarray:
    return _db(s["sum_ref2"], s["sum_local_e2"])


def _local_rmse_lsb(s: Stats, scale: np.ndarray | None) -> np.ndarray:
    return _lsb(s["sum_local_e2"], s["count"], scale)


def _gain(s: Stats, scale: np.ndarray | None) -> np.ndarray:
    # No error comes in (an exactly quantized input, a requantize matched to no float tensor):
    # there is nothing to amplify, and prop/0 (float noise of the re-run over 0) is no gain.
    den = np.asarray(s["sum_in_e2"], dtype=np.float64)
    gain = np.sqrt(_ratio(s["sum_prop_e2"], den))
    return np.where(den > 0, gain, np.nan)


@dataclass(frozen=True)
class Metric:
    """A named metric derived from sufficient statistics."""

    name: str
    unit: str
    description: str
    compute: Callable[[Stats, np.ndarray | None], np.ndarray]
    needs: tuple[str, ...] = ACCUMULATED_STATS
    """The statistics it is computed from; traces without them do not have the metric."""


#: The metric registry: name → Metric. ``derive`` computes every entry.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("sqnr_db", "dB", "10·log10(Σf² / Σ(f−q)²)", _sqnr_db),
        Metric("rmse_lsb", "LSB", "√(Σ(f−q)²/n) / scale", _rmse_lsb),
        Metric("mse", "", "Σ(f−q)²/n", lambda s, _: _ratio(s["sum_e2"], s["count"])),
        Metric("max_abs_error", "", "max |q−f|", lambda s, _: np.asarray(s["max_abs_e"], float)),
        Metric("mean_error", "", "Σ(q−f)/n (bias)", lambda s, _: _ratio(s["sum_e"], s["count"])),
        Metric("cosine", "", "Σf·q / √(Σf²·Σq²)", _cosine),
        Metric(
            "saturation",
            "fraction",
            "int8 values at a range end that does not represent 0",
            lambda s, _: _ratio(s["saturated"], s["count"]),
        ),
        Metric(
            "clip_fraction",
            "fraction",
            "float values outside the representable range",
            lambda s, _: _ratio(s["clipped"], s["count"]),
        ),
        Metric(
            "clip_share",
            "fraction",
            "share of Σ(f−q)² from clipped values",
            lambda s, _: _ratio(s["sum_e2_clipped"], s["sum_e2"]),
        ),
        Metric(
            "local_sqnr_db",
            "dB",
            "10·log10(Σf̂² / Σ(q−f̂)²), f̂ = f(x̂)",
            _local_sqnr_db,
            ("sum_ref2", "sum_local_e2"),
        ),
        Metric(
            "local_rmse_lsb",
            "LSB",
            "√(Σ(q−f̂)²/n) / scale",
            _local_rmse_lsb,
            ("count", "sum_local_e2"),
        ),
        Metric(
            "local_mse",
            "",
            "Σ(q−f̂)²/n",
            lambda s, _: _ratio(s["sum_local_e2"], s["count"]),
            ("count", "sum_local_e2"),
        ),
        Metric(
            "propagated_mse",
            "",
            "Σ(f̂−f(x))²/n",
            lambda s, _: _ratio(s["sum_prop_e2"], s["count"]),
            ("count", "sum_prop_e2"),
        ),
        Metric(
            "local_share",
            "fraction",
            "Σ(q−f̂)² / (Σ(q−f̂)² + Σ(f̂−f(x))²)",
            lambda s, _: _ratio(s["sum_local_e2"], s["sum_local_e2"] + s["sum_prop_e2"]),
            ("sum_local_e2", "sum_prop_e2"),
        ),
        Metric(
            "gain",
            "×",
            "√(Σ(f̂−f(x))² / Σ(x̂−x)²)",
            _gain,
            ("sum_prop_e2", "sum_in_e2"),
        ),
    )
}


def derive(stats: Stats, scale: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every registered metric from (pooled or per-sample) sufficient statistics.

    Args:
        stats: arrays named as in ``STATS``, all of one shape.
        scale: the tensors' scales broadcastable to that shape (NaN for float tensors), or None.
    """
    return {
        name: m.compute(stats, scale)
        for name, m in METRICS.items()
        if all(k in stats for k in m.needs)
    }


def sqnr_db(f: np.ndarray, q: np.ndarray) -> float:
    """Pooled SQNR in dB of real arrays ``f`` (float) and ``q`` (dequantized int8)."""
    f32 = _rows(np.asarray(f)[None], 1)
    e = _rows(np.asarray(q)[None], 1) - f32
    return float(sqnr_from_sums(_rowdot(f32, f32), _rowdot(e, e))[0])


def top1_match(f: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per sample, whether the arg-max class of the float and int8 outputs agree."""
    n = f.shape[0]
    return np.argmax(np.reshape(f, (n, -1)), axis=1) == np.argmax(np.reshape(q, (n, -1)), axis=1)


def channel_metrics(sums: dict[str, np.ndarray], count: float) -> dict[str, np.ndarray]:
    """``sums`` (``sum_f2``, ``sum_e2``, ``clipped``, optional ``saturated``) with ``sqnr_db``,
    ``count`` (values per channel: the layer's pooled count / channels) and the fractions
    ``clip_fraction`` and ``saturation``."""
    out = dict(sums)
    c = len(sums["sum_f2"])
    per = count / c if c and math.isfinite(count) and count > 0 else math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        out["sqnr_db"] = sqnr_from_sums(sums["sum_f2"], sums["sum_e2"])
        out["count"] = np.full(c, per)
        out["clip_fraction"] = np.asarray(sums["clipped"] / per)
        if "saturated" in sums:
            out["saturation"] = np.asarray(sums["saturated"] / per)
    return out
