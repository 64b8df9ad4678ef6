"""Local error of every op of any pair: the float model's op fed the quantized model's inputs.

The converter's numeric-verify model (``verify.py``) exists only for models the converter
quantizes itself. For any other pair — a ``.tflite`` pair handed over with ``--tflite``,
ai-edge-quantizer's, litert-torch's, an int16x8 model — qdebug builds the local reference
itself from the float model's flatbuffer: one model holding, for every quantized op of the
deployed model with a float counterpart, a copy of that float op whose activation inputs are
new graph inputs. After the deployed model ran a sample, those inputs are fed the deployed
model's own input tensors of the op, dequantized; one invoke then gives f(x̂) for every op.

Weights and other constants are the float model's own (the copies share its buffers); a
weight the float model computes from constants (float16 weights behind a DEQUANTIZE) keeps
the ops computing it. A requantizing QUANTIZE (int8 to int8 at another scale) is an identity
in float: its f(x̂) is its dequantized input, read back from the input fed; one without
metrics of its own (not matched to the float model) is looked through, so that its rounding
counts at the op it feeds, as in the numeric-verify model. Rows without a
counterpart of the same op type, fed by a per-channel integer activation, or by a state
(variable) tensor get no local error, as before.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qdebug.metrics import QuantParams, dequantize
from qdebug.tracer.litert import LiteModel
from qdebug.tracer.oprows import OpTable
from qdebug.tracer.verify import LocalRefs

#: The trace's ``op_local_error`` attribute for these local references.
METHOD = "float ops fed the quantized inputs (qdebug)"

#: TFLite's TensorType codes of the numpy types a fed tensor may have.
_NUMPY_OF_TYPE = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64,
                  6: np.bool_, 7: np.int16, 9: np.int8, 10: np.float64}


@dataclass(frozen=True)
class Feed:
    """One input of the local reference model and where its value comes from."""

    tensor: int
    """The local model's input tensor."""
    source: int
    """The deployed model's tensor (read after it ran the sample)."""
    qp: QuantParams | None
    """The source's quantization (dequantized on the way), None: fed as it is."""
    dtype: Any


@dataclass
class OpLocalRefs(LocalRefs):
    """Each op row's f(x̂) in a model built by qdebug from the float model's flatbuffer, fed
    from the deployed interpreter after each invoke (``feed``)."""

    feeds: list[Feed] = field(default_factory=list)
    method: str = METHOD
    """The trace's ``op_local_error`` attribute."""
    _shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """Each fed tensor's shape as allocated."""

    def check(self, int8: LiteModel, table: OpTable) -> None:
        """Nothing to check: the model has no quantized path of its own."""

    def feed(self, int8: LiteModel) -> None:
        """Run the local model on the deployed model's values of the sample it just ran."""
        interp = self.model.interp
        values = [
            (dequantize(int8.view(f.source), f.qp) if f.qp is not None
             else int8.view(f.source)).astype(f.dtype)
            for f in self.feeds
        ]
        resized = False
        for f, value in zip(self.feeds, values, strict=True):
            if self._shapes.get(f.tensor) != value.shape:  # a dynamic shape, or the first run
                interp.resize_tensor_input(f.tensor, list(value.shape))
                self._shapes[f.tensor] = value.shape
                resized = True
        if resized:
            interp.allocate_tensors()
        for f, value in zip(self.feeds, values, strict=True):
            interp.set_tensor(f.tensor, value)
        interp.invoke()


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - depends on the LiteRT version
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _static_tensors(twin: LiteModel, constants: set[int]) -> dict[int, list[int]]:
    """Tensors of the float model computed from constants alone, with the ops (indices, in
    order) that compute them; constants map to no op."""
    static: dict[int, list[int]] = {t: [] for t in constants}
    for op in twin.model_ops():
        ins = [t for t in op.inputs if t >= 0]
        if op.outputs and ins and all(t in static for t in ins):
            chain = sorted({i for t in ins for i in static[t]} | {op.index})
            for t in op.outputs:
                static[t] = chain
    return static


def _before_requantize(int8: LiteModel, table: OpTable, tensor: int) -> int:
    """The tensor an op's input was requantized from, through QUANTIZE ops without metrics
    of their own (the converter's int8-to-int8 rescaling before a CONCATENATION): their
    rounding belongs to the op they feed, as in the numeric-verify model."""
    seen = 0
    while seen < 8:
        op = int8.producer.get(tensor)
        row = table.row_of_tensor.get(tensor)
        if (op is None or op.op_type != "QUANTIZE" or not op.inputs or op.inputs[0] < 0
                or row is None or table.rows[row].measured
                or int8.tensors[op.inputs[0]].qp is None):  # float in: a quantization
            return tensor
        tensor, seen = op.inputs[0], seen + 1
    return tensor


def build_op_local_refs(
    twin_bytes: bytes, twin: LiteModel, int8: LiteModel, table: OpTable
) -> OpLocalRefs | None:
    """The local reference model of a pair, or None where no op can have one (or the float
    model's flatbuffer cannot be rebuilt: then ops have no local error, as before)."""
    try:
        return _build(twin_bytes, twin, int8, table)
    except Exception:  # an unexpected flatbuffer: trace without local error
        return None


