"""The ai-edge-quantizer options of ``qdebug trace`` (issue 21), refused before TensorFlow loads:
each bad combination is one line naming the cause and the fix, exit 2; without
ai-edge-quantizer installed, the line says what to install."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli_helpers import assert_one_line_error
from qdebug.cli import cli
from qdebug.tracer.aeq import FLOAT_IO, RECIPES, op_scope_regex, resolve_recipe


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    (tmp_path / "float.tflite").write_bytes(b"\0\0\0\0TFL3" + bytes(64))
    (tmp_path / "model.keras").write_bytes(b"PK")
    np.save(tmp_path / "x.npy", np.zeros((2, 4), np.float32))
    return tmp_path


def _trace(files: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["trace", *args, "--data", str(files / "x.npy"),
                                   "--out", str(files / "t.h5")])
    assert not (files / "t.h5").exists()
    return res.exit_code, res.stderr


@pytest.mark.parametrize(("args", "needles"), [
    (["model.keras", "--recipe", "int16"], ("--recipe", "--quantizer aeq")),
    (["float.tflite", "--quantizer", "converter"], ("float .tflite", "--tflite")),
    (["float.tflite", "--recipe", "int4"], ("--recipe int4", "int8, int16")),
    (["model.keras", "--quantizer", "aeq", "--keep-float", "conv"],
     ("--keep-float", "--recipe")),
    (["float.tflite", "--scheme", "int16x8"], ("--scheme", "int16")),
    (["model.keras", "--tflite", "float.tflite", "--recipe", "int8"],
     ("--tflite skips", "Drop --tflite")),
])
def test_bad_aeq_options_are_one_line(files: Path, args: list[str],
                                      needles: tuple[str, ...]) -> None:
    args = [str(files / a) if (files / a).exists() else a for a in args]
    code, err = _trace(files, *args)
    assert_one_line_error(code, err, *needles)


def test_a_recipe_file_that_is_not_a_recipe(files: Path) -> None:
    (files / "r.json").write_text('{"regex": ".*"}')
    code, err = _trace(files, str(files / "float.tflite"), "--recipe", str(files / "r.json"))
    assert_one_line_error(code, err, "not an ai-edge-quantizer recipe")


def test_without_ai_edge_quantizer_the_line_says_what_to_install(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_quantizer", None)  # as if not installed
    for args in (["float.tflite"], ["model.keras", "--quantizer", "aeq"]):
        code, err = _trace(files, str(files / args[0]), *args[1:])
        assert_one_line_error(code, err, "ai-edge-quantizer", "pip install")


def test_named_recipes_and_the_per_op_scope() -> None:
    for name in RECIPES:
        got, entries = resolve_recipe(name)
        assert got == name and entries[0]["regex"] == ".*"
        static = "activation_tensor_config" in entries[0]["op_config"]
        assert (entries[-2:] == [dict(e) for e in FLOAT_IO]) == static
    _, aeq_own = resolve_recipe("static_wi8_ai8")
    assert len(aeq_own) == 1  # AEQ's own name: integer inputs and outputs, as AEQ makes them
    import re

    scope = op_scope_regex(["model/conv;model/bn", "x:0"])
    assert re.search(scope, "model/conv;model/bn;x:0;")
    assert not re.search(scope, "model/conv;model/bn;x:0;y;")
