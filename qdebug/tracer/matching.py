"""Mapping Keras layers to the TFLite tensors that hold their outputs.

Names alone mislead (fused ops carry several layers' names, some vanish), so every match is
verified numerically: each layer's Keras output is compared with the tensors of a *float twin*
(the same converter without quantization, hence the same ops) on a few samples, and the twin's
tensor is carried over to the INT8 model by op position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from qdebug.store.schema import (
    STATUS_FOLDED,
    STATUS_FUSED,
    STATUS_INPUT,
    STATUS_MATCHED,
    STATUS_UNMATCHED,
    STATUS_UNVERIFIED,
    LayerRecord,
)
from qdebug.tracer.graph import LayerGraph
from qdebug.tracer.litert import LiteModel

#: Relative error ‖keras − twin‖ / ‖keras‖ under which a tensor is the layer's output.
MATCH_TOLERANCE = 1e-3


def align_tensors(twin: LiteModel, int8: LiteModel) -> dict[int, int]:
    """Twin tensor index → INT8 tensor index, by op position (names as a fallback)."""
    mapping: dict[int, int] = {}
    t_ops, q_ops = twin.compute_ops(), int8.compute_ops()
    if [o.op_type for o in t_ops] == [o.op_type for o in q_ops]:
        for a, b in zip(t_ops, q_ops, strict=True):
            for ta, tb in zip(a.outputs, b.outputs, strict=False):
                mapping[ta] = tb
    else:
        by_name = {t.name: i for i, t in int8.tensors.items()}
        for i, t in twin.tensors.items():
            if t.name in by_name:
                mapping[i] = by_name[t.name]
    for t_in, q_in in zip(twin.input_indices, int8.input_indices, strict=False):
        mapping[t_in] = quantized_input(int8, q_in)
    _map_fake_quant(twin, mapping)
    return mapping


def _map_fake_quant(twin: LiteModel, mapping: dict[int, int]) -> None:
    """A QAT model's twin keeps its fake quantization as QUANTIZE→DEQUANTIZE pairs after each
    op; the Keras layer's (fake-quantized) value is the DEQUANTIZE output, which maps to the INT8
    tensor of the op before the pair."""
    for op in twin.ops:
        if op.op_type != "DEQUANTIZE" or not op.inputs or op.outputs[0] in mapping:
            continue
        q = twin.producer.get(op.inputs[0])
        if q is None or q.op_type != "QUANTIZE" or not q.inputs:
            continue
        if q.inputs[0] in mapping:
            mapping[op.outputs[0]] = mapping[q.inputs[0]]


def quantized_input(model: LiteModel, index: int) -> int:
    """The integer tensor that carries graph input ``index`` (after its QUANTIZE op, if any)."""
    if model.tensors[index].qp is None:
        for op in model.ops:
            if op.op_type == "QUANTIZE" and op.inputs and op.inputs[0] == index:
                return op.outputs[0]
    return index


def _scope_depth(tensor_name: str, layer_short: str) -> int:
    """How deep ``layer_short`` (or ``layer_short_N``) sits as a scope in the name of the op that
    produced the tensor (first component of a fused name); -1 when absent."""
    first = tensor_name.split(";")[0]
    parts = first.split("/")[:-1] or first.split("/")
    pat = re.compile(rf"^{re.escape(layer_short)}(_\d+)?$")
    hits = [i for i, p in enumerate(parts) if pat.match(p)]
    return hits[-1] if hits else -1


def _rel_error(k: np.ndarray, t: np.ndarray) -> float:
    den = float(np.linalg.norm(k))
    num = float(np.linalg.norm(k - t))
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


@dataclass
class _Choice:
    tensor: int
    rel: float
    depth: int


def match_layers(
    graph: LayerGraph,
    keras_values: dict[str, np.ndarray],
    twin: LiteModel,
    twin_values: dict[int, np.ndarray],
    int8: LiteModel,
) -> list[LayerRecord]:
    """One ``LayerRecord`` per layer of ``graph``, in its order.

    A layer is matched only to a tensor that holds its value (checked numerically). A layer
    whose value no tensor holds is computed inside a later op (``fused``), never given the
    nearest-named tensor: that tensor would be another value, and its numbers a false culprit.

    Args:
        keras_values: each layer's output on the verification samples, (V, ...).
        twin_values: the twin's float tensors on the same samples, (V, ...), by tensor index.
    """
    mapping = align_tensors(twin, int8)
    by_size: dict[int, list[int]] = {}
    for idx, v in twin_values.items():
        by_size.setdefault(int(np.prod(v.shape[1:])), []).append(idx)
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    choices: dict[str, _Choice] = {}
    for node in graph.nodes:
        k = keras_values.get(node.name)
        if k is None:
            continue
        k = np.asarray(k, dtype=np.float64).reshape(k.shape[0], -1)
        short = node.name.rpartition("/")[2]
        best: _Choice | None = None
        for idx in by_size.get(k.shape[1], []):
            t = twin_values[idx].reshape(k.shape[0], -1)
            # Most candidates differ at once: the first sample rules them out cheaply.
            if _rel_error(k[:1], t[:1]) >= 10 * MATCH_TOLERANCE:
                continue
            c = _Choice(idx, _rel_error(k, t), _scope_depth(twin.tensors[idx].name, short))
            if c.rel < MATCH_TOLERANCE:
                exact = tuple(twin.tensors[idx].shape[1:]) == tuple(node.output_shape[1:])
                key = (c.depth, exact, -c.rel)
                if best is None or key > (
                    best.depth,
                    tuple(twin.tensors[best.tensor].shape[1:]) == tuple(node.output_shape[1:]),
                    -best.rel,
                ):
                    best = c
        if best is not None:
            choices[node.name] = best

    owners: dict[int, str] = {}
    for name, c in sorted(choices.items(), key=lambda kv: order[kv[0]]):
        cur = owners.get(c.tensor)
        if cur is None or c.depth > choices[cur].depth:
            owners[c.tensor] = name

    records: dict[str, LayerRecord] = {}
    for node in graph.nodes:
        rec = LayerRecord(
            name=node.name,
            class_name=node.class_name,
            inbound=list(node.inbound),
            output_shape=list(node.output_shape),
        )
        chosen = choices.get(node.name)
        if chosen is not None and owners[chosen.tensor] == node.name:
            rec.status = STATUS_INPUT if node.is_input else STATUS_MATCHED
            _attach(rec, chosen, twin, int8, mapping)
        elif chosen is not None:
            rec.status = STATUS_FOLDED
            rec.related = owners[chosen.tensor]
            rec.match_rel_error = chosen.rel
        records[node.name] = rec
    _resolve_fused(graph, records)
    return [records[n.name] for n in graph.nodes]


def _attach(
    rec: LayerRecord, c: _Choice, twin: LiteModel, int8: LiteModel, mapping: dict[int, int]
) -> None:
    rec.match_rel_error = c.rel
    q_index = mapping.get(c.tensor)
    if q_index is None:
        rec.status = STATUS_UNVERIFIED
        rec.tensor_name = twin.tensors[c.tensor].name
        return
    info = int8.tensors[q_index]
    rec.tensor_index = q_index
    rec.tensor_name = info.name
    op = int8.producer.get(q_index)
    rec.op_type = op.op_type if op is not None else "INPUT"
    rec.dtype = str(info.dtype)
    if info.qp is not None:
        rec.scale, rec.zero_point = info.qp.scale, info.qp.zero_point
    rec.float_island = info.dtype == np.float32 and int8.quantized_activations()


def _resolve_fused(graph: LayerGraph, records: dict[str, LayerRecord]) -> None:
    """A layer without a tensor whose value flows, through single consumers, into a measured
    layer is fused into that layer."""
    consumers = {n.name: n.consumers for n in graph.nodes}
    for rec in records.values():
        if rec.status != STATUS_UNMATCHED:
            continue
        cur, seen = rec.name, set()
        while len(consumers.get(cur, [])) == 1 and cur not in seen:
            seen.add(cur)
            cur = consumers[cur][0]
            nxt = records[cur]
            if nxt.measured:
                rec.status, rec.related = STATUS_FUSED, cur
                break
            if nxt.status == STATUS_FOLDED:
                rec.status, rec.related = STATUS_FUSED, nxt.related
                break
