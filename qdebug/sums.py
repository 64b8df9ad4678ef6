"""Per-sample sufficient statistics of one tensor's batch: the sums (``metrics.STATS``) that
every metric of ``qdebug.metrics`` is derived from, computed from the float reference and the
quantized model's values. Pure numpy.

Elementwise work is float32 (the precision of both models); sums are float32 dot products with
vector partial sums, returned as float64. Every statistic is per sample and depends on that
sample's values alone (docs/metrics.md, "Precision").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qdebug.metrics import QuantParams, _rowdot, _rows, _rowsum, dequantize


def _dequantize_into(raw: np.ndarray, qp: QuantParams | None, out: np.ndarray) -> None:
    """``dequantize(raw, qp)`` written into the float32 array ``out``: the same operations."""
    out[...] = raw
    if qp is not None and np.issubdtype(raw.dtype, np.integer):
        out -= np.float32(qp.zero_point)
        out *= np.float32(qp.scale)


@dataclass(frozen=True)
class ErrorArrays:
    """One tensor of a batch as the statistics read it, each (n, d): the float reference as
    float32 rows, the int8 model's values dequantized, their difference e = q − f and the raw
    values; for an integer tensor, each row's (min, max) of ``f`` and of ``raw``. Made once
    per tensor and batch, so that the per-sample statistics and the per-channel sums of the
    same tensor (an op and the layer it is) read the same arrays, not new copies."""

    f: np.ndarray
    q: np.ndarray
    e: np.ndarray
    raw: np.ndarray
    f_range: tuple[np.ndarray, np.ndarray] | None = None
    raw_range: tuple[np.ndarray, np.ndarray] | None = None


def error_arrays(
    f: np.ndarray, raw: np.ndarray, qp: QuantParams | None, q: np.ndarray | None = None
) -> ErrorArrays:
    """``ErrorArrays`` of a batch: ``f`` float reference (batch, ...), ``raw`` the int8
    model's tensor with as many elements per sample (raw integers with ``qp``, else float
    values), ``q`` its ``dequantize(raw, qp)`` when the caller has it already."""
    n = f.shape[0]
    f32 = _rows(f, n)
    r = np.asarray(raw).reshape(n, -1)
    q32 = dequantize(r, qp) if q is None else q.reshape(n, -1)
    if f32.shape != q32.shape:
        raise ValueError(f"float shape {f32.shape} and int8 shape {q32.shape} differ")
    e = q32 - f32
    if qp is None or not np.issubdtype(r.dtype, np.integer) or not f32.shape[1]:
        return ErrorArrays(f32, q32, e, r)
    return ErrorArrays(f32, q32, e, r, (f32.min(axis=1), f32.max(axis=1)),
                       (r.min(axis=1), r.max(axis=1)))


def sample_stats(
    f: np.ndarray, raw: np.ndarray, qp: QuantParams | None, q: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Sufficient statistics of each sample of a batch.

    Elementwise work is float32 (the precision of both models); sums are float32 dot
    products with vector partial sums, returned as float64.

    Args:
        f: float reference, shape (batch, ...).
        raw: the int8 model's tensor, same number of elements per sample; raw integers when
            ``qp`` is given, else float values (a float island).
        qp: the tensor's quantization parameters, or None for a float tensor.
        q: ``dequantize(raw, qp)`` when the caller has it already.

    Returns:
        One array of shape (batch,) per name in ``ACCUMULATED_STATS``.
    """
    return stats_of(error_arrays(f, raw, qp, q), qp)


def stats_of(a: ErrorArrays, qp: QuantParams | None) -> dict[str, np.ndarray]:
    """``sample_stats`` of a tensor's ``ErrorArrays``."""
    f32, q32, e, r = a.f, a.q, a.e, a.raw
    n = f32.shape[0]
    out: dict[str, np.ndarray] = {
        "count": np.full(n, f32.shape[1], dtype=np.float64),
        "sum_f2": _rowdot(f32, f32),
        "sum_q2": _rowdot(q32, q32),
        "sum_fq": _rowdot(f32, q32),
        "sum_e": _rowsum(e),
        "sum_e2": _rowdot(e, e),
        "max_abs_e": (
            np.maximum(e.max(axis=1), -e.min(axis=1)).astype(np.float64)
            if f32.shape[1]
            else np.zeros(n)
        ),
    }
    zeros = np.zeros((3, n), dtype=np.float64)
    out["saturated"], out["clipped"], out["sum_e2_clipped"] = zeros
    if qp is None or a.f_range is None or a.raw_range is None:
        return out
    # Counting is needed only in the rows that reach an end of the range: min and max tell,
    # and most tensors reach neither, which one reduction of each says.
    low, high = a.raw_range
    at_low = qp.zero_point != qp.qmin and low.min() == qp.qmin
    at_high = qp.zero_point != qp.qmax and high.max() == qp.qmax
    if at_low or at_high:
        hit = ((low == qp.qmin) & at_low) | ((high == qp.qmax) & at_high)
        out["saturated"][hit] = qp.saturated(r[hit], f32[hit]).sum(axis=1)
    clip_low, clip_high = qp.clip_low, qp.clip_high
    # fmin/fmax pass over NaN, which compares false in the rows' test as well.
    if np.fmin.reduce(a.f_range[0]) < clip_low or np.fmax.reduce(a.f_range[1]) > clip_high:
        outside = (a.f_range[0] < clip_low) | (a.f_range[1] > clip_high)
        clip = qp.outside(f32[outside])
        out["clipped"][outside] = clip.sum(axis=1)
        eo = e[outside]
        out["sum_e2_clipped"][outside] = _rowsum(np.where(clip, eo * eo, np.float32(0)))
    return out


