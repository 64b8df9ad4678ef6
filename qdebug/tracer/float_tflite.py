"""A published float ``.tflite`` made ready for ai-edge-quantizer, computing the same.

Float ``.tflite`` files from on-device packages are not what ai-edge-quantizer (AEQ) 0.10.0
expects, in three ways, each repaired here on the flatbuffer:

- **op codes only in ``deprecated_builtin_code``** (older files leave ``builtin_code`` at 0,
  ADD): AEQ reads ``builtin_code``, takes every op for an ADD, quantizes CONV_2D weights as
  activations and writes zero points LiteRT refuses. The schema's rule is applied:
  ``builtin_code = max(builtin_code, deprecated_builtin_code)``.
- **float16 weights behind DEQUANTIZE ops**: each DEQUANTIZE of a float16 constant is dropped
  and its float32 output becomes the constant (LiteRT dequantizes float16 exactly, so the model
  computes the same); a DEQUANTIZE of a float16 activation is refused.
- **no signature**: AEQ calibrates by signature; a ``serving_default`` signature naming the
  graph's inputs and outputs by their tensor names is added.

A model that is already quantized, or has more than one subgraph, is refused in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qdebug.errors import TfliteModelError

SIGNATURE = "serving_default"
#: The op-code field's values up to here fit the deprecated int8 field (schema.fbs).
_DEPRECATED_LIMIT = 127


@dataclass(frozen=True)
class FloatTflite:
    """A float ``.tflite`` as AEQ can quantize it."""

    model: bytes
    """The repaired flatbuffer (the input's own bytes when nothing needed repair)."""
    signature: str
    """The signature AEQ calibrates."""
    inputs: tuple[str, ...]
    """The signature's input names, in the order of the graph's inputs."""
    repairs: tuple[str, ...]
    """What was repaired, in words (empty: the file was used as given)."""


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _read(model: bytes) -> Any:
    schema = _schema()
    try:
        return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    except Exception as exc:  # a truncated or foreign flatbuffer
        raise TfliteModelError(
            f"the .tflite cannot be read as a TFLite flatbuffer ({type(exc).__name__})",
            "give a float .tflite written by a TFLite converter",
        ) from exc


def _op_codes(m: Any) -> int:
    """Copy deprecated op codes into ``builtin_code``; how many were copied."""
    copied = 0
    for oc in m.operatorCodes:
        dep = oc.deprecatedBuiltinCode
        if dep < _DEPRECATED_LIMIT and dep > oc.builtinCode:
            oc.builtinCode = dep
            copied += 1
    return copied


def _float16_constants(m: Any) -> int:
    """Drop each DEQUANTIZE of a float16 constant, its output stored as a float32 constant;
    how many were dropped."""
    schema = _schema()
    g = m.subgraphs[0]
    deq = {i for i, oc in enumerate(m.operatorCodes)
           if oc.builtinCode == schema.BuiltinOperator.DEQUANTIZE}
    kept, dropped = [], 0
    for op in g.operators:
        src = g.tensors[op.inputs[0]] if op.opcodeIndex in deq and len(op.inputs) else None
        if src is None or src.type != schema.TensorType.FLOAT16:
            kept.append(op)
            continue
        data = m.buffers[src.buffer].data if src.buffer < len(m.buffers) else None
        if data is None or len(data) == 0:
            raise TfliteModelError(
                f"op {len(kept) + dropped} (DEQUANTIZE) reads the float16 activation "
                f"'{_name(src)}': ai-edge-quantizer quantizes float32 models only",
                "give the float32 model",
            )
        buf = schema.BufferT()
        buf.data = np.frombuffer(bytes(data), np.float16).astype(np.float32).tobytes()
        m.buffers.append(buf)
        g.tensors[op.outputs[0]].buffer = len(m.buffers) - 1
        dropped += 1
    g.operators = kept
    return dropped


def _name(t: Any) -> str:
    n = t.name
    return n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n)


def _signature(m: Any) -> tuple[str, tuple[str, ...], bool]:
    """The signature of subgraph 0 (added when the file has none), its input names in the
    graph's input order, and whether it was added."""
    schema = _schema()
    g = m.subgraphs[0]
    for sig in m.signatureDefs or []:
        if sig.subgraphIndex == 0:
            by_tensor = {t.tensorIndex: _name(t) for t in sig.inputs or []}
            if sorted(by_tensor) == sorted(g.inputs):
                key = sig.signatureKey
                return (key.decode() if isinstance(key, bytes) else str(key),
                        tuple(by_tensor[i] for i in g.inputs), False)

    def tensor_map(i: int) -> Any:
        t = schema.TensorMapT()
        t.name, t.tensorIndex = g.tensors[i].name, i
        return t

    sig = schema.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = SIGNATURE, 0
    sig.inputs = [tensor_map(i) for i in g.inputs]
    sig.outputs = [tensor_map(i) for i in g.outputs]
    m.signatureDefs = [sig]
    return SIGNATURE, tuple(_name(g.tensors[i]) for i in g.inputs), True


def _refuse_quantized(m: Any) -> None:
    schema = _schema()
    for t in m.subgraphs[0].tensors:
        q = t.quantization
        if t.type in (schema.TensorType.INT8, schema.TensorType.UINT8, schema.TensorType.INT16) \
                and q is not None and q.scale is not None and len(q.scale):
            raise TfliteModelError(
                f"the .tflite is already quantized (tensor '{_name(t)}' holds "
                f"{'int16' if t.type == schema.TensorType.INT16 else 'int8'} values)",
                "give the float model it was made from as MODEL and this one as --tflite",
            )


def prepare_float_tflite(model: bytes) -> FloatTflite:
    """The float ``.tflite`` ``model`` repaired for AEQ (see the module docstring)."""
    m = _read(model)
    if len(m.subgraphs or []) != 1:
        raise TfliteModelError(
            f"the .tflite has {len(m.subgraphs or [])} subgraphs (control flow or several "
            "signatures): qdebug quantizes models of one subgraph with ai-edge-quantizer",
            "quantize it yourself and give the pair with --tflite",
        )
    _refuse_quantized(m)
    repairs = []
    if copied := _op_codes(m):
        repairs.append(f"op codes read from deprecated_builtin_code ({copied})")
    if dropped := _float16_constants(m):
        repairs.append(f"float16 weights stored as float32 ({dropped} DEQUANTIZE ops dropped)")
    key, inputs, added = _signature(m)
    if added:
        repairs.append(f"signature '{SIGNATURE}' added")
    if not repairs:
        return FloatTflite(model, key, inputs, ())
    import flatbuffers  # type: ignore[import-untyped]

    b = flatbuffers.Builder(max(1024, len(model)))
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return FloatTflite(bytes(b.Output()), key, inputs, tuple(repairs))
