"""The bad-input catalogue: every command, every kind of bad input. Each answer is one line on
stderr naming the thing and the fix, exit code 2, no traceback (``--debug`` shows it), and no
file left behind.

Most cases run the command line in-process (click's runner); the two that need the operating
system to refuse a write (a full disk) run it in a subprocess whose file-size limit
(``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored) makes every write past a few KiB fail with EFBIG,
as a full disk fails with ENOSPC: no root, no tmpfs, no monkeypatching.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from cli_helpers import assert_one_line_error, invoke, left_behind


@pytest.fixture(scope="module")
def tf_files(tmp_path_factory: pytest.TempPathFactory, digits_model: Any,
             digits_data: np.ndarray) -> Iterator[Path]:
    import keras
    import tensorflow as tf

    d = tmp_path_factory.mktemp("bad")
    digits_model.save(d / "digits.keras")
    x = digits_data[:24]
    np.save(d / "x.npy", x)
    np.save(d / "xu8.npy", (x * 255).astype(np.uint8))
    for name, where in (("nan", np.nan), ("inf", np.inf)):
        bad = x.copy()
        bad[5, 1, 1, 0] = where
        np.save(d / f"{name}.npy", bad)
    np.save(d / "shape.npy", x[:, :, :7])
    np.save(d / "empty.npy", x[:0])
    np.save(d / "x64.npy", x.astype(np.float64))
    (d / "truncated.npy").write_bytes((d / "x.npy").read_bytes()[:300])
    (d / "zero.npy").write_bytes(b"")
    (d / "bad.npz").write_text("not a zip")
    (d / "x.csv").write_text("1,2,3\n")
    (d / "empty.keras").write_bytes(b"")
    (d / "text.keras").write_text("hello")
    keras_bytes = (d / "digits.keras").read_bytes()
    (d / "truncated.keras").write_bytes(keras_bytes[: len(keras_bytes) // 2])
    (d / "text.h5").write_text("not hdf5")
    with h5py.File(d / "plain.h5", "w") as f:
        f["x"] = [1, 2, 3]
    (d / "model.pt").write_bytes(b"\x80\x04")
    # two inputs, and an .npz that lacks one of them
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    two = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    two.save(d / "two.keras")
    rng = np.random.default_rng(0)
    np.savez(d / "only_a.npz", a=rng.normal(size=(8, 4)).astype(np.float32))
    np.save(d / "v4.npy", rng.normal(size=(8, 4)).astype(np.float32))
    # a Lambda layer, and a custom layer whose module is gone when the model is loaded
    lam = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2.0),
                            keras.layers.Dense(2)])
    lam.save(d / "lambda.keras")
    (d / "gone_layers.py").write_text(
        "import keras\n"
        "class Doubler(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return 2.0 * x\n"
    )
    sys.path.insert(0, str(d))
    try:
        mod = importlib.import_module("gone_layers")
        custom = keras.Sequential([keras.Input((4,)), mod.Doubler(), keras.layers.Dense(2)])
        custom.save(d / "custom.keras")
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("gone_layers", None)
        (d / "gone_layers.py").unlink()
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    small.save_weights(d / "small.weights.h5")  # Keras 3: weights only, no attributes
    import tf_keras

    tk = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
    tk.save_weights(d / "tk_weights.h5")  # tf_keras: keras_version, but no model_config
    (d / "other.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(small).convert())
    (d / "garbage.tflite").write_bytes(b"TFL3" + bytes(range(256)) * 4)
    (d / "afile").write_text("x")
    (d / "adir.h5").mkdir()
    # round 2: damaged data files, data functions and factories that misbehave
    np.savez(d / "objects.npz", x=np.array([1, "a"], dtype=object))
    np.savez(d / "crc.npz", x=x)
    raw = bytearray((d / "crc.npz").read_bytes())
    raw[raw.find(b"\x93NUMPY") + 300] ^= 0xFF
    (d / "crc.npz").write_bytes(bytes(raw))
    with zipfile.ZipFile(d / "notnpy.npz", "w") as z:
        z.writestr("x.txt", "not an array")
    import hostile_traces

    hostile_traces.npz_bomb(d / "bomb.npz", "x", (2 << 20, 8, 8, 1))  # 512 MiB in 0.5 MB
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (-3, 8, 8, 1), }"
    header += " " * (117 - len(header)) + "\n"
    (d / "negative.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                                     + header.encode() + bytes(64))
    np.save(d / "bigendian.npy", x.astype(">f4"))
    (d / "images.dir").mkdir()
    (d / "images.dir" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    (d / "funcs.py").write_text(
        "import itertools, sys, argparse\n"
        "import numpy as np\n"
        f"X = np.load({str(d / 'x.npy')!r})\n"
        "def none():\n    return None\n"
        "def number():\n    return 7\n"
        "def midway():\n"
        "    for i, s in enumerate(X):\n"
        "        if i == 9:\n            raise OSError('disk went away')\n"
        "        yield s\n"
        "def calib_fails():\n"
        "    yield X[0]\n    raise ValueError('calibration reader broke')\n"
        "def endless():\n    return itertools.cycle(list(X))\n"
        "def exits():\n    sys.exit(0)\n"
    )
    (d / "exits_at_import.py").write_text("import sys\nsys.exit(0)\ndef build():\n    pass\n")
    (d / "argparse_factory.py").write_text(
        "import argparse\n"
        "p = argparse.ArgumentParser()\np.add_argument('--epochs', type=int, required=True)\n"
        "args = p.parse_args()\ndef build():\n    pass\n"
    )
    (d / "raising_mod.py").write_text("raise RuntimeError('broken at import')\n")
    (d / "models.py").write_text(
        "import keras\n"
        "def dynamic():\n"
        "    i = keras.Input((None, None, 1))\n"
        "    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(i))\n"
        "    return keras.Model(i, keras.layers.Dense(2)(x))\n"
        "def odd_name():\n"
        "    i = keras.Input((8, 8, 1))\n"
        "    x = keras.layers.Flatten(name='flat:ten')(i)\n"
        "    return keras.Model(i, keras.layers.Dense(2)(x))\n"
    )
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))


TRACE_CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("missing model", ["missing.keras", "--data", "x.npy"], ("missing.keras", "no such file")),
    ("empty model file", ["empty.keras", "--data", "x.npy"], ("empty.keras", "not a .keras")),
    ("model not a model", ["text.keras", "--data", "x.npy"], ("text.keras", "not a .keras")),
    ("truncated model", ["truncated.keras", "--data", "x.npy"], ("truncated.keras",)),
    ("non-HDF5 .h5 model", ["text.h5", "--data", "x.npy"], ("text.h5", "Keras")),
    ("HDF5 not a model", ["plain.h5", "--data", "x.npy"], ("plain.h5", "not a Keras model")),
    ("unknown model type", ["model.pt", "--data", "x.npy"], ("model.pt", "unknown model file")),
    ("unregistered custom layer", ["custom.keras", "--data", "v4.npy"],
     ("custom.keras", "custom layer", "factory")),
    ("Lambda layer", ["lambda.keras", "--data", "v4.npy"],
     ("lambda.keras", "Lambda", "--trust-model-code", "factory")),
    # weights without a model: said so, with the factory that rebuilds it (tf_keras said "No
    # model config found in the file at <...GFile object at 0x...>", Keras 3 "not a Keras model")
    ("tf_keras weights only", ["tk_weights.h5", "--data", "v4.npy"],
     ("tk_weights.h5", "weights only", "load_weights", "my_model.py:build")),
    ("Keras 3 weights only", ["small.weights.h5", "--data", "v4.npy"],
     ("small.weights.h5", "weights only", "load_weights", "my_model.py:build")),
    ("tflite of another model", ["digits.keras", "--data", "x.npy", "--tflite", "other.tflite"],
     ("tflite", "input shape", "converted from this model")),
    ("tflite not a model", ["digits.keras", "--data", "x.npy", "--tflite", "garbage.tflite"],
     ("garbage.tflite",)),
    ("tflite missing", ["digits.keras", "--data", "x.npy", "--tflite", "missing.tflite"],
     ("missing.tflite", "no such file")),
    ("missing data", ["digits.keras", "--data", "missing.npy"], ("missing.npy", "no such file")),
    ("uint8 data", ["digits.keras", "--data", "xu8.npy"], ("uint8", "float32")),
    ("NaN", ["digits.keras", "--data", "nan.npy"], ("sample 5", "NaN")),
    ("Inf", ["digits.keras", "--data", "inf.npy"], ("sample 5", "Inf")),
    ("wrong shape", ["digits.keras", "--data", "shape.npy"], ("shape.npy", "(N, 8, 8, 1)")),
    ("empty data", ["digits.keras", "--data", "empty.npy"], ("no samples",)),
    ("truncated .npy", ["digits.keras", "--data", "truncated.npy"],
     ("truncated.npy", "not a readable .npy")),
    ("empty .npy file", ["digits.keras", "--data", "zero.npy"], ("zero.npy", ".npy")),
    ("corrupt .npz", ["digits.keras", "--data", "bad.npz"], ("bad.npz", "not a readable .npz")),
    ("unknown data type", ["digits.keras", "--data", "x.csv"], ("x.csv", "unknown data type")),
    ("npz missing an input", ["two.keras", "--data", "only_a.npz"],
     ("only_a.npz", "missing", "'b'")),
    ("one array, two inputs", ["two.keras", "--data", "v4.npy"], ("v4.npy", "2 inputs", ".npz")),
    ("bad calibration data", ["digits.keras", "--data", "x.npy", "--calib", "nan.npy"],
     ("nan.npy", "NaN")),
    ("output parent is a file", ["digits.keras", "--data", "x.npy", "--out", "afile/t.h5"],
     ("cannot write the trace", "--out")),
    ("output is a folder", ["digits.keras", "--data", "x.npy", "--out", "adir.h5"],
     ("adir.h5", "folder", "--out")),
    ("check model not a model", ["@check", "text.keras"], ("text.keras", "not a .keras")),
    # round 2: user errors that were "unexpected ... please report it", and wrong blame
    ("npz of objects", ["digits.keras", "--data", "objects.npz"],
     ("objects.npz", "pickled Python objects", "np.savez")),
    ("npz with a bad CRC", ["digits.keras", "--data", "crc.npz"], ("crc.npz", "CRC")),
    ("npz member not npy", ["digits.keras", "--data", "notnpy.npz"],
     ("notnpy.npz", "not a .npy array")),
    ("npz zip bomb", ["digits.keras", "--data", "bomb.npz"],
     ("bomb.npz[x]", "would inflate", "zip bomb", "--samples N")),
    ("npy negative shape", ["digits.keras", "--data", "negative.npy"],
     ("negative.npy", "not a readable .npy")),
    ("data function returns None", ["digits.keras", "--data", "funcs.py:none"],
     ("funcs.py:none", "returned NoneType", "tf.data.Dataset")),
    ("data function returns an int", ["digits.keras", "--data", "funcs.py:number"],
     ("funcs.py:number", "returned int")),
    ("data function raises mid-trace", ["digits.keras", "--data", "funcs.py:midway",
                                         "--calib", "x.npy"],
     ("funcs.py:midway", "disk went away", "after 9 sample(s)")),
    ("data function raises in calibration", ["digits.keras", "--data", "x.npy", "--calib",
                                              "funcs.py:calib_fails"],
     ("funcs.py:calib_fails", "calibration reader broke")),
    ("data function exits", ["digits.keras", "--data", "funcs.py:exits"],
     ("funcs.py:exits", "sys.exit(0)", "__main__")),
    ("data module raises at import", ["digits.keras", "--data", "raising_mod:data"],
     ("raising_mod", "broken at import")),
    ("factory exits at import", ["exits_at_import.py:build", "--data", "x.npy"],
     ("exits_at_import.py", "sys.exit(0)", "__main__")),
    ("factory parses arguments", ["argparse_factory.py:build", "--data", "x.npy"],
     ("argparse_factory.py", "sys.exit(2)", "--epochs")),
    ("dynamic input shape", ["models.py:dynamic", "--data", "x.npy"],
     ("(None, None, 1)", "fixed")),
    ("layer name TF cannot export", ["models.py:odd_name", "--data", "x.npy"],
     ("flat:ten", "Rename the layer")),
    ("unreadable image", ["digits.keras", "--data", "images.dir"],
     ("broken.png", "not a readable image", "PNG")),
    ("fix --out a folder", ["@fix", "digits.keras", "--data", "x.npy", "--target-top1", "1",
                            "--out", "adir.h5"], ("adir.h5", "folder")),
    ("check Lambda", ["@check", "lambda.keras"], ("lambda.keras", "--trust-model-code")),
]


@pytest.mark.tf
@pytest.mark.parametrize(("args", "needles"), [c[1:] for c in TRACE_CASES],
                         ids=[c[0] for c in TRACE_CASES])
def test_model_and_data_commands_refuse_bad_input(
    tf_files: Path, tmp_path: Path, args: list[str], needles: tuple[str, ...]
) -> None:
    command = args[0][1:] if args[0].startswith("@") else "trace"
    rest = args[1:] if args[0].startswith("@") else args
    argv = [command, *(str(tf_files / a) if "." in a and not a.startswith("-") else a
                       for a in rest)]
    if command == "trace" and "--out" not in rest:
        argv += ["--out", str(tmp_path / "o" / "t.h5")]
    code, _, err = invoke(argv)
    assert_one_line_error(code, err, *needles)
    assert left_behind(tmp_path) == []
    assert not list(tf_files.glob("*.partial")) and not (tf_files / "afile.partial").exists()


@pytest.mark.tf
def test_float64_data_is_cast_with_a_warning_not_refused(tf_files: Path, tmp_path: Path) -> None:
    code, out, err = invoke(["trace", str(tf_files / "digits.keras"), "--data",
                           str(tf_files / "x64.npy"), "--out", str(tmp_path / "t.h5"),
                           "--store-samples", "0"])
    assert code == 0, err
    assert "float64 data cast to float32" in out


@pytest.mark.tf
def test_big_endian_float32_is_data_not_an_error(tf_files: Path, tmp_path: Path) -> None:
    code, _, err = invoke(["trace", str(tf_files / "digits.keras"), "--data",
                         str(tf_files / "bigendian.npy"), "--out", str(tmp_path / "t.h5"),
                         "--store-samples", "0", "-q"])
    assert code == 0, err


@pytest.mark.tf
def test_endless_data_function_is_capped_and_says_so(
    tf_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qdebug.tracer import data

    monkeypatch.setattr(data, "UNSIZED_LIMIT", 30)
    code, out, err = invoke(["trace", str(tf_files / "digits.keras"), "--data",
                           f"{tf_files / 'funcs.py'}:endless", "--out", str(tmp_path / "t.h5"),
                           "--store-samples", "0", "--calib-samples", "8"])
    assert code == 0, err
    assert "traced the first 30" in out and "--samples" in out
    import qdebug

    with qdebug.open(tmp_path / "t.h5") as tr:
        assert tr.n_samples == 30


@pytest.mark.tf
def test_check_flags_small_data_that_calibrates_as_trace_would(tf_files: Path) -> None:
    np.save(tf_files / "four.npy", np.load(tf_files / "x.npy")[:4])
    code, out, err = invoke(["check", str(tf_files / "digits.keras"), "--data",
                           str(tf_files / "four.npy"), "--format", "json"])
    assert code == 1, err
    found = [f for f in json.loads(out)["findings"] if "4 samples" in f["message"]]
    assert found and found[0]["severity"] == "error" and "calibrates" in found[0]["message"]


#: ``qdebug`` whose file-size limit is set when the trace writer starts, so that the converter's
#: temporary files (written earlier) are not affected: only the trace's writes fail (EFBIG).
_LIMIT_AT_WRITE = """
import resource, signal, sys
from qdebug.store import writer
from qdebug.cli import main
start = writer.TraceWriter.__init__
def limited(self, *args, **kwargs):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
    start(self, *args, **kwargs)
