"""The op table: every operator of the deployed model as a row, aligned with its float twin.

The quantized model's op graph is what runs, so it is the backbone of a trace. Each op's output
tensor is paired with the float twin's tensor for the same op (same converter, same ops), which
gives its accumulated error; the converter's numeric-verify model gives its local error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from qdebug.analysis.culprits import measured_inputs
from qdebug.metrics import QuantParams
from qdebug.store.schema import (
    OP_HIDDEN,
    OP_INTEGER,
    OP_MEASURED,
    OP_UNMAPPED,
    STATUS_INPUT,
    STATUS_MATCHED,
    LayerRecord,
    OpRecord,
)
from qdebug.tracer.litert import LiteModel, OpInfo

#: Name components that say nothing about where an op sits in the model.
_GENERIC = re.compile(
    r"^(tfl\.|arith\.|StatefulPartitionedCall|serving_default|PartitionedCall|Identity_?\d*$)"
)


@dataclass
class OpTable:
    """The op rows and how to read each one's values."""

    rows: list[OpRecord]
    twin_tensor: dict[int, int]
    """Row → the twin's tensor index holding the float value."""
    row_of_tensor: dict[int, int]
    """INT8 tensor index → the row of the op producing it (graph inputs: their QUANTIZE)."""
    graph_input_rows: set[int]
    """Rows that quantize a graph input (their error is all their own)."""
    graph_inputs: dict[int, int]
    """INT8 graph input tensor → the twin's (inputs fed to an op as they are, without a
    QUANTIZE of their own: int8 inputs, ids, inputs of an op kept in float)."""

    def measured(self) -> list[int]:
        """Rows with metrics, in order."""
        return [i for i, r in enumerate(self.rows) if r.status == OP_MEASURED]

    def qparams(self, int8: LiteModel, row: int) -> QuantParams | None:
        """Quantization of a row's tensor (None: float)."""
        return int8.tensors[self.rows[row].tensor_index].qp


def scope_label(tensor_name: str, op_type: str, index: int) -> str:
    """A readable label for an op from its output tensor's name: the scope of the first fused
    name (``model/block1/conv/BiasAdd;...`` → ``model/block1/conv``)."""
    first = tensor_name.split(";")[0]
    first = re.sub(r":\d+$", "", first)
    parts = [p for p in first.split("/") if p]
    if len(parts) > 1:
        parts = parts[:-1]
    label = "/".join(parts)
    if not label or _GENERIC.match(label):
        return f"{op_type.lower()}_{index}"
    return label


def op_precision(lite: LiteModel, op: OpInfo) -> str:
    """What ``op`` computes in (``OpRecord.precision``): its output's quantized type, else
    ``dynamic`` (a float output from int8 weights) or ``float``; ``""`` for integer ops."""
    info = lite.tensors[op.outputs[0]]
    if info.qp is not None:
        return "int16" if info.dtype == np.int16 else "int8"
    if info.dtype.kind in "biu":
        return ""
    weights = [lite.tensors[i] for i in op.inputs
               if i >= 0 and i not in lite.producer and i not in lite.input_indices]
    return "dynamic" if any(t.dtype == np.int8 for t in weights) else "float"


