"""User metrics of arrays (``--metric`` with ``kind = "per_sample"``, ``--output-metric``):
loading and its refusals, the streaming mean over samples against numpy, failures kept as NaN
with their error, and the exact merge of per-sample means from shards."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from qdebug import metrics, user_metrics
from qdebug.errors import QdebugError
from qdebug.tracer.sample_metrics import SampleMetrics
from qdebug.user_metrics import PER_SAMPLE, POOLED, WHOLE_SET, StoredMetric


def p95_abs(f, q):  # type: ignore[no-untyped-def]
    """95th percentile of |q − f|"""
    return np.percentile(np.abs(q - f), 95)


p95_abs.kind = "per_sample"  # type: ignore[attr-defined]
p95_abs.unit = "value"  # type: ignore[attr-defined]


def same_top(fo, qo):  # type: ignore[no-untyped-def]
    """1 when the first output's arg-max agrees"""
    return float(np.argmax(fo[0]) == np.argmax(qo[0]))


def whole_mae(fo, qo):  # type: ignore[no-untyped-def]
    """mean |q − f| of the first output over the whole set"""
    return float(np.mean(np.abs(qo[0] - fo[0])))


whole_mae.kind = "whole_set"  # type: ignore[attr-defined]


def bias(stats, scale):  # type: ignore[no-untyped-def]
    """Σe/n"""
    return stats["sum_e"] / stats["count"]


def test_each_kind_goes_where_it_is_computed() -> None:
    u = user_metrics.load_user_metrics([bias, p95_abs], [same_top, whole_mae])
    assert [m.metric.name for m in u.pooled] == ["bias"]
    assert [(m.name, m.kind, m.unit) for m in u.per_sample] == [("p95_abs", PER_SAMPLE, "value")]
    assert [(m.name, m.kind) for m in u.outputs] == [("same_top", PER_SAMPLE),
                                                     ("whole_mae", WHOLE_SET)]
    assert u.per_sample[0].definition == "95th percentile of |q − f|"
    assert u.on_arrays and not user_metrics.load_user_metrics([bias]).on_arrays


def _fn(kind: object = None, body: str = "return 0.0", name: str = "fn"):  # type: ignore[no-untyped-def]
    ns: dict[str, object] = {"np": np}
    exec(f"def {name}(a, b):\n    {body}\n", ns)
    fn = ns[name]
    if kind is not None:
        fn.kind = kind  # type: ignore[attr-defined]
    return fn


@pytest.mark.parametrize(("metric", "output", "needle"), [
    ([_fn("per_sample", "return a.nope")], [], "failed on a test sample: AttributeError"),
    ([_fn("per_sample", "return np.abs(b - a)")], [], "returned 4 values of shape (1, 4)"),
    ([_fn("by_pixel")], [], "its kind 'by_pixel' is not one of per_sample, pooled"),
    ([], [_fn("pooled")], "--output-metric fn: its kind 'pooled' is not one of"),
    ([_fn("per_sample", name="sqnr_db")], [], "'sqnr_db' is a built-in metric"),
    ([_fn("per_sample")], [_fn()], "two metrics named 'fn'"),
])
def test_a_bad_array_metric_is_refused_before_tracing(
    metric: list[object], output: list[object], needle: str
) -> None:
    with pytest.raises(QdebugError) as err:
        user_metrics.load_user_metrics(metric, output)
    assert needle in str(err.value)


def test_an_output_metric_file_that_does_not_exist_is_named_with_its_option(
    tmp_path: Path,
) -> None:
    with pytest.raises(QdebugError, match=r"--output-metric .*nope\.py: no such file"):
        user_metrics.load_user_metrics([], [f"{tmp_path / 'nope.py'}:iou"])


