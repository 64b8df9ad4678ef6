"""qdebug's own local references (``tracer/local_ref.py``): every op of any pair gets f(x̂).

On models the converter quantizes, the same deployed model is measured twice: with the
converter's numeric-verify model and with qdebug's float ops fed the deployed model's
dequantized inputs; each op's local SQNR must agree within 0.1 dB. A ``.tflite`` pair traced
with ``--tflite`` (which has no numeric-verify model) then has a local SQNR for every
quantized op, gains and culprits.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from cli_helpers import run_qdebug as run_cli
from qdebug import sums
from qdebug.tracer.convert import ConversionOptions, convert_int8_and_twin
from qdebug.tracer.litert import LiteModel
from qdebug.tracer.local_ref import METHOD, build_op_local_refs
from qdebug.tracer.matching import align_tensors
from qdebug.tracer.oprows import OpTable, build_op_table
from qdebug.tracer.sides import Sides
from qdebug.tracer.verify import LocalRefs, build_verify_model, pair_local_refs, strip_verify_ops

pytestmark = [pytest.mark.tf]

#: How far the two local SQNRs of one op may be apart (issue 21 item 3).
AGREEMENT_DB = 0.1
#: Above this a local SQNR is float32's rounding (its 24-bit mantissa: ~144 dB), not an
#: integer kernel's error.
FLOAT_NOISE_DB = 100.0


def _convert(model: Any, data: np.ndarray) -> tuple[bytes, bytes]:
    def representative() -> Any:
        for x in data[:16]:
            yield [x[None].astype(np.float32)]

    made = convert_int8_and_twin(model, representative, ConversionOptions(), [])
    return made.int8, made.twin


def _verify_refs(twin_bytes: bytes, int8: LiteModel, table: OpTable) -> LocalRefs:
    verify = build_verify_model(twin_bytes)
    assert verify is not None
    stripped = strip_verify_ops(verify)
    assert stripped is not None
    return pair_local_refs(LiteModel(stripped[0]), int8, table, stripped[1])


def _local_sqnr(
    int8_bytes: bytes, twin_bytes: bytes, data: np.ndarray, which: str
) -> tuple[dict[int, float], OpTable, LiteModel, set[int]]:
    """Each op row's local SQNR (dB) over ``data``, from ``which`` local references, read
    the way a trace reads them (``Sides``); and the rows whose reference is a DEQUANTIZE."""
    int8, twin = LiteModel(int8_bytes), LiteModel(twin_bytes)
    table = build_op_table(int8, twin, align_tensors(twin, int8))
    local = (_verify_refs(twin_bytes, int8, table) if which == "verify"
             else build_op_local_refs(twin_bytes, twin, int8, table))
    assert local is not None
    names = [str(d["name"]) for d in int8.input_details]
    sides = Sides(int8, LiteModel(int8_bytes, preserve=False), twin, table, local, names)
    rows = sorted(local.float_tensor)
    wanted = {table.rows[r].tensor_index for r in rows}
    ref2 = dict.fromkeys(rows, 0.0)
    err2 = dict.fromkeys(rows, 0.0)
    try:
        for start in range(0, len(data), 8):
            got = sides.run([[x] for x in data[start:start + 8]], wanted, set(), [])
            for r in rows:
                if r not in got.local:
                    continue
                raw = got.int8[table.rows[r].tensor_index]
                n = raw.shape[0]
                st = sums.local_stats(got.local[r], got.local[r], raw,
                                         table.qparams(int8, r), np.zeros(n))
                ref2[r] += float(st["sum_ref2"].sum())
                err2[r] += float(st["sum_local_e2"].sum())
    finally:
        sides.close()
    dequantized = {r for r, t in local.float_tensor.items()
                   if getattr(local.model.producer.get(t), "op_type", "") == "DEQUANTIZE"}
    return ({r: 10 * math.log10(ref2[r] / err2[r]) if err2[r] > 0 and ref2[r] > 0
             else math.inf for r in rows}, table, int8, dequantized)


def _conv_bn_relu() -> Any:
    import keras

    keras.utils.set_random_seed(3)
    L = keras.layers
    x = keras.Input((12, 12, 3))
    h = L.Conv2D(8, 3, padding="same")(x)
    h = L.BatchNormalization()(h)
    h = L.ReLU(6.0)(h)
    h = L.Conv2D(8, 3, strides=2)(h)
    h = L.BatchNormalization()(h)
    h = L.ReLU()(h)
    h = L.Flatten()(h)
    return keras.Model(x, L.Dense(4)(h))


def _separable() -> Any:
    import keras

    keras.utils.set_random_seed(4)
    L = keras.layers
    x = keras.Input((12, 12, 4))
    h = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    h = L.SeparableConv2D(8, 3, padding="same", activation="relu")(h)
    h = L.AveragePooling2D(2)(h)
    h = L.GlobalMaxPooling2D()(h)
    return keras.Model(x, L.Dense(3)(h))


def _dense_softmax() -> Any:
    import keras

    keras.utils.set_random_seed(5)
    L = keras.layers
    x = keras.Input((20,))
    h = L.Dense(32, activation="tanh")(x)
    h = L.Dense(16, activation="sigmoid")(h)
    return keras.Model(x, L.Dense(5, activation="softmax")(h))


def _residual_concat() -> Any:
    import keras

    keras.utils.set_random_seed(6)
    L = keras.layers
    x = keras.Input((8, 8, 4))
    a = L.Conv2D(4, 1, activation="relu")(x)
    b = L.Conv2D(4, 3, padding="same")(x)
    h = L.Add()([x, a])
    h = L.Concatenate()([h, b, L.Multiply()([a, b])])
    h = L.MaxPooling2D()(h)
    h = L.Conv2D(6, 1)(h)
    h = L.Reshape((-1,))(h)
    return keras.Model(x, L.Dense(3)(h))


def _split_concat() -> Any:
    """A SPLIT (three outputs) and a CONCATENATION of inputs at different scales, which the
    converter requantizes first (a QUANTIZE matched to no float tensor)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    L = keras.layers
    x = keras.Input((16,))
    h = L.Dense(12)(x)
    a, b, c = L.Lambda(lambda t: tf.split(t, 3, axis=-1))(h)
    return keras.Model(x, L.Concatenate()([L.Dense(4)(a) * 3.0, b, L.Activation("tanh")(c)]))


