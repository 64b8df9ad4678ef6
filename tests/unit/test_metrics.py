"""The metrics module against formulas written out independently (docs/metrics.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qdebug import metrics

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
    stats = metrics.pool(metrics.sample_stats(f, raw, QP))
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
    per = metrics.sample_stats(f, raw, QP)
    per_sample = metrics.derive(per)["sqnr_db"]
    pooled = metrics.derive(metrics.pool(per))["sqnr_db"]
    assert per_sample.shape == (5,)
    assert not np.isclose(pooled, per_sample.mean())


def test_saturation_ignores_the_end_that_represents_zero() -> None:
    relu_qp = metrics.QuantParams(scale=0.1, zero_point=-128)
    f = np.array([[0.0, 0.0, 5.0, 30.0]], dtype=np.float32)
    raw = _quantize(f, relu_qp)
    assert raw.tolist() == [[-128, -128, -78, 127]]
    s = metrics.derive(metrics.sample_stats(f, raw, relu_qp))
    assert s["saturation"][0] == pytest.approx(0.25)  # only the 127, not the exact zeros
    assert s["clip_fraction"][0] == pytest.approx(0.25)  # 30.0 > 12.7 + half an LSB


def test_values_at_the_end_of_the_range_that_round_there_are_not_saturation() -> None:
    """The data's own extremes on the calibrated range's ends (a pixel at the calibrated
    maximum) are exact, not saturation; a value pushed onto the rail by error, or clipped,
    is."""
    qp = metrics.QuantParams(scale=1 / 255, zero_point=-128)  # [0, 1], as for image inputs
    f = np.array([[1.0, 1.0, 0.5, 1.2, 0.9]], dtype=np.float32)
    raw = np.array([[127, 127, 0, 127, 127]], dtype=np.int8)  # the last: error pushed it up
    s = metrics.derive(metrics.sample_stats(f, raw, qp))
    assert s["saturation"][0] == pytest.approx(2 / 5)  # 1.2 (clipped) and 0.9, not the 1.0s
    assert s["clip_fraction"][0] == pytest.approx(1 / 5)


def test_rounding_noise_is_about_0_29_lsb() -> None:
    rng = np.random.default_rng(1)
    qp = metrics.QuantParams(scale=0.01, zero_point=0)
    f = rng.uniform(-1.0, 1.0, size=(4, 50_000)).astype(np.float32)
    s = metrics.derive(
        metrics.pool(metrics.sample_stats(f, _quantize(f, qp), qp)), np.float64(0.01)
    )
    assert s["rmse_lsb"] == pytest.approx(1 / math.sqrt(12), rel=0.02)
    assert s["clip_fraction"] == 0.0


def test_special_values() -> None:
    f = np.ones((1, 4), dtype=np.float32)
    s = metrics.derive(metrics.sample_stats(f, f.copy(), None))
    assert math.isinf(s["sqnr_db"][0]) and s["sqnr_db"][0] > 0
    assert math.isnan(s["rmse_lsb"][0])  # float tensor: no scale
    assert metrics.sqnr_db(np.ones(3), np.array([1.0, 1.0, 1.1])) == pytest.approx(
        10 * math.log10(3 / 0.01), rel=1e-5
    )


def test_top1_match_is_per_sample() -> None:
    f = np.array([[0.1, 0.9], [0.6, 0.4]])
    q = np.array([[0.2, 0.8], [0.4, 0.6]])
    assert metrics.top1_match(f, q).tolist() == [True, False]