def build_op_table(int8: LiteModel, twin: LiteModel, mapping: dict[int, int]) -> OpTable:
    """One row per op of ``int8`` in execution order.

    Args:
        mapping: twin tensor index → INT8 tensor index (``matching.align_tensors``).
    """
    to_twin = {q: t for t, q in mapping.items()}
    graph_inputs = set(int8.input_indices)
    # Inside a delegate's partition (a custom op made the model run on XNNPACK) a tensor that
    # is not among the partition's outputs is never written: its op cannot be observed.
    hidden, twin_hidden = int8.hidden_tensors(), twin.hidden_tensors()
    rows: list[OpRecord] = []
    twin_tensor: dict[int, int] = {}
    row_of_tensor: dict[int, int] = {}
    input_rows: set[int] = set()
    seen: dict[str, int] = {}
    for op in int8.model_ops():
        if not op.outputs:
            continue
        t = op.outputs[0]
        info = int8.tensors[t]
        if info.qp is None and info.dtype.kind in "biu":
            status = OP_INTEGER
        elif t in hidden or to_twin.get(t) in twin_hidden:
            status = OP_HIDDEN
        elif t in to_twin and twin.tensors[to_twin[t]].dtype == np.float32:
            status = OP_MEASURED
        else:
            status = OP_UNMAPPED
        label = scope_label(info.name, op.op_type, op.index)
        if op.op_type == "QUANTIZE" and op.inputs and op.inputs[0] in graph_inputs:
            label = f"quantize({scope_label(int8.tensors[op.inputs[0]].name, 'input', op.index)})"
        count = seen.get(label, 0)
        seen[label] = count + 1
        if count:
            label = f"{label}#{count + 1}"
        row = len(rows)
        ins = sorted({row_of_tensor[i] for i in op.inputs if i in row_of_tensor})
        rows.append(
            OpRecord(
                index=op.index,
                op_type=op.op_type,
                name=label,
                tensor_name=info.name,
                tensor_index=t,
                dtype=str(info.dtype),
                scale=info.qp.scale if info.qp else float("nan"),
                zero_point=info.qp.zero_point if info.qp else 0,
                inputs=ins,
                status=status,
                precision=op_precision(int8, op),
            )
        )
        if status == OP_MEASURED:
            twin_tensor[row] = to_twin[t]
        if op.op_type == "QUANTIZE" and op.inputs and op.inputs[0] in graph_inputs:
            input_rows.add(row)
        for out in op.outputs:
            row_of_tensor[out] = row
    inputs = dict(zip(int8.input_indices, twin.input_indices, strict=False))
    return OpTable(rows, twin_tensor, row_of_tensor, input_rows, inputs)


def op_layer_records(table: OpTable, int8: LiteModel) -> list[LayerRecord]:
    """The measured ops as rows of a layer table (the view of a model without Keras layers):
    named by scope, ``inbound`` the ops they consume."""
    records: list[LayerRecord] = []
    keep = table.measured()
    names = {i: table.rows[i].name for i in keep}
    measured = set(keep)
    islands = int8.quantized_activations()
    for i in keep:
        r = table.rows[i]
        info = int8.tensors[r.tensor_index]
        records.append(
            LayerRecord(
                name=r.name,
                class_name=r.op_type,
                inbound=[names[j] for j in measured_inputs(table.rows, i, measured)],
                output_shape=[None, *info.shape[1:]],
                status=STATUS_INPUT if i in table.graph_input_rows else STATUS_MATCHED,
                tensor_name=r.tensor_name,
                tensor_index=r.tensor_index,
                op_type=r.op_type,
                dtype=r.dtype,
                scale=r.scale,
                zero_point=r.zero_point,
                match_rel_error=0.0,
                float_island=info.dtype == np.float32 and islands,
                ops=[i],
            )
        )
    return records


def assign_layers(table: OpTable, records: list[LayerRecord], int8: LiteModel) -> None:
    """Give every layer the ops it lowered to and every op its layer.

    A measured layer owns the op producing its tensor and, walking back, every op whose tensor
    no other measured layer claims (a SeparableConv2D's DEPTHWISE_CONV_2D, the MULs of a
    LayerNormalization, Keras 3's op nodes fused into the next layer).
    """
    claimed: dict[int, int] = {}  # op row → layer record index
    for li, rec in enumerate(records):
        if rec.measured and rec.tensor_index in table.row_of_tensor:
            claimed.setdefault(table.row_of_tensor[rec.tensor_index], li)
    owners = dict(claimed)
    for li, rec in enumerate(records):
        if not rec.measured or rec.tensor_index not in table.row_of_tensor:
            continue
        start = table.row_of_tensor[rec.tensor_index]
        if claimed.get(start) != li:
            continue
        stack = list(table.rows[start].inputs)
        while stack:
            row = stack.pop()
            if row in owners or row in table.graph_input_rows:
                continue
            owners[row] = li
            stack.extend(table.rows[row].inputs)
    for row, li in owners.items():
        table.rows[row].layer = records[li].name
    for li, rec in enumerate(records):
        rec.ops = sorted(row for row, owner in owners.items() if owner == li)
