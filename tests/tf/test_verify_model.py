"""The numeric-verify model runs without its ``NumericVerify`` ops: same f(x̂), same integers.

The ops are removed from the flatbuffer before the model runs (``strip_verify_ops``); these
tests run both models on a trained CNN and a residual MobileNetV2 block net and compare every
tensor the tracer reads from them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from qdebug.tracer.convert import ConversionOptions, convert_int8_and_twin, is_quantized
from qdebug.tracer.litert import LiteModel
from qdebug.tracer.verify import (
    VERIFY_OP,
    build_verify_model,
    strip_verify_ops,
    verify_op_pairs,
)

pytestmark = [pytest.mark.tf]


def _mobilenet() -> Any:
    import keras

    keras.utils.set_random_seed(1)
    return keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10
    )


def _verify_bytes(model: Any, data: np.ndarray) -> bytes:
    def representative() -> Any:
        for x in data[:16]:
            yield [x[None].astype(np.float32)]

    twin = convert_int8_and_twin(model, representative, ConversionOptions(), []).twin
    assert not is_quantized(twin)
    verify = build_verify_model(twin)
    assert verify is not None
    return verify


@pytest.mark.parametrize("which", ["digits", "mobilenetv2"])
def test_stripped_verify_model_reads_the_same_values(
    which: str, digits_model: Any, digits_data: Any
) -> None:
    if which == "digits":
        model, data = digits_model, np.asarray(digits_data, dtype=np.float32)
    else:
        model = _mobilenet()
        data = np.random.default_rng(0).uniform(-1, 1, (24, 32, 32, 3)).astype(np.float32)
    verify = _verify_bytes(model, data)
    stripped = strip_verify_ops(verify)
    assert stripped is not None
    content, pairs = stripped
    full, lean = LiteModel(verify), LiteModel(content)
    assert verify_op_pairs(full) == pairs
    assert len(pairs) > 5
    assert VERIFY_OP not in {op.op_type for op in lean.ops}
    assert len(lean.ops) == len(full.ops) - len(pairs)
    # The model's tensors keep their indices (the full model has temporaries after them: each
    # NumericVerify op adds one).
    assert all(full.tensors[k].name == t.name for k, t in lean.tensors.items())
    for x in data[16:24]:
        full.invoke([x])
        lean.invoke([x])
        for q, f in pairs:
            assert np.array_equal(full.get(q), lean.get(q))
            assert np.array_equal(full.get(f), lean.get(f))
        for out in full.output_indices:
            assert np.array_equal(full.get(out), lean.get(out))


def test_stripping_twice_changes_nothing_and_garbage_is_refused(
    digits_model: Any, digits_data: Any
) -> None:
    data = np.asarray(digits_data, dtype=np.float32)
    verify = _verify_bytes(digits_model, data)
    content, _ = strip_verify_ops(verify) or (b"", [])
    assert strip_verify_ops(content) == (content, [])  # nothing left to remove
    assert strip_verify_ops(b"not a flatbuffer") is None
