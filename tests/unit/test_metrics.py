"""The metrics module against formulas written out independently (docs/metrics.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qdebug import metrics, sums

QP = metrics.QuantParams(scale=0.05, zero_point=-10)


def _quantize(f: np.ndarray, qp: metrics.QuantParams) -> np.ndarray:
    return np.clip(np.round(f / qp.scale) + qp.zero_point, qp.qmin, qp.qmax).astype(np.int8)


@pytest.fixture()
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    f = rng.normal(0, 3, size=(5, 7, 3)).astype(np.float32)  # some values beyond the range
    return f, _quantize(f, QP)


def test_pooled_metrics_match_written_out_formulas(pair: tuple[np.ndarray, np.ndarray]) -> None:
    f, raw = pair
    stats = metrics.pool(sums.sample_stats(f, raw, QP))
    got = {
        k: pytest.approx(float(v), rel=1e-5)
        for k, v in metrics.derive(stats, np.float64(QP.scale)).items()
    }  # dequantized in float32
    fd = f.astype(np.float64).ravel()
    q = (raw.astype(np.float64).ravel() - QP.zero_point) * QP.scale
    e = q - fd
    assert got["sqnr_db"] == 10 * math.log10((fd**2).sum() / (e**2).sum())
    assert got["mse"] == (e**2).mean()
    assert got["rmse_lsb"] == math.sqrt((e**2).mean()) / QP.scale
    assert got["max_abs_error"] == np.abs(e).max()
    assert got["mean_error"] == e.mean()
    assert got["cosine"] == fd @ q / math.sqrt((fd @ fd) * (q @ q))
    low, high = (-128 - QP.zero_point) * QP.scale, (127 - QP.zero_point) * QP.scale
    clipped = (fd < low - QP.scale / 2) | (fd > high + QP.scale / 2)
    assert clipped.any()
    assert got["clip_fraction"] == clipped.mean()
    assert got["clip_share"] == (e[clipped] ** 2).sum() / (e**2).sum()
    r = raw.ravel()
    # at an end, and the float value does not round to that end (clipped here)
    sat = ((r == -128) & (np.abs(fd - low) > QP.scale / 2)) | (
        (r == 127) & (np.abs(fd - high) > QP.scale / 2))
    assert sat.any() and got["saturation"] == sat.mean()


def test_pooled_sqnr_is_not_the_mean_of_per_sample_sqnr(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    f, raw = pair
    f = f * np.array([1, 0.1, 0.01, 1, 1], dtype=np.float32)[:, None, None]
    raw = _quantize(f, QP)
    per = sums.sample_stats(f, raw, QP)
    per_sample = metrics.derive(per)["sqnr_db"]
    pooled = metrics.derive(metrics.pool(per))["sqnr_db"]
    assert per_sample.shape == (5,)
    assert not np.isclose(pooled, per_sample.mean())


def test_saturation_ignores_the_end_that_represents_zero() -> None:
    relu_qp = metrics.QuantParams(scale=0.1, zero_point=-128)
    f = np.array([[0.0, 0.0, 5.0, 30.0]], dtype=np.float32)
    raw = _quantize(f, relu_qp)
    assert raw.tolist() == [[-128, -128, -78, 127]]
    s = metrics.derive(sums.sample_stats(f, raw, relu_qp))
    assert s["saturation"][0] == pytest.approx(0.25)  # only the 127, not the exact zeros
    assert s["clip_fraction"][0] == pytest.approx(0.25)  # 30.0 > 12.7 + half an LSB


def test_values_at_the_end_of_the_range_that_round_there_are_not_saturation() -> None:
    """The data's own extremes on the calibrated range's ends (a pixel at the calibrated
    maximum) are exact, not saturation; a value pushed onto the rail by error, or clipped,
    is."""
    qp = metrics.QuantParams(scale=1 / 255, zero_point=-128)  # [0, 1], as for image inputs
    f = np.array([[1.0, 1.0, 0.5, 1.2, 0.9]], dtype=np.float32)
    raw = np.array([[127, 127, 0, 127, 127]], dtype=np.int8)  # the last: error pushed it up
    s = metrics.derive(sums.sample_stats(f, raw, qp))
    assert s["saturation"][0] == pytest.approx(2 / 5)  # 1.2 (clipped) and 0.9, not the 1.0s
    assert s["clip_fraction"][0] == pytest.approx(1 / 5)


def test_rounding_noise_is_about_0_29_lsb() -> None:
    rng = np.random.default_rng(1)
    qp = metrics.QuantParams(scale=0.01, zero_point=0)
    f = rng.uniform(-1.0, 1.0, size=(4, 50_000)).astype(np.float32)
    s = metrics.derive(
        metrics.pool(sums.sample_stats(f, _quantize(f, qp), qp)), np.float64(0.01)
    )
    assert s["rmse_lsb"] == pytest.approx(1 / math.sqrt(12), rel=0.02)
    assert s["clip_fraction"] == 0.0


def test_special_values() -> None:
    f = np.ones((1, 4), dtype=np.float32)
    s = metrics.derive(sums.sample_stats(f, f.copy(), None))
    assert math.isinf(s["sqnr_db"][0]) and s["sqnr_db"][0] > 0
    assert math.isnan(s["rmse_lsb"][0])  # float tensor: no scale
    assert metrics.sqnr_db(np.ones(3), np.array([1.0, 1.0, 1.1])) == pytest.approx(
        10 * math.log10(3 / 0.01), rel=1e-5
    )


def test_top1_match_is_per_sample() -> None:
    f = np.array([[0.1, 0.9], [0.6, 0.4]])
    q = np.array([[0.2, 0.8], [0.4, 0.6]])
    assert metrics.top1_match(f, q).tolist() == [True, False]


def _tensor(shape: tuple[int, ...], dtype: str, seed: int) -> tuple[np.ndarray, np.ndarray,
                                                                    metrics.QuantParams | None]:
    """A float batch and the int8 (int16, or float island) tensor of it, rows clipping."""
    rng = np.random.default_rng(seed)
    f = (rng.normal(0, 1, shape) * rng.uniform(0.2, 3.0, (shape[0],) + (1,) * (len(shape) - 1))
         ).astype(np.float32)
    if dtype == "float32":
        return f, (f + rng.normal(0, 0.01, shape)).astype(np.float32), None
    qp = (metrics.QuantParams(0.02, -3) if dtype == "int8"
          else metrics.QuantParams(1e-4, 0, -32768, 32767))
    raw = np.clip(np.round(f / qp.scale) + qp.zero_point, qp.qmin, qp.qmax).astype(dtype)
    return f, raw, qp


@pytest.mark.parametrize("dtype", ["int8", "int16", "float32"])
@pytest.mark.parametrize("chunk", [1, 7, 1 << 30])
def test_tensor_stats_in_chunks_are_the_batchs_bit_for_bit(
    dtype: str, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tensor_stats`` works on a large tensor a few samples at a time; every statistic, the
    local ones and the arrays it hands on are those of ``sample_stats``, ``local_stats`` and
    ``dequantize`` over the whole batch at once, bit for bit (rows clip and saturate)."""
    monkeypatch.setattr(sums, "CHUNK_ELEMENTS", chunk * 6 * 5 * 4)
    f, raw, qp = _tensor((11, 6, 5, 4), dtype, seed=len(dtype) + chunk)
    f_hat = (f + np.random.default_rng(1).normal(0, 0.05, f.shape)).astype(np.float32)
    stats, local, a = sums.tensor_stats(f, raw, qp, f_hat=f_hat)
    q = metrics.dequantize(raw, qp)
    want = sums.sample_stats(f, raw, qp)
    want_local = sums.local_stats(f, f_hat, raw, qp, np.zeros(11))
    assert local is not None and stats.keys() == want.keys()
    for k, v in want.items():
        assert v.tobytes() == stats[k].tobytes(), k
    for k in metrics.LOCAL_STATS[:-1]:
        assert want_local[k].tobytes() == local[k].tobytes(), k
    assert a.q.tobytes() == q.tobytes() and a.e.tobytes() == (q - f).tobytes()
    if qp is not None:
        assert want["clipped"].sum() > 0 and want["saturated"].sum() > 0
        assert a.f_range is not None and a.raw_range is not None
        assert a.f_range[1].tobytes() == f.reshape(11, -1).max(axis=1).tobytes()
        assert a.raw_range[0].tobytes() == raw.reshape(11, -1).min(axis=1).tobytes()
    else:
        assert a.f_range is None
