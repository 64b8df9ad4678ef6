"""The exported .tflite is the model that was traced: LiteRT reproduces the stored int8 output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import qdebug
from cli_helpers import run_qdebug

pytestmark = pytest.mark.tf


def test_exported_model_reproduces_the_stored_int8_output(
    fixture_trace: Path, tmp_path: Path
) -> None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    model, inputs = tmp_path / "m.tflite", tmp_path / "in.npz"
    out = run_qdebug("export", fixture_trace, "--tflite", model, "--inputs", inputs)
    assert out.returncode == 0, out.stderr
    with qdebug.open(fixture_trace) as tr:
        assert tr.stored_samples.tolist() == list(range(8))  # npz row s is sample s
        probs = tr.layers[tr.layer_index("probs")]
        stored = {s: tr.activation("probs", s).raw for s in (0, 5)}
    interp = Interpreter(
        model_path=str(model),
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        num_threads=1,
    )
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    with np.load(inputs) as z:
        images = z["image"]
    for s, raw in stored.items():
        interp.set_tensor(inp["index"], images[s : s + 1])
        interp.invoke()
        got = interp.get_tensor(probs.tensor_index)
        assert got.dtype == np.int8
        np.testing.assert_array_equal(got.reshape(raw.shape), raw)