writer.TraceWriter.__init__ = limited
sys.argv[0] = "qdebug"
main()
"""


@pytest.mark.tf
@pytest.mark.parametrize("limit", [4096, 65536], ids=["at start", "while tracing"])
def test_trace_to_a_full_disk_fails_cleanly(tf_files: Path, tmp_path: Path, limit: int) -> None:
    # 4 KiB: the writer's constructor fails writing the .tflite (larger than that)
    out = tmp_path / "o" / "t.h5"
    p = subprocess.run(
        [sys.executable, "-c", _LIMIT_AT_WRITE.replace("65536", str(limit)), "trace",
         str(tf_files / "digits.keras"),
         "--data", str(tf_files / "x.npy"), "--out", str(out)],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert_one_line_error(p.returncode, p.stderr, "cannot write the trace", "space")
    assert left_behind(tmp_path) == []  # nor the folder made for it


#: Prints whether TensorFlow was imported when the command ends (it exits through sys.exit
#: when it was not; after TensorFlow, qdebug ends with os._exit and nothing is printed).
_SAYS_IF_TF = """
import atexit, sys
atexit.register(lambda: print("TensorFlow imported:", "tensorflow" in sys.modules,
                              file=sys.stderr))
from qdebug.cli import main
sys.argv[0] = "qdebug"
main()
"""


@pytest.mark.tf
def test_a_default_traces_that_is_a_file_is_refused_before_tensorflow(
    tf_files: Path, tmp_path: Path
) -> None:
    """Without --out the trace goes to traces/: a file of that name was refused only after the
    model was loaded and converted."""
    (tmp_path / "traces").write_text("notes")
    p = subprocess.run([sys.executable, "-c", _SAYS_IF_TF, "trace",
                        str(tf_files / "digits.keras"), "--data", str(tf_files / "x.npy")],
                       capture_output=True, text=True, timeout=180, cwd=tmp_path)
    lines = p.stderr.strip().splitlines()
    assert lines[-1] == "TensorFlow imported: False", p.stderr
    assert_one_line_error(p.returncode, "\n".join(lines[:-1]), "traces", "not a folder",
                           "--out")
    assert (tmp_path / "traces").read_text() == "notes" and left_behind(tmp_path) == ["traces"]


@pytest.mark.tf
@pytest.mark.parametrize("labels", [np.full(24, 1e30), np.arange(24, dtype=np.uint64) + 2**63],
                         ids=["1e30", "uint64 past int64"])
def test_labels_that_are_no_class_ids_are_refused(
    tf_files: Path, tmp_path: Path, labels: np.ndarray
) -> None:
    """Labels of 1e30 for a 10-class output were accepted (wrapped to -2**63 in int64) and the
    trace reported 0 % accuracy; now one line naming the file and the first bad sample."""
    np.save(tmp_path / "huge.npy", labels)
    code, _, err = invoke(["trace", str(tf_files / "digits.keras"), "--data",
                         str(tf_files / "x.npy"), "--labels", str(tmp_path / "huge.npy"),
                         "--out", str(tmp_path / "o" / "t.h5")])
    assert_one_line_error(code, err, "huge.npy", "24 label(s)", "not class ids", "sample 0",
                           "class ids 0")
    assert left_behind(tmp_path) == ["huge.npy"]

