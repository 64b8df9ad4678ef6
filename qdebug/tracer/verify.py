"""Local error of every op from the converter's own numeric-verify model.

``mlir_quantize(calibrated, enable_numeric_verify=True)`` builds a model that runs every
quantized op twice: as in the deployed model, and in float on the *dequantized outputs of the
quantized ops before it*, joined by a ``NumericVerify`` op. The float copy's output is f(x̂), the
op's float computation on the quantized model's own inputs — what TFLite's QuantizationDebugger
reports. One interpreter run gives it for every op.

The ``NumericVerify`` ops themselves (each dequantizes its input again and computes difference
statistics nobody reads here) cost as much as the rest of the model: they are removed before the
model runs (``strip_verify_ops``). The float copies stay — an op with no consumer still runs —
and their outputs are read directly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from qdebug.metrics import QuantParams
from qdebug.tracer.litert import LiteModel
from qdebug.tracer.oprows import OpTable
from qdebug.tracer.tfenv import captured_output

VERIFY_OP = "NumericVerify"


def build_verify_model(calibrated: bytes, denylisted: list[str] | None = None) -> bytes | None:
    """The numeric-verify model of a calibrated float model, or None where the converter
    cannot build one (then ops have no local error; the trace says so).

    Args:
        denylisted: op names kept in float in the deployed model (``--keep-float``).
    """
    try:
        from tensorflow.lite.python.convert import mlir_quantize
    except ImportError:  # pragma: no cover - depends on the TensorFlow version
        return None
    try:
        with captured_output():
            return bytes(
                mlir_quantize(
                    calibrated, enable_numeric_verify=True, denylisted_nodes=denylisted
                )
            )
    except Exception:  # the deployed model does not depend on it: trace without local error
        return None


@dataclass
class LocalRefs:
    """Where each op row's f(x̂) lives in the verify model."""

    model: LiteModel
    float_tensor: dict[int, int]
    """Op row → tensor index of the float copy's output in the verify model."""
    quant_tensor: dict[int, int]
    """Op row → tensor index of the quantized op's output in the verify model (must equal the
    deployed model's tensor bit for bit; checked on the first sample)."""
    method: str = "numeric-verify model"
    """How f(x̂) was computed: the trace's ``op_local_error`` attribute."""

    def check(self, int8: LiteModel, table: OpTable) -> None:
        """Drop rows whose quantized value in the verify model differs from the deployed
        model's (after both ran the same sample): their f(x̂) would describe another tensor."""
        for row in list(self.float_tensor):
            mine = self.model.get(self.quant_tensor[row])
            theirs = int8.get(table.rows[row].tensor_index)
            if mine.shape != theirs.shape or not np.array_equal(mine, theirs):
                del self.float_tensor[row]
                del self.quant_tensor[row]


def strip_verify_ops(content: bytes) -> tuple[bytes, list[tuple[int, int]]] | None:
    """The verify model without its ``NumericVerify`` ops, and their (quantized, float) input
    tensors in op order; None where the flatbuffer is not as expected (the model then runs as
    the converter built it).

    The edit is made in place, in milliseconds: the first subgraph's operator vector is
    compacted to the ops kept (each entry is an offset relative to its own position, so moved
    entries are re-based) and its length shortened. Tensors, buffers and every index stay as
    they were; the dropped ops' tables stay in the file, unreferenced.
    """
    try:
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError:  # pragma: no cover - depends on the TensorFlow version
        return None
    try:
        buf = bytearray(content)
        model = schema.Model.GetRootAs(buf, 0)
        verify_codes = {
            i for i in range(model.OperatorCodesLength())
            if (model.OperatorCodes(i).CustomCode() or b"") == VERIFY_OP.encode()
        }
        graph = model.Subgraphs(0)
        field = graph._tab.Offset(10)  # SubGraph.operators
        if not verify_codes or graph is None or not field:
            return None
        start, count = graph._tab.Vector(field), graph._tab.VectorLen(field)
        pairs: list[tuple[int, int]] = []
        kept: list[int] = []  # absolute positions of the kept ops' tables
        for j in range(count):
            op = graph.Operators(j)
            if op.OpcodeIndex() not in verify_codes:
                kept.append(op._tab.Pos)
            elif op.InputsLength() >= 2:
                pairs.append((int(op.Inputs(0)), int(op.Inputs(1))))
        for j, table in enumerate(kept):
            slot = start + 4 * j
            struct.pack_into("<I", buf, slot, table - slot)
        struct.pack_into("<I", buf, start - 4, len(kept))
        return bytes(buf), pairs
    except Exception:  # an unexpected flatbuffer: run the model as the converter built it
        return None


