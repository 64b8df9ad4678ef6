"""The trace file: written atomically, read lazily, refused clearly when it is not right."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from qdebug import metrics, sums
from qdebug.analysis.culprits import find_culprits
from qdebug.errors import TraceFileError
from qdebug.store import LayerRecord, OutputRecord, TraceWriter, open_trace


def _writer(path: Path, store: int = 2) -> TraceWriter:
    layers = [
        LayerRecord(
            "x",
            "InputLayer",
            [],
            [None, 4],
            "input",
            tensor_name="t0",
            tensor_index=0,
            dtype="int8",
            scale=0.1,
            zero_point=0,
        ),
        LayerRecord(
            "d",
            "Dense",
            ["x"],
            [None, 4],
            "matched",
            tensor_name="t1",
            tensor_index=1,
            op_type="FULLY_CONNECTED",
            dtype="int8",
            scale=0.05,
            zero_point=-3,
        ),
        LayerRecord("drop", "Dropout", ["d"], [None, 4], "folded", related="d"),
    ]
    outputs = [OutputRecord("d", "d", "t1", 0.05, -3, True)]
    return TraceWriter(
        path,
        attrs={"model_name": "m", "converter": {"calib_samples": 3}},
        layers=layers,
        outputs=outputs,
        input_names=["x"],
        tflite=b"TFL3bytes",
        float_islands=[],
        store_samples=store,
        rank_culprits=find_culprits,
    )


def _batch(w: TraceWriter, f: np.ndarray) -> None:
    qp = metrics.QuantParams(0.05, -3)
    raw = np.clip(np.round(f / 0.05) - 3, -128, 127).astype(np.int8)
    st = sums.sample_stats(f, raw, qp)
    nan = {k: np.full_like(v, np.nan) for k, v in st.items()}
    layers = {k: np.stack([st[k], st[k], nan[k]], axis=1) for k in st}
    w.add_batch(layers, {k: v[:, None] for k, v in st.items()}, np.ones((len(f), 1)))
    for i in range(len(f)):
        if w.wants_samples:
            w.store_sample(i, [f[i]], {0: (f[i], raw[i]), 1: (f[i], raw[i])})


def test_a_batch_of_samples_is_stored_as_sample_by_sample(tmp_path: Path) -> None:
    """``store_samples_of`` (what the trace loop calls once per batch) keeps the samples it
    has room for, in the very datasets ``store_sample`` writes one at a time."""
    rng = np.random.default_rng(1)
    f = rng.normal(size=(5, 4)).astype(np.float32)
    raw = np.clip(np.round(f / 0.05) - 3, -128, 127).astype(np.int8)
    fh = f + np.float32(0.01)
    for name, batched in (("one.h5", False), ("batch.h5", True)):
        with _writer(tmp_path / name, store=3) as w:
            qp = metrics.QuantParams(0.05, -3)
            st = sums.sample_stats(f, raw, qp)
            w.add_batch({k: np.stack([v, v, v], axis=1) for k, v in st.items()},
                        {k: v[:, None] for k, v in st.items()}, np.ones((5, 1)))
            if batched:
                assert w.store_samples_of(10, 5, [f], {1: (f, raw)}, {1: fh}) == 3
                assert not w.wants_samples
                assert w.store_samples_of(15, 5, [f], {1: (f, raw)}, {1: fh}) == 0
            else:
                for i in range(3):
                    w.store_sample(10 + i, [f[i]], {1: (f[i], raw[i])}, {1: fh[i]})
            w.commit()
    with h5py.File(tmp_path / "one.h5") as one, h5py.File(tmp_path / "batch.h5") as batch:
        names: list[str] = []
        one.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        stored = [n for n in names if n.startswith(("activations/", "samples/"))]
        assert len(stored) == 5  # the sample index, the input, float, int8 and f(x̂)
        for n in stored:
            assert np.array_equal(one[n][()], batch[n][()]), n
        assert batch["samples/index"][()].tolist() == [10, 11, 12]


def test_round_trip(tmp_path: Path) -> None:
    f = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    with _writer(tmp_path / "t.h5") as w:
        _batch(w, f[:3])
        _batch(w, f[3:])
        w.commit()
    with open_trace(tmp_path / "t.h5") as tr:
        assert tr.n_samples == 5
        assert [r.name for r in tr.layers] == ["x", "d", "drop"]
        assert tr.layers[2].status == "folded" and tr.layers[2].related == "d"
        assert tr.meta["converter"] == {"calib_samples": 3}
        assert tr.tflite_bytes() == b"TFL3bytes"
        assert tr.stored_samples.tolist() == [0, 1]
        act = tr.activation("d", 1)
        np.testing.assert_array_equal(act.float, f[1])
        assert np.max(np.abs(act.dequantized - f[1])) <= 0.025 + 1e-6
        lm = tr.layer_metrics()
        assert np.isnan(lm["sqnr_db"][2])  # folded: no metrics of its own
        per = tr.layer_sample_metrics("sqnr_db")
        assert per.shape == (5, 3)
        e = act.dequantized.astype(np.float64) - f[1]
        assert per[1, 1] == pytest.approx(
            10 * np.log10((f[1].astype(np.float64) ** 2).sum() / (e**2).sum())
        )
        assert tr.output_metrics()["top1_agreement"][0] == 1.0


def test_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "t.h5"
    with pytest.raises(KeyboardInterrupt), _writer(out) as w:
        _batch(w, np.ones((2, 4), np.float32))
        assert w.tmp.exists() and w.tmp.parent == out.parent
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []  # no trace, partial file or lock


def test_partial_file_is_refused(tmp_path: Path) -> None:
    w = _writer(tmp_path / "t.h5")
    _batch(w, np.ones((2, 4), np.float32))
    w.f.flush()
    shutil.copy(w.tmp, tmp_path / "copy.h5")
    w.discard()
    with pytest.raises(TraceFileError, match="incomplete"):
        open_trace(tmp_path / "copy.h5")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("not hdf5 at all"), "not an HDF5 file"),
        (lambda p: h5py.File(p, "w").close(), "not a qdebug trace"),
    ],
)
def test_bad_files_are_refused_clearly(tmp_path: Path, setup, message: str) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "bad.h5"
    setup(p)
    with pytest.raises(TraceFileError, match=message):
        open_trace(p)


def test_unknown_major_version_is_refused(tmp_path: Path, fixture_trace: Path) -> None:
    p = tmp_path / "new.h5"
    shutil.copy(fixture_trace, p)
    with h5py.File(p, "a") as f:
        f.attrs["schema_version"] = "2.0"
    with pytest.raises(TraceFileError, match=r"schema 2\.0.*Upgrade qdebug"):
        open_trace(p)
    with h5py.File(p, "a") as f:
        f.attrs["schema_version"] = "1.7"  # a newer minor only adds things: still readable
    with open_trace(p) as tr:
        assert tr.n_samples > 0


def test_fixture_reads_with_plain_h5py_as_documented(fixture_trace: Path) -> None:
    with h5py.File(fixture_trace) as f:
        assert f.attrs["schema_version"].split(".")[0] == "1"
        names = [n.decode() for n in f["layers/name"][()]]
        sqnr = f["metrics/layers/pooled/sqnr_db"][()]
        stats = f["metrics/layers/per_sample/sum_e2"][()]
    with open_trace(fixture_trace) as tr:
        assert names == [r.name for r in tr.layers]
        np.testing.assert_array_equal(sqnr, tr.layer_metrics()["sqnr_db"])
        assert stats.shape == (tr.n_samples, len(names))


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump (hdf5-tools) not installed")
def test_h5dump_reads_the_fixture(fixture_trace: Path) -> None:
    out = subprocess.run(
        ["h5dump", "-d", "/layers/name", str(fixture_trace)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    with open_trace(fixture_trace) as tr:
        for r in tr.layers:
            assert f'"{r.name}"' in out
    header = subprocess.run(
        ["h5dump", "-H", str(fixture_trace)], capture_output=True, text=True, check=True
    ).stdout
    assert 'DATASET "int8"' in header and "H5T_STD_I8LE" in header
