"""ai-edge-quantizer paths (issue 21): a float ``.tflite`` traced alone, its real-world forms
(no signature, float16 weights behind DEQUANTIZE, op codes only in the deprecated field), the
named recipes, a Keras model through ``--quantizer aeq`` and its diff with the converter's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import pytest

from cli_helpers import run_qdebug
from qdebug.errors import TfliteModelError
from qdebug.store.meta import QUANTIZER_AEQ, QUANTIZER_CONVERTER
from qdebug.store.reader import open_trace
from qdebug.tracer.aeq import quantize_with_aeq
from qdebug.tracer.float_tflite import prepare_float_tflite
from qdebug.tracer.litert import LiteModel

pytestmark = [pytest.mark.tf]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, digits_model: Any,
          digits_data: Any) -> Path:
    """The digits CNN as a float .tflite (the TFLite converter, no optimizations) and as the
    forms published files take; data, and dimmed calibration data that makes INT8 clip."""
    import tensorflow as tf

    d = tmp_path_factory.mktemp("aeq")
    x = np.asarray(digits_data, dtype=np.float32)[:48]
    np.save(d / "x.npy", x)
    np.save(d / "dim.npy", x * 0.2)
    digits_model.save(d / "digits.keras")
    float_bytes = tf.lite.TFLiteConverter.from_keras_model(digits_model).convert()
    (d / "float.tflite").write_bytes(float_bytes)
    conv = tf.lite.TFLiteConverter.from_keras_model(digits_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    (d / "float16.tflite").write_bytes(conv.convert())
    (d / "nosig.tflite").write_bytes(_edited(float_bytes, signature=False))
    (d / "deprecated.tflite").write_bytes(_edited(float_bytes, builtin_codes=False))
    return d


def _edited(content: bytes, *, signature: bool = True, builtin_codes: bool = True) -> bytes:
    """The flatbuffer without its signatures, or with op codes only in the deprecated field
    (``builtin_code`` 0, as older converters wrote them)."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    if not signature:
        m.signatureDefs = []
    if not builtin_codes:
        for oc in m.operatorCodes:
            assert oc.deprecatedBuiltinCode == oc.builtinCode < 127
            oc.builtinCode = 0
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _trace(*args: str | Path) -> Any:
    res = run_qdebug("trace", *args)
    assert res.returncode == 0, res.stderr
    return res


def _report(trace: Path) -> dict[str, Any]:
    res = run_qdebug("report", trace, "--format", "json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _quantized_ops(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in report["ops"] if o["status"] == "measured"
            and o["precision"] in ("int8", "int16") and not o["name"].startswith("quantize(")]


def test_a_float_tflite_alone_is_quantized_by_aeq_and_diagnosed(files: Path) -> None:
    out = files / "alone.h5"
    res = _trace(files / "float.tflite", "--data", files / "x.npy", "--calib",
                 files / "dim.npy", "--out", out)
    assert "quantized by ai-edge-quantizer" in res.stdout
    assert "culprits" in res.stdout
    report = _report(out)
    assert report["output"]["sqnr_db"] < 30  # calibrated on dimmed images: it clips
    quantized = _quantized_ops(report)
    assert len(quantized) >= 6
    for o in quantized:
        assert o["has_local"], o["name"]
        assert isinstance(o["local_sqnr_db"], float) or o["local_sqnr_db"] == "inf", o
    assert report["culprits"]
    q = report["quantizer"]
    assert q["name"] == QUANTIZER_AEQ and q["version"] == "0.10.0"
    assert q["recipe_name"] == "int8" and q["recipe"][0]["regex"] == ".*"
    with open_trace(out) as tr:
        assert tr.meta.quantizer.recipe[0]["op_config"]["activation_tensor_config"][
            "num_bits"] == 8
        assert tr.schema_version == "1.5"
    done = run_qdebug("export", out, "--tflite", files / "exported.tflite")
    assert done.returncode == 0, done.stderr
    recipe = json.loads((files / "exported_recipe.json").read_text())
    assert recipe == q["recipe"]
    # The exported recipe makes the same model again.
    again = _trace(files / "float.tflite", "--data", files / "x.npy", "--calib",
                   files / "dim.npy", "--recipe", files / "exported_recipe.json", "-n", "4",
                   "--out", files / "again.h5")
    assert again.returncode == 0
    with open_trace(files / "again.h5") as tr:
        assert tr.tflite_bytes() == (files / "exported.tflite").read_bytes()


def test_aeqs_xnnpack_interpreters_leave_no_info_line_on_stderr(files: Path) -> None:
    """ai-edge-quantizer calibrates through XNNPACK interpreters, whose "INFO: Created
    TensorFlow Lite XNNPACK delegate for CPU." C++ prints below Python's redirections."""
    res = _trace(files / "float.tflite", "--data", files / "x.npy", "-n", "4", "--quiet",
                 "--out", files / "quiet.h5")
    assert "INFO:" not in res.stderr and "XNNPACK delegate" not in res.stderr, res.stderr


@pytest.mark.parametrize(("name", "repair"), [
    ("nosig", "signature 'serving_default' added"),
    ("float16", "float16 weights stored as float32"),
    ("deprecated", "op codes read from deprecated_builtin_code"),
])
def test_published_forms_of_float_tflite_files_are_repaired(
    files: Path, name: str, repair: str
) -> None:
    out = files / f"{name}.h5"
    res = _trace(files / f"{name}.tflite", "--data", files / "x.npy", "-n", "8", "--out", out)
    assert repair in " ".join(res.stdout.split())
    with open_trace(out) as tr:
        assert any(r.startswith(repair) for r in tr.meta.quantizer.repairs)
        # CONV_2D weights quantized as weights (per channel, zero point 0), not activations
        lite = LiteModel(tr.tflite_bytes(), preserve=False)
        convs = [op for op in lite.ops if op.op_type == "CONV_2D"]
        assert convs
        for op in convs:
            w = lite.details[op.inputs[1]]["quantization_parameters"]
            assert len(w["scales"]) > 1 and not np.any(w["zero_points"]), op
    assert all(o["has_local"] for o in _quantized_ops(_report(out)))