def local_stats(
    f: np.ndarray,
    f_hat: np.ndarray,
    raw: np.ndarray,
    qp: QuantParams | None,
    in_e2: np.ndarray,
    q: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Sufficient statistics of the decomposition for each sample of a batch.

    Args:
        f: Keras float output, (batch, ...).
        f_hat: the layer's float computation re-run on the dequantized int8 inputs.
        raw: the int8 model's tensor (raw integers with ``qp``, else float).
        in_e2: Σ (x̂ − x)² over the layer's inputs, per sample, (batch,).
        q: ``dequantize(raw, qp)`` when the caller has it already.
    """
    n = f.shape[0]
    q32 = dequantize(np.asarray(raw).reshape(n, -1), qp) if q is None else q.reshape(n, -1)
    out = _local_of(_rows(f, n), _rows(f_hat, n), q32)
    out["sum_in_e2"] = np.asarray(in_e2, dtype=np.float64).reshape(n)
    return out


def _local_of(f32: np.ndarray, fh: np.ndarray, q32: np.ndarray) -> dict[str, np.ndarray]:
    """``local_stats`` but ``sum_in_e2``, of float32 rows (n, d)."""
    local = q32 - fh
    prop = fh - f32
    return {
        "sum_ref2": _rowdot(fh, fh),
        "sum_local_e": _rowsum(local),
        "sum_local_e2": _rowdot(local, local),
        "sum_prop_e2": _rowdot(prop, prop),
    }


#: The float32 elements of one tensor's arrays ``tensor_stats`` works on at a time: 1 MiB per
#: array, so that a chunk's f, q, e and f(x̂) stay in a core's L2 cache between the passes
#: that read them (a batch of a large tensor does not: 4.7 ms → 3.0 ms a 6 MB batch).
CHUNK_ELEMENTS = 1 << 18


def tensor_stats(
    f: np.ndarray,
    raw: np.ndarray,
    qp: QuantParams | None,
    q: np.ndarray | None = None,
    f_hat: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None, ErrorArrays]:
    """``sample_stats`` of a batch, with ``f_hat`` also ``local_stats`` (but ``sum_in_e2``,
    which depends on other tensors), and the batch's ``ErrorArrays``.

    A large tensor is worked on a few samples at a time (``CHUNK_ELEMENTS``). Every
    statistic is per sample, and each sample's depends on that sample's values alone, so the
    numbers are those of the whole batch at once, bit for bit."""
    n = f.shape[0]
    f32 = _rows(f, n)
    r = np.asarray(raw).reshape(n, -1)
    d = f32.shape[1]
    step = max(1, CHUNK_ELEMENTS // max(d, 1))
    if step >= n or r.shape != f32.shape:
        a = error_arrays(f, raw, qp, q)
        local = _local_of(a.f, _rows(f_hat, n), a.q) if f_hat is not None else None
        return stats_of(a, qp), local, a
    q32 = np.empty((n, d), np.float32) if q is None else q.reshape(n, -1)
    e = np.empty((n, d), np.float32)
    fh = _rows(f_hat, n) if f_hat is not None else None
    integer = qp is not None and np.issubdtype(r.dtype, np.integer) and d > 0
    ranges = [np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, r.dtype),
              np.empty(n, r.dtype)]
    parts: list[dict[str, np.ndarray]] = []
    local_parts: list[dict[str, np.ndarray]] = []
    for s in range(0, n, step):
        rows = slice(s, s + step)
        fs, rs, qs, es = f32[rows], r[rows], q32[rows], e[rows]
        if q is None:
            _dequantize_into(rs, qp, qs)
        np.subtract(qs, fs, out=es)
        chunk = ErrorArrays(fs, qs, es, rs)
        if integer:
            got = (fs.min(axis=1), fs.max(axis=1), rs.min(axis=1), rs.max(axis=1))
            for whole, part in zip(ranges, got, strict=True):
                whole[rows] = part
            chunk = ErrorArrays(fs, qs, es, rs, got[:2], got[2:])
        parts.append(stats_of(chunk, qp))
        if fh is not None:
            local_parts.append(_local_of(fs, fh[rows], qs))
    stats = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    local = ({k: np.concatenate([p[k] for p in local_parts]) for k in local_parts[0]}
             if fh is not None else None)
    a = ErrorArrays(f32, q32, e, r, (ranges[0], ranges[1]) if integer else None,
                    (ranges[2], ranges[3]) if integer else None)
    return stats, local, a