def _data(model: Any, n: int = 24, seed: int = 0) -> np.ndarray:
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    return np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype(np.float32)


@pytest.mark.parametrize("which", ["digits", "conv_bn_relu", "separable", "dense_softmax",
                                   "residual_concat", "split_concat"])
def test_local_sqnr_agrees_with_the_numeric_verify_model(
    which: str, digits_model: Any, digits_data: Any
) -> None:
    if which == "digits":
        model, data = digits_model, np.asarray(digits_data, dtype=np.float32)[:24]
    else:
        model = {"conv_bn_relu": _conv_bn_relu, "separable": _separable,
                 "dense_softmax": _dense_softmax, "residual_concat": _residual_concat,
                 "split_concat": _split_concat}[which]()
        data = _data(model)
    int8_bytes, twin_bytes = _convert(model, data)
    theirs, table, int8, integer_copies = _local_sqnr(int8_bytes, twin_bytes, data, "verify")
    mine, _, _, _ = _local_sqnr(int8_bytes, twin_bytes, data, "qdebug")
    quantized = [i for i, r in enumerate(table.rows)
                 if r.measured and int8.tensors[r.tensor_index].qp is not None
                 and i not in table.graph_input_rows]
    # Every quantized op has a local reference of qdebug's own; the numeric-verify model's
    # are a subset of them.
    assert set(mine) == set(quantized)
    assert set(theirs) <= set(mine)
    # The numeric-verify model's reference of an op kept at its input's scale (AVERAGE_POOL_2D,
    # REDUCE_MAX, ...) is a second integer copy of it, dequantized: the op compared with
    # itself. Ours is the float op: never less error than theirs, and real rounding.
    copies = [r for r in theirs if r in integer_copies]
    assert all(mine[r] <= theirs[r] + AGREEMENT_DB
               or min(mine[r], theirs[r]) > FLOAT_NOISE_DB for r in copies)
    theirs = {r: v for r, v in theirs.items() if r not in integer_copies}
    # An op whose integers are exact (an ADD of inputs at its output's scale, a MAX_POOL_2D)
    # has only float32's own rounding against either reference: over FLOAT_NOISE_DB, or
    # infinite. Both must say so; the rest must agree within 0.1 dB.
    exact = [r for r in theirs if theirs[r] > FLOAT_NOISE_DB or mine[r] > FLOAT_NOISE_DB]
    assert all(theirs[r] > FLOAT_NOISE_DB and mine[r] > FLOAT_NOISE_DB for r in exact)
    both = [r for r in theirs if r not in exact]
    assert len(both) >= 3
    deltas = {table.rows[r].name: abs(mine[r] - theirs[r]) for r in both}
    print(f"{which}: {len(both)} ops compared, max |delta| {max(deltas.values()):.6f} dB; "
          f"{len(exact)} exact on both sides, {len(copies)} integer copies in theirs")
    assert max(deltas.values()) <= AGREEMENT_DB, deltas


def test_a_tflite_pair_has_local_error_gains_and_culprits(
    tmp_path: Path, digits_model: Any, digits_data: Any
) -> None:
    # Calibrated on dimmed images, the INT8 model clips the real ones: a broken output.
    data = np.asarray(digits_data, dtype=np.float32)[:64]
    int8_bytes, twin_bytes = _convert(digits_model, data * 0.2)
    (tmp_path / "float.tflite").write_bytes(twin_bytes)
    (tmp_path / "int8.tflite").write_bytes(int8_bytes)
    np.save(tmp_path / "x.npy", data)
    out = tmp_path / "pair.h5"
    res = run_cli("trace", tmp_path / "float.tflite", "--tflite", tmp_path / "int8.tflite",
                  "--data", tmp_path / "x.npy", "--out", out)
    assert res.returncode == 0, res.stderr
    assert "culprits" in res.stdout
    assert "own error" not in res.stdout  # no 'the trace measures no op's own error'
    with h5py.File(out, "r") as f:
        assert f.attrs["op_local_error"] == METHOD
    report = json.loads(run_cli("report", out, "--format", "json").stdout)
    assert report["output"]["sqnr_db"] < 30
    quantized = [o for o in report["ops"] if o["status"] == "measured"
                 and o["dtype"] == "int8" and not o["name"].startswith("quantize(")]
    assert len(quantized) >= 8
    for o in quantized:
        assert o["has_local"], o["name"]
        assert isinstance(o["local_sqnr_db"], float) or o["local_sqnr_db"] == "inf", o
        assert isinstance(o["gain"], float), o
    assert report["culprits"]