def fake_quant_params(twin: LiteModel, table: OpTable) -> dict[int, QuantParams]:
    """Per op row whose float reference is fake-quantized — a quantization-aware-trained
    model's twin, where the op's output passes through QUANTIZE → DEQUANTIZE and the row's
    twin tensor is that DEQUANTIZE's output — the quantization of that pair.

    The verify model's float copy of such an op gives the op's value *before* the fake
    quantization, against which the output's own rounding would count as local error while
    the accumulated error (against the fake-quantized value) does not contain it: the local
    reference is then the fake-quant model's own op, f(x̂) fake-quantized with these
    parameters (``fake_quantize``)."""
    out: dict[int, QuantParams] = {}
    for row, t in table.twin_tensor.items():
        dq = twin.producer.get(t)
        if dq is None or dq.op_type != "DEQUANTIZE" or not dq.inputs:
            continue
        q = twin.producer.get(dq.inputs[0])
        qp = twin.tensors[dq.inputs[0]].qp
        if q is not None and q.op_type == "QUANTIZE" and qp is not None:
            out[row] = qp
    return out


def fake_quantize(values: np.ndarray, qp: QuantParams) -> np.ndarray:
    """``values`` quantized with ``qp`` and dequantized again, as LiteRT's QUANTIZE (round half
    away from zero, clamped to the integer range) and DEQUANTIZE compute them."""
    x = np.asarray(values, dtype=np.float32) / np.float32(qp.scale)
    r = np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))
    raw = np.clip(r + qp.zero_point, qp.qmin, qp.qmax)
    return ((raw - qp.zero_point) * np.float32(qp.scale)).astype(np.float32)


def verify_op_pairs(verify: LiteModel) -> list[tuple[int, int]]:
    """The (quantized, float) input tensors of each ``NumericVerify`` op still in the model."""
    return [
        (op.inputs[0], op.inputs[1])
        for op in verify.ops
        if op.op_type == VERIFY_OP and len(op.inputs) >= 2
    ]


def pair_local_refs(
    verify: LiteModel,
    int8: LiteModel,
    table: OpTable,
    verify_pairs: list[tuple[int, int]] | None = None,
) -> LocalRefs:
    """Pair each ``NumericVerify`` op's (quantized, float) inputs with the deployed model's op
    rows: by position when the quantized ops come in the same order, else by tensor name.

    Args:
        verify_pairs: those inputs, when the ops were removed from ``verify``
            (``strip_verify_ops``); read from its ops otherwise.
    """
    pairs: list[tuple[str, int, int]] = []  # (op type of the quantized op, quant, float)
    for q, f in verify_op_pairs(verify) if verify_pairs is None else verify_pairs:
        producer = verify.producer.get(q)
        pairs.append((producer.op_type if producer else "", q, f))
    candidates = [
        i
        for i, r in enumerate(table.rows)
        if r.measured and int8.tensors[r.tensor_index].qp is not None
        and i not in table.graph_input_rows
    ]
    float_tensor: dict[int, int] = {}
    quant_tensor: dict[int, int] = {}
    if [p[0] for p in pairs] == [table.rows[i].op_type for i in candidates]:
        for row, (_, q, f) in zip(candidates, pairs, strict=True):
            float_tensor[row], quant_tensor[row] = f, q
    else:
        by_name = {table.rows[i].tensor_name: i for i in candidates}
        for _, q, f in pairs:
            found = by_name.get(verify.tensors[f].name)
            if found is not None:
                float_tensor[found], quant_tensor[found] = f, q
    return LocalRefs(verify, float_tensor, quant_tensor)
