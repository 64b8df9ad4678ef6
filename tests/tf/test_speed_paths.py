"""The faster paths of a trace give the very same numbers (issue 22): on a small model of each of
the three bench kinds of bench/kinds.py, the per-sample statistics of every layer and output are
bit for bit those of the slower path they replace (the SavedModel route of the converter for a
multi-input model and for unrolled LSTMs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qdebug
from bench_modules import bench_module

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _kinds() -> Any:
    return bench_module("kinds", "bench_kinds")


def _small(kind: str) -> tuple[Any, Any]:
    """A small model of ``kind`` and 12 samples (qdebug's sample forms)."""
    k = _kinds()
    if kind == "vgg_edges":
        return k.vgg_edges(shape=(32, 32, 3), width=4), k.images(12, 5, (32, 32, 3))
    if kind == "char_conv1d":
        chars, feats = k.chars(12, 5, words=6, n_chars=5)
        return k.char_conv1d(words=6, chars=5), [[c, f] for c, f in zip(chars, feats, strict=True)]
    return k.lstm_attention(seq_len=8, units=8), k.token_ids(12, 5, seq_len=8)


def _numbers(path: Path) -> dict[str, np.ndarray]:
    with qdebug.open(str(path)) as tr:
        out = {f"layer {k}": v for k, v in tr.layer_sample_stats().items()}
        out["output sqnr_db"] = tr.output_sample_metrics("sqnr_db")
        out["top1"] = tr.top1_match()
        out["layer rows"] = np.array([(r.name, r.status) for r in tr.layers], dtype=object)
    return out


@pytest.mark.parametrize("kind", ["vgg_edges", "char_conv1d", "lstm_attention"])
def test_fast_conversion_route_gives_the_same_statistics_bit_for_bit(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qdebug.tracer import convert

    model, data = _small(kind)
    opts: dict[str, Any] = {"calib": data, "calib_samples": 12, "quiet": True, "batch_size": 4}
    fast = qdebug.trace(model, data, out=tmp_path / "fast.h5", **opts)
    with qdebug.open(str(fast)) as tr:
        assert tr.meta.converter.keras_export == "frozen graph"
    monkeypatch.setattr(convert, "_frozen_converter", lambda model: None)
    slow = qdebug.trace(model, data, out=tmp_path / "slow.h5", **opts)
    with qdebug.open(str(slow)) as tr:
        assert tr.meta.converter.keras_export == "saved model"
    a, b = _numbers(fast), _numbers(slow)
    assert a.keys() == b.keys() and len(a) > 3
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert np.isfinite(a["output sqnr_db"]).all()


@pytest.mark.parametrize("kind", ["vgg_edges", "char_conv1d", "lstm_attention"])
def test_segment_trace_warmed_beside_the_first_batch_gives_the_same_statistics(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Keras re-run's function is traced in a background thread while the first batch's
    interpreters run; it must be the function the first call would have traced: the same
    numbers bit for bit, and (where the shapes were foreseen) no second trace."""
    from qdebug.tracer import segment_runner

    model, data = _small(kind)
    opts: dict[str, Any] = {"calib": data, "calib_samples": 12, "quiet": True, "batch_size": 4}
    chosen: list[str] = []
    compiled = segment_runner.SegmentRunner._compiled

    def spy(self: Any, chunk: dict[str, np.ndarray]) -> Any:
        fn = compiled(self, chunk)
        chosen.append("warm" if fn is not self._fn else "cold")
        if fn is not self._fn:
            assert fn.experimental_get_tracing_count() == 1
        return fn

    monkeypatch.setattr(segment_runner.SegmentRunner, "_compiled", spy)
    warm = qdebug.trace(model, data, out=tmp_path / "warm.h5", **opts)
    assert chosen and set(chosen) == {"warm"}, chosen
    monkeypatch.setattr(segment_runner.SegmentRunner, "warm_up", lambda self, shapes: None)
    chosen.clear()
    cold = qdebug.trace(model, data, out=tmp_path / "cold.h5", **opts)
    assert set(chosen) == {"cold"}
    a, b = _numbers(warm), _numbers(cold)
    assert a.keys() == b.keys() and len(a) > 3
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_the_plain_model_checks_the_first_batch_whole_then_one_sample_a_batch(
    tmp_path: Path,
) -> None:
    """Once the numeric-verify model stands in for the instrumented INT8 interpreter, the
    plain model (the instrumentation check) runs one sample per batch; the trace says how many
    it checked, and ``--xnnpack`` (which compares against it) still has it run every one."""
    model, data = _small("vgg_edges")
    opts: dict[str, Any] = {"calib": data, "calib_samples": 12, "quiet": True, "batch_size": 4}
    sampled = qdebug.trace(model, data, out=tmp_path / "sampled.h5", **opts)
    every = qdebug.trace(model, data, out=tmp_path / "every.h5", xnnpack=True, **opts)
    with qdebug.open(str(sampled)) as a, qdebug.open(str(every)) as b:
        assert a.meta.n_samples == b.meta.n_samples == 12
        assert a.meta.instrumentation_checked_samples == 4 + 1 + 1  # batches of 4, 4, 4
        assert b.meta.instrumentation_checked_samples == 12
        assert a.meta.instrumentation_mismatched_samples == 0
        assert b.meta.kernel_mismatched_samples is not None
    x, y = _numbers(sampled), _numbers(every)
    for key in x:
        np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def _datasets(path: Path) -> dict[str, bytes]:
    """Every dataset of a trace file, as raw bytes (NaN where NaN, -0.0 apart from 0.0)."""
    import h5py

    out: dict[str, bytes] = {}
    with h5py.File(path, "r") as f:
        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                value = obj[()]
                if isinstance(value, np.ndarray) and value.dtype != object:
                    out[name] = value.tobytes()
                else:  # strings: their values, not the addresses of their objects
                    out[name] = repr(value.tolist() if isinstance(value, np.ndarray)
                                     else value).encode()
        f.visititems(visit)
    return out


@pytest.mark.parametrize("kind", ["vgg_edges", "char_conv1d", "lstm_attention"])
def test_layers_reading_their_ops_arrays_give_the_same_trace_bit_for_bit(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer that is an op's tensor takes its per-channel sums, ranges and dequantized
    values from the arrays its op's statistics made, instead of making them again: every
    dataset of the trace (statistics, channel sums, ranges, stored samples) is the same bit
    for bit as when each layer makes its own, and most layers did share."""
    from qdebug.tracer import convert, measure, trace_loop

    model, data = _small(kind)
    opts: dict[str, Any] = {"calib": data, "calib_samples": 12, "quiet": True, "batch_size": 4}
    # Both traces measure the very same INT8 model (TF may order an unrolled LSTM's ops
    # differently from one conversion to the next).
    made: list[Any] = []
    convert_once = convert.convert_int8_and_twin

    def converted(*args: Any, **kwargs: Any) -> Any:
        if not made:
            made.append(convert_once(*args, **kwargs))
        return made[0]

    monkeypatch.setattr(convert, "convert_int8_and_twin", converted)
    took: list[int] = []
    channels_from = measure.Measurer.channels_from

    def spy(self: Any, i: int, f: np.ndarray, a: Any) -> None:
        took.append(i)
        channels_from(self, i, f, a)

    monkeypatch.setattr(measure.Measurer, "channels_from", spy)
    shared = qdebug.trace(model, data, out=tmp_path / "shared.h5", **opts)
    with qdebug.open(str(shared)) as tr:
        measured = sum(1 for r in tr.layers if r.measured)
    assert len(set(took)) >= measured // 2, (len(set(took)), measured)
    monkeypatch.setattr(trace_loop, "_layers_of_ops", lambda *args: {})
    took.clear()
    own = qdebug.trace(model, data, out=tmp_path / "own.h5", **opts)
    assert not took
    a, b = _datasets(shared), _datasets(own)
    assert a.keys() == b.keys() and any(k.startswith("analysis/") for k in a)
    differing = [k for k in a if a[k] != b[k]]
    assert not differing, differing