def _tensors(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two tensors of a batch of ``n``: int8 raw values around float ones (scale 0.1)."""
    out = []
    for shape in ((n, 6), (n, 2, 3, 4)):
        f = rng.normal(size=shape).astype(np.float32)
        raw = np.clip(np.round(f / 0.1 + rng.normal(0, 0.5, shape)), -128, 127).astype(np.int8)
        out.append((f, raw))
    return out


def test_the_mean_over_samples_streams_batch_by_batch_and_equals_numpy() -> None:
    rng = np.random.default_rng(0)
    qp = metrics.QuantParams(0.1, 0)
    u = user_metrics.load_user_metrics([p95_abs], [same_top, whole_mae])
    sm = SampleMetrics(u, {"layers": ["a", "b"]})
    every: list[list[tuple[np.ndarray, np.ndarray]]] = []
    for n in (5, 5, 3):  # batches of the tracer, the last one short
        batch = _tensors(rng, n)
        every.append(batch)
        sm.add_tensors("layers", ((c, f, raw, qp) for c, (f, raw) in enumerate(batch)))
        sm.add_outputs([batch[0][0]], [metrics.dequantize(batch[0][1], qp)])
    got = sm.stored()
    for col in (0, 1):
        f = np.concatenate([b[col][0] for b in every])
        q = np.concatenate([b[col][1] for b in every]).astype(np.float64) * 0.1
        want = np.mean([np.percentile(np.abs(q[s] - f[s]), 95) for s in range(13)])
        assert got["layers"][0].values[col] == pytest.approx(want, rel=1e-6)
        assert got["layers"][0].samples[col] == 13  # type: ignore[index]
    f0 = np.concatenate([b[0][0] for b in every])
    q0 = np.concatenate([b[0][1] for b in every]).astype(np.float64) * 0.1
    top, whole = got["model"]
    assert top.values[0] == pytest.approx(np.mean(np.argmax(f0, 1) == np.argmax(q0, 1)))
    assert whole.kind == WHOLE_SET and whole.samples[0] == 13  # type: ignore[index]
    assert whole.values[0] == pytest.approx(np.mean(np.abs(q0 - f0)), rel=1e-6)


def test_nan_is_left_out_and_a_failing_tensor_keeps_its_error() -> None:
    def picky(f, q):  # type: ignore[no-untyped-def]
        """NaN on negative sums, fails on 4-D tensors"""
        if f.ndim > 2:
            raise ValueError("flat tensors only")
        return float(f.sum()) if f.sum() > 0 else float("nan")

    picky.kind = "per_sample"  # type: ignore[attr-defined]
    rng = np.random.default_rng(1)
    sm = SampleMetrics(user_metrics.load_user_metrics([picky]), {"ops": ["flat", "conv"]})
    batch = _tensors(rng, 16)
    sm.add_tensors("ops", ((c, f, f, None) for c, (f, _) in enumerate(batch)))
    (m,) = sm.stored()["ops"]
    sums = batch[0][0].sum(axis=1)
    assert m.samples[0] == (sums > 0).sum() > 0  # type: ignore[index]
    assert m.values[0] == pytest.approx(sums[sums > 0].mean(), rel=1e-6)
    assert np.isnan(m.values[1]) and m.error == "conv: ValueError: flat tensors only"


def test_whole_set_outputs_beyond_the_cap_are_dropped_with_a_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import qdebug.tracer.sample_metrics as sample_metrics

    monkeypatch.setattr(sample_metrics, "WHOLE_SET_BYTES", 1000)
    sm = SampleMetrics(user_metrics.load_user_metrics([], [whole_mae]), {})
    for _ in range(3):
        x = np.ones((10, 10), dtype=np.float32)  # 400 bytes, twice per batch
        sm.add_outputs([x], [x])
    (m,) = sm.stored()["model"]
    assert np.isnan(m.values[0]) and "the outputs of 20 samples exceed" in m.error


def _stored(values: list[float], samples: list[int], kind: str = PER_SAMPLE) -> StoredMetric:
    return StoredMetric("m", "", "d", "s.py:m", np.array(values), "", kind,
                        np.array(samples) if kind == PER_SAMPLE else None)


def test_shards_merge_into_the_sample_weighted_mean_which_is_the_whole_runs_mean() -> None:
    rng = np.random.default_rng(2)
    per_sample = rng.normal(size=(40, 3))
    per_sample[30:, 2] = np.nan  # a tensor with no value on the last shard's samples
    cuts = [(0, 7), (7, 30), (30, 40)]
    shards = []
    for a, b in cuts:
        part = per_sample[a:b]
        n = np.isfinite(part).sum(axis=0)
        means = [part[:, c][np.isfinite(part[:, c])].mean() if n[c] else np.nan
                 for c in range(3)]
        shards.append({"m": _stored(means, list(n))})
    (merged,) = user_metrics.merge_stored(shards, 3)
    np.testing.assert_allclose(merged.values, np.nanmean(per_sample, axis=0), rtol=1e-12)
    assert list(merged.samples) == [40, 40, 30]  # type: ignore[arg-type]
    assert not merged.error


def test_metrics_that_need_their_function_are_kept_as_nan_with_the_reason() -> None:
    pooled = [{"m": _stored([1.0], [], POOLED)}, {"m": _stored([2.0], [], POOLED)}]
    (m,) = user_metrics.merge_stored(pooled, 1)
    assert np.isnan(m.values).all() and "Trace.layer_pooled_stats()" in m.error
    whole = [{"m": _stored([0.25], [], WHOLE_SET)}, {"m": _stored([0.5], [], WHOLE_SET)}]
    (m,) = user_metrics.merge_stored(whole, 1)
    assert np.isnan(m.values).all() and "the shards' values: 0.25, 0.5" in m.error
    (m,) = user_metrics.merge_stored([{"m": _stored([1.0], [3])}, {}], 1)
    assert np.isnan(m.values).all() and m.error == "only 1 of 2 shards have it"


def test_stored_values_carry_kind_and_sample_counts(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "t.h5", "w") as f:
        user_metrics.write_stored(f.create_group("ops"), [_stored([0.5, np.nan], [4, 0])])
        ds = f["ops/custom/m"]
        assert ds.attrs["kind"] == PER_SAMPLE and ds.attrs["source"] == "s.py:m"
        assert list(f["ops/custom_samples/m"][()]) == [4, 0]


def test_workers_get_each_metric_as_its_own_option() -> None:
    from qdebug.cli import trace
    from qdebug.cli.sharding import forwarded_args

    ctx = trace.make_context("trace", [
        "m.keras", "--data", "x.npy", "--workers", "2", "--metric", "a.py:p99",
        "--metric", "a.py:bias", "--output-metric", "a.py:iou",
    ])
    args = forwarded_args(ctx)
    pairs = list(zip(args[::2], args[1::2], strict=False))
    assert ("--metric", "a.py:p99") in pairs and ("--metric", "a.py:bias") in pairs
    assert ("--output-metric", "a.py:iou") in pairs


def test_a_bad_spec_is_refused_before_tensorflow_loads(tmp_path: Path) -> None:
    import sys

    from click.testing import CliRunner

    from qdebug.cli import cli

    (tmp_path / "m.keras").write_bytes(b"PK\x03\x04")
    np.save(tmp_path / "x.npy", np.zeros((2, 3), dtype=np.float32))
    bad = tmp_path / "bad.py"
    bad.write_text("def broken(f, q):\n    return f.nope\nbroken.kind = 'per_sample'\n")
    had_tf = "tensorflow" in sys.modules
    for option, spec, needle in (
        ("--metric", f"{bad}:broken", "failed on a test sample: AttributeError"),
        ("--output-metric", f"{bad}:missing", "has no 'missing'"),
    ):
        r = CliRunner().invoke(cli, ["trace", str(tmp_path / "m.keras"), "--data",
                                     str(tmp_path / "x.npy"), "--out", str(tmp_path / "t.h5"),
                                     option, spec])
        assert r.exit_code == 2 and needle in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert had_tf or "tensorflow" not in sys.modules
    assert not (tmp_path / "t.h5").exists()


def test_counts_from_a_strangers_shard_that_are_no_counts_weigh_nothing() -> None:
    bad = StoredMetric("m", "", "", "", np.array([1.0, 2.0]), "", PER_SAMPLE,
                       np.array([np.nan, -3.0]))
    (m,) = user_metrics.merge_stored([{"m": bad}, {"m": _stored([3.0, 4.0], [2, 2])}], 2)
    assert list(m.values) == [3.0, 4.0] and list(m.samples) == [2, 2]  # type: ignore[arg-type]


def test_a_metric_cannot_write_into_the_tracers_arrays() -> None:
    def clobber(f, q):  # type: ignore[no-untyped-def]
        """writes into its input"""
        f[...] = 0
        return 0.0

    clobber.kind = "per_sample"  # type: ignore[attr-defined]
    with pytest.raises(QdebugError, match=r"failed on a test sample: ValueError: .*read-only"):
        user_metrics.load_user_metrics([clobber])
    m = user_metrics.ArrayMetric("clobber", "", "", "", clobber, PER_SAMPLE)
    f = np.arange(6, dtype=np.float32).reshape(2, 3) + 1
    sm = SampleMetrics(user_metrics.UserMetrics(per_sample=(m,)), {"layers": ["a"]})
    sm.add_tensors("layers", [(0, f, f, None)])  # a float island: q is f's own buffer
    (got,) = sm.stored()["layers"]
    assert np.isnan(got.values[0]) and "read-only" in got.error
    assert f.min() == 1.0


def _with_metrics(tmp_path: Path) -> Path:
    """A synthetic trace given a per-sample layer metric and an output metric as the tracer
    writes them (``user_metrics.write_stored``)."""
    from synthetic_traces import make_trace

    path = make_trace(tmp_path / "t.h5", layers=4, samples=8)
    with h5py.File(path, "a") as f:
        user_metrics.write_stored(f["metrics/layers"], [
            StoredMetric("p99", "LSB", "99th percentile", "m.py:p99",
                         np.array([0.5, 1.25, np.nan, 2.0]), "", PER_SAMPLE,
                         np.array([8, 8, 0, 8]))])
        user_metrics.write_stored(f["metrics"].require_group("model"), [
            StoredMetric("iou", "", "IoU of the masks", "m.py:iou", np.array([0.875]), "",
                         WHOLE_SET, np.array([8]))])
    return path


def test_reports_show_stored_array_metrics_without_their_code(tmp_path: Path) -> None:
    import csv
    import io

    import qdebug
    from qdebug.output.report_csv import report_csv
    from qdebug.output.report_markdown import report_markdown

    with qdebug.open(_with_metrics(tmp_path)) as tr:
        rows = list(csv.DictReader(io.StringIO(report_csv(tr))))
        text = report_markdown(tr)
    assert [r["p99"] for r in rows] == ["0.5", "1.25", "", "2.0"]
    assert {r["iou"] for r in rows} == {"0.875"}
    assert "| `iou` | whole_set | 0.875 | — | IoU of the masks |" in text
    assert "| `p99` | per_sample | per layer (table below) | LSB | 99th percentile |" in text


def test_a_damaged_sample_count_is_one_clear_error(tmp_path: Path) -> None:
    import qdebug
    from qdebug.errors import TraceFileError

    path = _with_metrics(tmp_path)
    with h5py.File(path, "a") as f:
        del f["metrics/model/custom_samples/iou"]
        f["metrics/model/custom_samples/iou"] = np.zeros(10**5)
    with qdebug.open(path) as tr, pytest.raises(TraceFileError,
                                                match="custom_samples/iou has shape"):
        tr.custom_metrics("model")
