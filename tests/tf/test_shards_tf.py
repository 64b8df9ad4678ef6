"""Beyond one machine: ``qdebug trace --shard K/N``, ``qdebug merge``, ``--workers`` and Ray.

The merge of the shards must be the whole run: per-sample statistics, stored samples, worst
samples, ranges and weights bit for bit (shards are cut in whole batches, so every sample is
computed in the batch it has in the whole run), pooled metrics and channel sums to float
rounding, culprits the same.
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import qdebug
from qdebug.cli import cli
from shard_compare import differences

ARGS = ["--calib-samples", "32", "--batch-size", "16", "--store-samples", "20"]



def _run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr



def _one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("qdebug: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]



@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, digits_model, digits_data):  # type: ignore[no-untyped-def]
    """The digits CNN traced whole, in 2 shards and in 3 shards (96 samples, batches of 16),
    plus shard 2/2 of a model whose weights differ."""
    import keras

    d = tmp_path_factory.mktemp("shards")
    digits_model.save(d / "digits.keras")
    other = keras.models.clone_model(digits_model)
    other.set_weights([w * 1.01 for w in digits_model.get_weights()])
    other.save(d / "other.keras")
    np.save(d / "x.npy", digits_data[:96])
    model, data = d / "digits.keras", d / "x.npy"
    code, _, err = _run("trace", model, "--data", data, *ARGS, "-q", "--out", d / "whole.h5")
    assert code == 0, err
    for n in (2, 3):
        for k in range(1, n + 1):
            code, _, err = _run("trace", model, "--data", data, *ARGS, "-q", "--shard", f"{k}/{n}",
                                "--out", d / f"s{k}of{n}.h5")
            assert code == 0, err
    code, _, err = _run("trace", d / "other.keras", "--data", data, *ARGS, "-q",
                        "--shard", "2/2", "--out", d / "other2of2.h5")
    assert code == 0, err
    return d



@pytest.mark.tf
@pytest.mark.slow
def test_a_shard_records_its_slice_and_model(shards: Path) -> None:
    with h5py.File(shards / "s2of3.h5") as f:
        a = f.attrs
        assert a["shard"] == "2/3" and a["shard_start"] == 32 and a["shard_count"] == 32
        assert a["shard_total"] == 96 and a["n_samples"] == 32
        assert a["int8_tflite_sha256"] == hashlib.sha256(f["model/int8_tflite"][()]).hexdigest()
        assert list(f["samples/index"][()]) == list(range(32, 52))  # global positions
        worst = f["samples/worst/index"][()]
        assert len(worst) and all(32 <= w < 64 for w in worst)
        # Same conversion and calibration as the whole run (the first --calib-samples of DATA).
        with h5py.File(shards / "whole.h5") as w:
            assert np.array_equal(w["model/int8_tflite"][()], f["model/int8_tflite"][()])
            assert w.attrs["converter"] == a["converter"]



@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 3])
def test_merge_of_shards_equals_the_whole_run(shards: Path, n: int) -> None:
    out = shards / f"merged{n}.h5"
    parts = [shards / f"s{k}of{n}.h5" for k in range(n, 0, -1)]  # any order
    code, stdout, err = _run("merge", *parts, "--out", out)
    assert code == 0, err
    assert "output probs: SQNR" in stdout and str(out) in stdout
    assert differences(shards / "whole.h5", out) == []
    with h5py.File(out) as f:
        assert "shard" not in f.attrs and f.attrs["n_samples"] == 96
        assert f"merge {parts[0]}" in f.attrs["command_line"]



@pytest.mark.tf
@pytest.mark.slow
def test_merged_trace_opens_in_report_view_and_diff(shards: Path) -> None:
    import qdebug
    from qdebug.output.report_json import report_json
    from qdebug.tui.loaders import SampleMetricsLoaded, load_activation, load_sample_sqnr

    out = shards / "merged_rvd.h5"
    assert _run("merge", shards / "s1of2.h5", shards / "s2of2.h5", "--out", out, "-q")[0] == 0
    with qdebug.open(out) as t:
        assert '"layers"' in report_json(t)
        assert isinstance(load_sample_sqnr(t, 1), SampleMetricsLoaded)
        assert load_sample_sqnr(t, 1).sqnr_db.shape == (96,)  # type: ignore[attr-defined]
        stored = next(i for i in range(len(t.layers)) if t.has_activations(i))
        assert type(load_activation(t, stored, 19)).__name__ == "ActivationLoaded"
    code, stdout, err = _run("diff", shards / "whole.h5", out)
    assert code == 0, stdout + err
    for fmt in ("markdown", "csv"):
        assert _run("report", out, "--format", fmt)[0] == 0



@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.parametrize(
    ("parts", "needles"),
    [
        (["s1of2", "other2of2"], ["different INT8 models", ".tflite sha256"]),
        (["s1of2", "s1of2"], ["overlap"]),
        (["s1of2", "s2of3", "s3of3"], ["overlap", "samples 0–47", "samples 32–63"]),
        (["s1of3", "s3of3"], ["samples 32–63 of 96 are in no shard", "3/3"]),
        (["whole", "s2of2"], ["not a shard trace", "--shard K/N"]),
    ],
    ids=["other-model", "duplicate", "overlapping", "missing", "not-a-shard"],
)
def test_merge_refuses_mismatched_shards_with_one_line(
    shards: Path, parts: list[str], needles: list[str]
) -> None:
    out = shards / "refused.h5"
    code, _, err = _run("merge", *[shards / f"{p}.h5" for p in parts], "--out", out)
    _one_line_error(code, err, *needles)
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()



@pytest.mark.tf
@pytest.mark.slow
def test_merge_exit_code_is_2_from_a_real_process(shards: Path) -> None:
    from cli_helpers import run_qdebug

    done = run_qdebug("merge", shards / "s1of2.h5", shards / "s1of2.h5", "--out",
                      shards / "no.h5")
    _one_line_error(done.returncode, done.stderr, "overlap")



@pytest.mark.tf
def test_merge_runs_where_tensorflow_cannot_be_imported(shards: Path) -> None:
    """qdebug.shards needs no TensorFlow: the merge runs in a process that cannot import it."""
    import subprocess
    import sys

    blocked = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'ai_edge_litert'):\n"
        "            raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, _Block())\n"
        "from qdebug.cli import main\n"
        "sys.argv = ['qdebug'] + sys.argv[1:]\n"
        "main()\n"
    )
    out = shards / "merged_no_tf.h5"
    done = subprocess.run(
        [sys.executable, "-c", blocked, "merge", shards / "s1of3.h5", shards / "s2of3.h5",
         shards / "s3of3.h5", "--out", out, "-q"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert differences(shards / "whole.h5", out) == []


def _trace_process(shards: Path, out: Path, *args: str) -> str:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "qdebug", "trace", shards / "digits.keras", "--data",
         shards / "x.npy", *ARGS, *args, "--out", out],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr



@pytest.fixture(scope="module")
def workers1(shards: Path) -> Path:
    """``--workers 1`` in a process of its own, as the workers are. (A trace made inside the
    test process agrees with them to float rounding only in the Keras re-run's local
    statistics: TensorFlow's state differs between processes; process to process it is bit for
    bit.)"""
    out = shards / "workers1.h5"
    _trace_process(shards, out, "--workers", "1", "-q")
    return out



@pytest.mark.tf
@pytest.mark.slow
def test_workers_2_gives_the_metrics_of_workers_1(shards: Path, workers1: Path) -> None:
    out = shards / "workers2.h5"
    err = _trace_process(shards, out, "--workers", "2")
    assert "shard 1/2" in err and "shard 2/2" in err and "merge 2" in err
    assert differences(workers1, out) == []
    assert [p.name for p in shards.iterdir() if ".shards-" in p.name] == []  # shards deleted
    with h5py.File(out) as f:
        assert "--workers 2" in f.attrs["command_line"]



@pytest.mark.tf
@pytest.mark.slow
def test_a_failing_worker_is_one_line(shards: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npy"
    x = np.load(shards / "x.npy")
    x[70, 0, 0, 0] = np.nan  # in shard 2/2 only
    np.save(bad, x)
    from cli_helpers import run_qdebug

    done = run_qdebug("trace", shards / "digits.keras", "--data", bad, *ARGS, "--workers", "2",
                      "--out", tmp_path / "t.h5", "-q")
    _one_line_error(done.returncode, done.stderr, "shard 2/2 failed", "contains NaN")
    assert list(tmp_path.iterdir()) == [bad]



@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="ray is not installed (pip install 'qdebug[ray]')")
def test_shards_as_ray_tasks_on_a_local_cluster(shards: Path, workers1: Path) -> None:
    import ray

    from qdebug.shards.ray_tasks import trace_on_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = trace_on_ray(str(shards / "digits.keras"), ["--data", str(shards / "x.npy"), *ARGS],
                           shards / "ray.h5", shards=2, quiet=True)
    finally:
        ray.shutdown()
    assert differences(workers1, out) == []



def test_merged_xnnpack_numbers_are_the_whole_runs(tmp_path: Path, digits_model, digits_data):  # type: ignore[no-untyped-def]
    """--xnnpack in shards: the merge pools the deployment kernels' sums (it copied the first
    shard's numbers)."""
    digits_model.save(tmp_path / "digits.keras")
    np.save(tmp_path / "x.npy", digits_data[:64])
    base = [tmp_path / "digits.keras", "--data", tmp_path / "x.npy", *ARGS, "-q", "--xnnpack"]
    assert _run("trace", *base, "--out", tmp_path / "whole.h5")[0] == 0
    for k in (1, 2):
        assert _run("trace", *base, "--shard", f"{k}/2", "--out", tmp_path / f"x{k}.h5")[0] == 0
    code, _, err = _run("merge", tmp_path / "x1.h5", tmp_path / "x2.h5", "--out",
                        tmp_path / "m.h5", "-q")
    assert code == 0, err
    with qdebug.open(tmp_path / "whole.h5") as w, qdebug.open(tmp_path / "m.h5") as m, \
            qdebug.open(tmp_path / "x1.h5") as s1:
        (whole,), (merged,) = w.meta.kernel_outputs, m.meta.kernel_outputs
        assert merged.sqnr_db == pytest.approx(whole.sqnr_db, abs=1e-9)
        assert merged.top1_agreement == pytest.approx(whole.top1_agreement)
        assert merged.max_abs_diff_lsb == whole.max_abs_diff_lsb
        assert m.meta.kernel_mismatched_samples == w.meta.kernel_mismatched_samples
        assert m.meta["kernel_samples"] == 64 and s1.meta["kernel_samples"] == 32