def test_deprecated_op_codes_mislead_aeq_without_the_repair(files: Path) -> None:
    """The reason for the repair: AEQ 0.10.0 reads builtin_code only."""
    from ai_edge_quantizer import quantizer, recipe

    content = (files / "deprecated.tflite").read_bytes()
    q = quantizer.Quantizer(bytearray(content))
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    sample = np.load(files / "x.npy")[:4]
    bad = bytes(q.quantize(q.calibrate(_calibration(content, sample)),
                           enable_progress_report=False).quantized_model)
    # Every op read as an ADD: CONV_2D weights quantized as activations, which LiteRT refuses.
    with pytest.raises(TfliteModelError, match="zero_point"):
        LiteModel(bad, preserve=False)
    ok = LiteModel(quantize_with_aeq(content, "int8", ([s] for s in sample)).tflite,
                   preserve=False)
    conv = next(op for op in ok.ops if op.op_type == "CONV_2D")
    weights = ok.details[conv.inputs[1]]["quantization_parameters"]
    assert len(weights["scales"]) > 1 and not np.any(weights["zero_points"])


def _calibration(content: bytes, samples: np.ndarray) -> dict[str, list[dict[str, Any]]]:
    prepared = prepare_float_tflite(content)
    return {prepared.signature: [{prepared.inputs[0]: s[None]} for s in samples]}


@pytest.mark.parametrize(("recipe", "precision", "deployed"), [
    ("int16", "int16", "int16x8"),
    ("dynamic", "dynamic", "dynamic range"),
    ("weight-only", "float", "weight-only"),
])
def test_named_recipes(files: Path, recipe: str, precision: str, deployed: str) -> None:
    out = files / f"recipe-{recipe}.h5"
    _trace(files / "float.tflite", "--data", files / "x.npy", "-n", "4", "--recipe", recipe,
           "--out", out)
    with open_trace(out) as tr:
        assert tr.meta.quantizer.recipe_name == recipe
        assert tr.meta.deployed_kind.value == deployed
        convs = [o for o in tr.ops if o.op_type == "CONV_2D"]
        assert convs and {o.precision for o in convs} == {precision}


def test_a_keras_model_through_aeq_diffs_with_the_converters(files: Path) -> None:
    aeq, conv = files / "keras-aeq.h5", files / "keras-conv.h5"
    _trace(files / "digits.keras", "--data", files / "x.npy", "--quantizer", "aeq",
           "--out", aeq)
    _trace(files / "digits.keras", "--data", files / "x.npy", "--out", conv)
    with open_trace(aeq) as a, open_trace(conv) as c:
        assert a.meta.quantizer.name == QUANTIZER_AEQ
        assert c.meta.quantizer.name == QUANTIZER_CONVERTER
        assert [r.name for r in a.layers] == [r.name for r in c.layers]
        assert a.tflite_bytes() != c.tflite_bytes()
        matched = [i for i, r in a.iter_layers() if r.status == "matched"]
        assert len(matched) >= 6
    res = run_qdebug("diff", conv, aeq, "--format", "json")
    assert res.returncode in (0, 1), res.stderr
    diff = json.loads(res.stdout)
    assert diff["layers"]


def test_a_recipe_aeq_refuses_is_one_line(files: Path) -> None:
    bad = files / "bad_recipe.json"
    bad.write_text(json.dumps([{"regex": ".*", "operation": "*",
                                "algorithm_key": "no_such_algorithm", "op_config": {}}]))
    res = run_qdebug("trace", files / "float.tflite", "--data", files / "x.npy", "--recipe",
                     bad, "-n", "2", "--out", files / "bad.h5")
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("qdebug:")]
    assert len(lines) == 1 and "recipe" in lines[0] and "Traceback" not in res.stderr


def test_a_per_op_recipe_is_mixed_precision_op_by_op(files: Path) -> None:
    """One CONV_2D at 16-bit activations in an int8 model (the form fix --allow int16 writes)."""
    from qdebug.tracer.aeq import op_scope_regex, resolve_recipe

    lite = LiteModel((files / "float.tflite").read_bytes(), preserve=False)
    conv = next(op for op in lite.ops if op.op_type == "CONV_2D")
    name = lite.tensors[conv.outputs[0]].name
    _, int8 = resolve_recipe("int8")
    _, int16 = resolve_recipe("int16")
    recipe = [*int8, dict(int16[0], regex=op_scope_regex([name]))]
    (files / "mixed.json").write_text(json.dumps(recipe))
    out = files / "mixed.h5"
    res = _trace(files / "float.tflite", "--data", files / "x.npy", "-n", "4", "--recipe",
                 files / "mixed.json", "--out", out)
    assert "mixed integer" in " ".join(res.stdout.split())
    with open_trace(out) as tr:
        assert tr.mixed_precision and tr.meta.deployed_kind.value == "mixed integer"
        by_tensor = {o.tensor_name: o.precision for o in tr.ops}
        assert by_tensor[name] == "int16"
        assert [o.precision for o in tr.ops if o.op_type == "CONV_2D"].count("int8") >= 1
    rows = _report(out)["ops"]
    assert {r["precision"] for r in rows if r["status"] == "measured"} >= {"int8", "int16"}
    assert all(r["has_local"] for r in _quantized_ops({"ops": rows}))