def _build(
    twin_bytes: bytes, twin: LiteModel, int8: LiteModel, table: OpTable
) -> OpLocalRefs | None:
    schema = _schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(twin_bytes), 0))
    graph = model.subgraphs[0]
    tensors = graph.tensors
    inputs = set(twin.input_indices)
    constants = {
        i for i, t in enumerate(tensors)
        if i not in inputs and model.buffers[t.buffer].data is not None
        and len(model.buffers[t.buffer].data) > 0
    }
    static = _static_tensors(twin, constants)
    keep_ops: set[int] = set()
    new_ops: list[Any] = []
    feeds: list[Feed] = []
    float_tensor: dict[int, int] = {}
    outputs: list[int] = []

    def new_tensor(like: int, suffix: str, shape: tuple[int, ...] | None = None) -> int:
        return _new_tensor(model, schema, like, suffix, shape)

    def feed_from(source: int, like: int, suffix: str) -> int | None:
        """A new input fed from the deployed ``source`` in the float tensor ``like``'s type."""
        info = int8.tensors[source]
        dtype = _NUMPY_OF_TYPE.get(int(tensors[like].type))
        if dtype is None:
            return None
        if info.qp is None and info.dtype.kind in "iu" and np.dtype(dtype).kind == "f":
            return None  # per-channel integers: no per-tensor dequantization
        shape = tuple(int(s) for s in int8.details[source]["shape"])
        t = new_tensor(like, suffix, shape)
        feeds.append(Feed(t, source, info.qp if np.dtype(dtype).kind == "f" else None, dtype))
        return t

    for row in _candidates(table, int8):
        deployed = int8.producer.get(table.rows[row].tensor_index)
        made = twin.producer.get(table.twin_tensor[row])
        if deployed is None or made is None:
            continue
        suffix = f"/qdebug_local_{row}"
        if deployed.op_type == "QUANTIZE" and made.op_type != "QUANTIZE":
            # A requantization: the identity in float, f(x̂) is its dequantized input.
            if not deployed.inputs or deployed.inputs[0] < 0:
                continue
            t = feed_from(deployed.inputs[0], table.twin_tensor[row], suffix)
            if t is not None:
                float_tensor[row] = t
            continue
        if (made.op_type != deployed.op_type or len(made.inputs) != len(deployed.inputs)
                or table.twin_tensor[row] not in made.outputs):
            continue
        op = graph.operators[made.index]
        new_inputs: list[int] = []
        chains: list[int] = []
        start = len(feeds)
        ok = True
        for pos, b in enumerate(made.inputs):
            if b < 0:
                new_inputs.append(b)
            elif b in static:
                new_inputs.append(b)
                chains.extend(static[b])
            elif tensors[b].isVariable or deployed.inputs[pos] < 0:
                ok = False
            else:
                t = feed_from(_before_requantize(int8, table, deployed.inputs[pos]), b,
                              f"{suffix}_in{pos}")
                if t is None:
                    ok = False
                else:
                    new_inputs.append(t)
            if not ok:
                break
        if not ok:
            del feeds[start:]  # their tensors stay in the graph, unused
            continue
        new_outputs = [new_tensor(o, f"{suffix}_out{k}") for k, o in enumerate(made.outputs)]
        clone = copy.deepcopy(op)
        clone.inputs, clone.outputs = new_inputs, new_outputs
        clone.intermediates = None
        new_ops.append(clone)
        keep_ops.update(chains)
        float_tensor[row] = new_outputs[list(made.outputs).index(table.twin_tensor[row])]
        outputs.extend(new_outputs)
    if not float_tensor:
        return None
    graph.operators = [graph.operators[i] for i in sorted(keep_ops)] + new_ops
    graph.inputs = [f.tensor for f in feeds]
    graph.outputs = outputs or [f.tensor for f in feeds]
    lite = LiteModel(_pack(model, len(twin_bytes)), preserve=True)
    return OpLocalRefs(lite, float_tensor, {}, feeds=feeds)


def _new_tensor(
    model: Any, schema: Any, like: int, suffix: str, shape: tuple[int, ...] | None
) -> int:
    """A new float tensor of the first subgraph shaped like ``like`` (or ``shape``), with a
    buffer of its own; its index."""
    tensors = model.subgraphs[0].tensors
    t = copy.copy(tensors[like])
    name = t.name or b""
    t.name = name + suffix.encode() if isinstance(name, bytes) else f"{name}{suffix}"
    t.quantization = None
    t.isVariable = False
    t.sparsity = None
    if shape is not None:
        t.shape = list(shape)
        t.shapeSignature = None
    model.buffers.append(schema.BufferT())
    t.buffer = len(model.buffers) - 1
    tensors.append(t)
    return len(tensors) - 1


def _candidates(table: OpTable, int8: LiteModel) -> list[int]:
    """Op rows that may get a local reference: measured, quantized, with a float tensor."""
    return [
        i for i, r in enumerate(table.rows)
        if r.measured and int8.tensors[r.tensor_index].qp is not None
        and i not in table.graph_input_rows and i in table.twin_tensor
    ]


def _pack(model: Any, size: int) -> bytes:
    """The edited model object as ``.tflite`` bytes (no signatures: its inputs are new)."""
    import flatbuffers  # type: ignore[import-untyped]

    model.signatureDefs = None
    builder = flatbuffers.Builder(max(1024, size + (1 << 16)))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
