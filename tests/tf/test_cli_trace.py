"""`qdebug trace` from the command line: a real run, and bad input answered with one line,
exit code 2, no traceback and no file left behind."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli_helpers import assert_one_line_error
from qdebug.cli import cli

pytestmark = [pytest.mark.tf]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, digits_model, digits_data):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("cli")
    digits_model.save(d / "digits.keras")
    x = digits_data[:40]
    np.save(d / "x.npy", x)
    np.save(d / "x64.npy", x.astype(np.float64))
    np.save(d / "xu8.npy", (x * 255).astype(np.uint8))
    bad = x.copy()
    bad[7, 2, 3, 0] = np.nan
    np.save(d / "nan.npy", bad)
    inf = x.copy()
    inf[3, 0, 0, 0] = np.inf
    np.save(d / "inf.npy", inf)
    np.save(d / "shape.npy", x[:, :6])
    np.save(d / "empty.npy", x[:0])
    np.save(d / "one.npy", x[0])
    (d / "notmodel.keras").write_text("hello")
    with h5py.File(d / "notmodel.h5", "w") as f:
        f["x"] = [1, 2, 3]
    return d


def _run(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.stdout, result.stderr


def test_trace_writes_a_trace_and_prints_a_summary(files: Path) -> None:
    out = files / "ok" / "t.h5"
    code, stdout, err = _run(
        [
            "trace",
            str(files / "digits.keras"),
            "--data",
            str(files / "x.npy"),
            "--out",
            str(out),
            "--store-samples",
            "3",
        ]
    )
    assert code == 0, err
    assert "output probs: SQNR" in stdout and "worst layers" in stdout and str(out) in stdout
    with h5py.File(out) as f:
        assert f.attrs["n_samples"] == 40 and f.attrs["n_stored"] == 3
        assert "--store-samples 3" in f.attrs["command_line"]
    code, stdout, _ = _run(["report", str(out), "--format", "json"])
    doc = json.loads(stdout)
    assert doc["model"]["name"] == "digits_cnn" and doc["samples"] == 40
    assert [layer["name"] for layer in doc["layers"]][:2] == ["image", "conv1"]
    assert doc["output"]["sqnr_db"] > 20


def test_float64_is_cast_with_a_warning(files: Path) -> None:
    out = files / "f64" / "t.h5"
    code, stdout, err = _run(
        ["trace", str(files / "digits.keras"), "--data", str(files / "x64.npy"), "--out", str(out)]
    )
    assert code == 0, err
    assert "float64 data cast to float32" in stdout
    with h5py.File(out) as f:
        assert "float64" in f.attrs["warnings"]


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        ("nan.npy", ("sample 7", "NaN")),
        ("inf.npy", ("sample 3", "Inf")),
        ("shape.npy", ("(40, 6, 8, 1)", "(N, 8, 8, 1)")),
        ("empty.npy", ("no samples",)),
        ("one.npy", ("(N, 8, 8, 1)", "x[None]")),
        ("xu8.npy", ("uint8", "float32")),
    ],
)
def test_bad_data_is_refused(files: Path, data: str, needles: tuple[str, ...]) -> None:
    out = files / f"bad-{data}"
    code, _, err = _run(
        [
            "trace",
            str(files / "digits.keras"),
            "--data",
            str(files / data),
            "--out",
            str(out / "t.h5"),
        ]
    )
    assert_one_line_error(code, err, data, *needles)
    assert not out.exists() or not any(out.iterdir())


def test_unsupported_op_names_the_layer_and_fix(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.zeros((4, 16), np.float32))
    code, _, err = _run(
        [
            "trace",
            f"{EXAMPLES / 'erf_gelu.py'}:build",
            "--data",
            str(tmp_path / "f.npy"),
            "--out",
            str(tmp_path / "o" / "t.h5"),
        ]
    )
    assert_one_line_error(code, err, "my_gelu", "Erf", "Activation('gelu')")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_tflite_of_another_model_is_refused(files: Path, tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    import erf_gelu  # noqa: F401 - examples on sys.path via conftest

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    (tmp_path / "other.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_keras_model(other).convert()
    )
    code, _, err = _run(
        [
            "trace",
            str(files / "digits.keras"),
            "--data",
            str(files / "x.npy"),
            "--tflite",
            str(tmp_path / "other.tflite"),
            "--out",
            str(tmp_path / "o" / "t.h5"),
        ]
    )
    assert_one_line_error(code, err, ".tflite", "input shape")


def _subprocess(*args: str) -> tuple[int, str]:
    p = subprocess.run([sys.executable, "-m", "qdebug", *args], capture_output=True, text=True)
    return p.returncode, p.stderr


@pytest.mark.parametrize(
    ("model", "data", "needles"),
    [
        ("missing.keras", "x.npy", ("missing.keras", "no such file")),
        ("digits.keras", "missing.npy", ("missing.npy", "no such file")),
        ("notmodel.keras", "x.npy", ("notmodel.keras", "not a .keras archive")),
        ("notmodel.h5", "x.npy", ("notmodel.h5", "not a Keras model")),
    ],
)
def test_bad_paths_fail_in_a_fresh_process(
    files: Path, model: str, data: str, needles: tuple[str, ...]
) -> None:
    code, err = _subprocess(
        "trace",
        str(files / model),
        "--data",
        str(files / data),
        "--out",
        str(files / "never" / "t.h5"),
    )
    assert_one_line_error(code, err, *needles)
    assert not (files / "never").exists()


def test_debug_shows_the_traceback(files: Path) -> None:
    code, err = _subprocess(
        "--debug", "trace", str(files / "notmodel.keras"), "--data", str(files / "x.npy")
    )
    assert code == 2 and "Traceback" in err


def test_unwritable_output_is_refused(files: Path) -> None:
    blocker = files / "afile"
    blocker.write_text("x")
    code, _, err = _run(
        [
            "trace",
            str(files / "digits.keras"),
            "--data",
            str(files / "x.npy"),
            "--out",
            str(blocker / "t.h5"),
        ]
    )
    assert_one_line_error(code, err, "cannot write the trace", "--out")


def test_profile_says_where_the_time_went(files: Path) -> None:
    """--profile: every phase of the run with its seconds on stderr, and in the JSON; the
    phases of one process cannot take longer than the process."""
    import time

    out = files / "profiled.h5"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "qdebug", "trace", str(files / "digits.keras"), "--data",
         str(files / "x.npy"), "--out", str(out), "--profile", "--format", "json"],
        capture_output=True, text=True, timeout=600,
    )
    wall = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    timings = json.loads(done.stdout)["timings"]
    top = ["TensorFlow import", "load model", "load data", "convert to INT8", "match layers",
           "trace", "write"]
    loop = ["trace: interpreters (worker thread)", "trace: waiting for them",
            "trace: statistics and writes"]
    assert list(timings) == top[:6] + loop + top[6:]  # in the order they ran
    assert all(v >= 0 for v in timings.values())
    assert sum(timings[k] for k in top) <= wall
    assert timings["trace: waiting for them"] + timings["trace: statistics and writes"] <= (
        timings["trace"] + 0.01)  # the loop's split: its own two parts
    lines = done.stderr.splitlines()
    first = lines.index("profile (wall seconds):")
    rows = [re.match(r"(\s*)(.+?)\s{2,}([\d.]+) s", ln)
            for ln in lines[first + 1:first + 1 + len(timings)]]
    assert [m.group(2) for m in rows if m] == [k.removeprefix("trace: ") for k in timings]
    assert [len(m.group(1)) for m in rows if m] == [4 if k in loop else 2 for k in timings]
    assert lines[first + 1 + len(timings)].strip().startswith("total")


def test_int8_io_with_a_given_tflite_is_refused_before_any_work(tmp_path: Path) -> None:
    """--int8-io changes the conversion that --tflite skips: refused like --keep-float and
    --scheme (it was accepted and silently ignored)."""
    fake = tmp_path / "deployed.tflite"
    fake.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    code, _, err = _run(["trace", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"),
                         "--tflite", str(fake), "--int8-io"])
    assert_one_line_error(code, err, "--int8-io", "Drop --tflite")


def test_xnnpack_runs_leave_no_litert_info_line_on_stderr(files: Path) -> None:
    """LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." as it makes an
    XNNPACK interpreter; a trace with ``--xnnpack`` (and any model with an XNNPACK custom op)
    keeps stderr to qdebug's own lines."""
    code, err = _subprocess("trace", str(files / "digits.keras"), "--data", str(files / "x.npy"),
                            "--samples", "8", "--xnnpack", "--quiet",
                            "--out", str(files / "xnnpack.h5"))
    assert code == 0, err
    assert "XNNPACK delegate" not in err and "INFO:" not in err, err
    with h5py.File(files / "xnnpack.h5", "r") as f:
        assert "ops" in f
