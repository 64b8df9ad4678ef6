"""qdebug export: exact bytes back, inputs by name, atomic, never overwrites without --force."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import h5py
import numpy as np
import pytest

import qdebug
from cli_helpers import run_qdebug
from qdebug.errors import QdebugError
from qdebug.output import export as export_module
from qdebug.output.export import export_trace


def test_export_round_trips_the_exact_model_and_inputs(fixture_trace: Path, tmp_path: Path) -> None:
    model, inputs = tmp_path / "m.tflite", tmp_path / "in.npz"
    out = run_qdebug("export", fixture_trace, "--tflite", model, "--inputs", inputs)
    assert out.returncode == 0, out.stderr
    assert f"wrote {model}" in out.stdout
    with qdebug.open(fixture_trace) as tr:  # the 8 stored, and the kept inputs of worst samples
        samples = [int(s) for s in tr.input_samples()]
        kept = {s: tr.inputs(s)["image"] for s in samples}
    assert samples[:8] == list(range(8)) and len(samples) > 8
    assert f"inputs of samples {samples}" in out.stdout
    with h5py.File(fixture_trace) as f:
        stored_model = f["model/int8_tflite"][()].tobytes()
        stored_inputs = f["samples/inputs/0"][()]
        name = f["samples/inputs/0"].attrs["name"]
    assert model.read_bytes() == stored_model and model.read_bytes()[4:8] == b"TFL3"
    with np.load(inputs) as z:
        assert list(z.keys()) == [name, "qdebug_sample_index"] and name == "image"
        assert z["qdebug_sample_index"].tolist() == samples  # which samples they are
        np.testing.assert_array_equal(z["image"][:8], stored_inputs)
        for pos, s in enumerate(samples):
            np.testing.assert_array_equal(z["image"][pos], kept[s])
        assert z["image"].dtype == np.float32 and z["image"].shape == (len(samples), 8, 8, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "m.tflite"]


def test_export_refuses_to_overwrite_without_force(fixture_trace: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(b"keep me")
    inputs = tmp_path / "in.npz"
    out = run_qdebug("export", fixture_trace, "--inputs", inputs, "--tflite", model)
    assert out.returncode == 2 and "exists; not overwriting it" in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert model.read_bytes() == b"keep me" and not inputs.exists()  # checked before writing
    assert run_qdebug("export", fixture_trace, "--tflite", model, "--force").returncode == 0
    with h5py.File(fixture_trace) as f:
        assert model.read_bytes() == f["model/int8_tflite"][()].tobytes()


def test_an_interrupted_export_leaves_nothing(
    fixture_trace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(content: bytes):  # type: ignore[no-untyped-def]
        def write(fh: BinaryIO) -> None:
            fh.write(content[:100])
            raise KeyboardInterrupt

        return write

    monkeypatch.setattr(export_module, "_bytes_writer", failing)
    with qdebug.open(fixture_trace) as tr, pytest.raises(KeyboardInterrupt):
        export_trace(tr, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing to export"),
        (("--tflite", "{tmp}/x.bin", "--inputs", "{tmp}/x.bin"), "the same file"),
        (("--tflite", "{tmp}/no/such/dir/m.tflite"), "does not exist"),
        (("--tflite", "{tmp}"), "is a folder"),
    ],
)
def test_bad_export_requests_exit_2(
    fixture_trace: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    out = run_qdebug("export", fixture_trace, *(a.format(tmp=tmp_path) for a in args))
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1


def test_a_trace_without_stored_samples_has_no_inputs(tmp_path: Path) -> None:
    from synthetic_traces import make_trace

    path = make_trace(tmp_path / "t.h5", store=0)
    with qdebug.open(path) as tr, pytest.raises(QdebugError, match="stores no samples"):
        export_trace(tr, inputs=tmp_path / "in.npz")
    assert not (tmp_path / "in.npz").exists()


def test_slim_export_keeps_every_metric_and_opens_everywhere(tmp_path: Path) -> None:
    """--slim drops the stored activations and nothing else: metrics, tables, culprits, model
    and inputs read back equal, and report/diff run on it."""
    import shutil

    from click.testing import CliRunner

    import qdebug
    from qdebug.cli import cli

    src = tmp_path / "full.h5"
    shutil.copy(Path(__file__).resolve().parents[1] / "fixtures" / "digits.h5", src)
    out = tmp_path / "slim.h5"
    r = CliRunner().invoke(cli, ["export", str(src), "--slim", str(out)])
    assert r.exit_code == 0, r.stderr
    assert out.stat().st_size < src.stat().st_size
    with h5py.File(out, "r") as f:
        assert len(f["activations"]) == 0 and f.attrs["slim"]
    with qdebug.open(str(src)) as a, qdebug.open(str(out)) as b:
        for key, value in a.layer_metrics().items():
            np.testing.assert_array_equal(value, b.layer_metrics()[key])
        assert [c.layer for c in a.culprits()] == [c.layer for c in b.culprits()]
        assert a.tflite_bytes() == b.tflite_bytes()
        s = int(a.stored_samples[0])
        assert a.has_activations(3) and not b.has_activations(3)
        np.testing.assert_array_equal(a.inputs(s)["image"], b.inputs(s)["image"])
    for args in (["report", str(out)], ["report", str(out), "--format", "json"],
                 ["diff", str(src), str(out)]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, (args, res.stderr)
    again = CliRunner().invoke(cli, ["export", str(src), "--slim", str(out)])
    assert again.exit_code == 2 and "--force" in again.stderr


def test_slim_no_model_keeps_the_sha256_and_says_where_the_model_is(tmp_path: Path) -> None:
    """--slim --no-model: a trace whose INT8 model fills it (24 MB of incompressible weights,
    as ResNet50's) becomes one to attach; the model's sha256 and the converter settings stay,
    everything else reads as before, and --tflite on the copy is one line naming the cause."""
    import hashlib
    import shutil

    from click.testing import CliRunner

    from qdebug.cli import cli

    src = tmp_path / "full.h5"
    shutil.copy(Path(__file__).resolve().parents[1] / "fixtures" / "digits.h5", src)
    weights = np.random.default_rng(0).integers(0, 256, 24 * 2**20, dtype=np.uint8)
    with h5py.File(src, "r+") as f:
        del f["model/int8_tflite"]
        f["model"].create_dataset("int8_tflite", data=weights, compression="gzip")
    assert src.stat().st_size > 25e6
    out = tmp_path / "small.h5"
    r = CliRunner().invoke(cli, ["export", str(src), "--slim", str(out), "--no-model"])
    assert r.exit_code == 0, r.stderr
    assert "without its stored activations and INT8 model" in r.stdout
    assert out.stat().st_size < 25e6 / 8
    with h5py.File(out, "r") as f:  # plain h5py: no model bytes, the sha256 of the real ones
        assert "int8_tflite" not in f["model"] and bool(f.attrs["model_removed"])
        assert f.attrs["int8_tflite_sha256"] == hashlib.sha256(weights.tobytes()).hexdigest()
    with qdebug.open(str(src)) as a, qdebug.open(str(out)) as b:
        assert a.has_model and not b.has_model and b.model_stored_bytes() == 0
        assert a.meta["converter"] == b.meta["converter"]
        for key, value in a.layer_metrics().items():
            np.testing.assert_array_equal(value, b.layer_metrics()[key])
        assert [c.layer for c in a.culprits()] == [c.layer for c in b.culprits()]
    for args in (["report", str(out)], ["report", str(out), "--format", "json"],
                 ["diff", str(src), str(out)]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, (args, res.stderr)
    model = tmp_path / "m.tflite"
    res = run_qdebug("export", str(out), "--tflite", str(model))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "--no-model" in res.stderr and "Traceback" not in res.stderr
    assert not model.exists()
    alone = CliRunner().invoke(cli, ["export", str(src), "--no-model"])
    assert alone.exit_code == 2 and "--no-model goes with --slim" in alone.stderr
