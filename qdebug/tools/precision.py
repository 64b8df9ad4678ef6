"""Per-op precision through ai-edge-quantizer: which ops a recipe can raise, the recipe that
raises them, and what a raised set costs.

An op is named by its *key*, the name of its first output tensor in the float ``.tflite``
(AEQ keeps the float model's tensor names, so the key names the same op in every model it
writes, and in the trace's ``/ops`` table as ``tensor_name``). A tensor keeps the precision of
its writer only where its readers compute in that precision too: AEQ puts a QUANTIZE between
an int16 writer and an int8 reader, which rounds the tensor to int8 again. So the unit raised
is a *group*: an op and the ops that read its output (``FloatGraph.group``).

Costs are measured on the model AEQ wrote, against the all-int8 one: the file's bytes, the
bytes of every activation tensor (an int16 value takes 2 bytes, a float one 4, an int8 one 1),
the ops computing in int16 or float, and the QUANTIZE/DEQUANTIZE ops added between regions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INT16 = "int16"
FLOAT = "float"
#: What an op can be raised to, cheapest first.
PRECISIONS = (INT16, FLOAT)
_RANK = {INT16: 1, FLOAT: 2}

#: One op's precision in a per-op recipe, (key, precision) pairs sorted by key.
Raised = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class GraphOp:
    """One op of the float model a recipe can address."""

    key: str
    """Its first output tensor's name."""
    op_type: str
    outputs: tuple[str, ...]
    """Its output tensors' names (AEQ's scope of the op)."""
    readers: tuple[str, ...]
    """Keys of the ops that read its outputs."""


class FloatGraph:
    """The ops of a float ``.tflite`` that compute float values, in execution order."""

    def __init__(self, content: bytes) -> None:
        from qdebug.tracer.litert import LiteModel

        lite = LiteModel(content, preserve=False)
        ops = [op for op in lite.compute_ops()
               if any(lite.tensors[t].dtype == np.float32 for t in op.outputs)]
        name = {i: t.name for i, t in lite.tensors.items()}
        readers: dict[int, list[str]] = {}
        for op in ops:
            for t in op.inputs:
                if t >= 0:
                    readers.setdefault(t, []).append(name[op.outputs[0]])
        self.ops: dict[str, GraphOp] = {}
        for op in ops:
            key = name[op.outputs[0]]
            rd = [r for t in op.outputs for r in readers.get(t, []) if r != key]
            self.ops[key] = GraphOp(key, op.op_type, tuple(name[t] for t in op.outputs),
                                    tuple(dict.fromkeys(rd)))

    def group(self, key: str) -> tuple[str, ...]:
        """``key`` and the ops reading its outputs: what must be raised for its output tensor
        to keep the higher precision."""
        return (key, *self.ops[key].readers) if key in self.ops else ()


def merged(raised: Raised, keys: tuple[str, ...], precision: str) -> Raised:
    """``raised`` with ``keys`` raised to ``precision`` (an op never goes down)."""
    out = dict(raised)
    for k in keys:
        if _RANK[precision] > _RANK.get(out.get(k, ""), 0):
            out[k] = precision
    return tuple(sorted(out.items()))


def recipe_for(raised: Raised | Mapping[str, str], graph: FloatGraph) -> list[dict[str, Any]]:
    """AEQ's recipe: static int8 for every op, then one entry per raised op (int16
    activations with int8 weights, or no quantization); the last matching entry wins."""
    from qdebug.tracer.aeq import op_scope_regex, resolve_recipe

    entries = list(resolve_recipe("int8")[1])
    int16 = resolve_recipe("int16")[1][0]
    for key, precision in dict(raised).items():
        regex = op_scope_regex(graph.ops[key].outputs)
        if precision == INT16:
            entries.append(dict(int16, regex=regex))
        else:
            entries.append({"regex": regex, "operation": "*", "algorithm_key": "no_quantize",
                            "op_config": {}})
    return entries


@dataclass(frozen=True)
class Footprint:
    """What one quantized model takes."""

    model_bytes: int
    activation_bytes: int
    """Sum of every op output's bytes (each tensor once, not the runtime's peak)."""
    int16_ops: int
    float_ops: int
    """Ops other than QUANTIZE/DEQUANTIZE computing float values."""
    edge_ops: int
    """QUANTIZE and DEQUANTIZE ops."""


def footprint(content: bytes) -> Footprint:
    """Measure a quantized ``.tflite``."""
    from qdebug.tracer.litert import EDGE_OPS, LiteModel

    lite = LiteModel(content, preserve=False)
    ops = lite.model_ops()
    outs = {t for op in ops for t in op.outputs if t >= 0}
    act = sum(int(np.prod(lite.tensors[t].shape)) * lite.tensors[t].dtype.itemsize for t in outs)
    kinds = [lite.tensors[op.outputs[0]].dtype for op in lite.compute_ops() if op.outputs]
    return Footprint(
        model_bytes=len(content),
        activation_bytes=act,
        int16_ops=sum(d == np.int16 for d in kinds),
        float_ops=sum(d == np.float32 for d in kinds),
        edge_ops=sum(op.op_type in EDGE_OPS for op in ops),
    )


@dataclass(frozen=True)
class Cost:
    """What a per-op recipe costs beside the all-int8 model."""

    model_bytes: int
    activation_bytes: int
    int16_ops: int
    float_ops: int
    edge_ops: int

    @property
    def total_bytes(self) -> int:
        """Model and activation bytes: what the search minimizes."""
        return self.model_bytes + self.activation_bytes

    def describe(self) -> str:
        """``+728 B model, +1.1 KiB activations; 4 ops int16, 0 float, +2 QUANTIZE/DEQUANTIZE``."""
        return (f"{_bytes(self.model_bytes)} model, {_bytes(self.activation_bytes)} "
                f"activations; {self.int16_ops} op(s) int16, {self.float_ops} float, "
                f"{self.edge_ops:+d} QUANTIZE/DEQUANTIZE")

    def as_dict(self) -> dict[str, int]:
        """The numbers by name (JSON output)."""
        return {"model_bytes": self.model_bytes, "activation_bytes": self.activation_bytes,
                "total_bytes": self.total_bytes, "int16_ops": self.int16_ops,
                "float_ops": self.float_ops, "edge_ops": self.edge_ops}


def cost(base: Footprint, cand: Footprint) -> Cost:
    """``cand``'s cost beside ``base`` (the all-int8 model)."""
    return Cost(cand.model_bytes - base.model_bytes,
                cand.activation_bytes - base.activation_bytes,
                cand.int16_ops - base.int16_ops, cand.float_ops - base.float_ops,
                cand.edge_ops - base.edge_ops)


def cost_of_traces(base: Path, cand: Path) -> Cost | None:
    """The cost of the model a trace was made from beside a baseline trace's (None when
    either trace was written without its model)."""
    from qdebug.store.reader import open_trace

    prints = []
    for path in (base, cand):
        with open_trace(path) as tr:
            if not tr.has_model:
                return None
            prints.append(footprint(tr.tflite_bytes()))
    return cost(prints[0], prints[1])


def _bytes(n: int) -> str:
    sign = "+" if n >= 0 else "-"
    m = abs(n)
    return f"{sign}{m} B" if m < 10_000 else f"{sign}{m / 1024:.1f} KiB"


__all__ = ["FLOAT", "INT16", "PRECISIONS", "Cost", "FloatGraph", "Footprint", "GraphOp",
           "Raised", "cost", "cost_of_traces", "footprint", "merged", "recipe_for"]
