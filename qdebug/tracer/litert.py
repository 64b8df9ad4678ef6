"""Running a ``.tflite`` model in LiteRT with every intermediate tensor readable."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from qdebug.errors import TfliteModelError
from qdebug.metrics import QuantParams
from qdebug.tracer.tfenv import without_info_lines

#: Ops that only move values between float and integer at the edges of quantized regions.
EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")

#: Custom ops LiteRT's builtin kernels lack and its XNNPACK delegate implements (MediaPipe's,
#: e.g. in its selfie segmentation and hand models): a model with them runs on XNNPACK.
XNNPACK_CUSTOM_OPS = ("Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D")

#: The node a delegate puts in place of the ops it runs (listed after them by LiteRT).
DELEGATE = "DELEGATE"

#: Ops named one by one in a note; more are counted.
_NAMED = 12


@dataclass(frozen=True)
class TensorInfo:
    """One TFLite tensor."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    qp: QuantParams | None
    """Per-tensor quantization of an integer tensor; None for float or per-channel tensors."""


@dataclass(frozen=True)
class OpInfo:
    """One TFLite operator."""

    index: int
    op_type: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _qparams(detail: dict[str, Any]) -> QuantParams | None:
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer) or dtype == np.int32 or dtype == np.int64:
        return None
    params = detail.get("quantization_parameters", {})
    scales = np.asarray(params.get("scales", []))
    zps = np.asarray(params.get("zero_points", []))
    if scales.size != 1:
        return None
    info = np.iinfo(dtype)
    return QuantParams(float(scales[0]), int(zps[0]), int(info.min), int(info.max))


class LiteModel:
    """A LiteRT interpreter over a ``.tflite`` model.

    Args:
        content: the flatbuffer bytes.
        preserve: keep every intermediate tensor readable after ``invoke``.
        xnnpack: use the default delegates (XNNPACK, the deployment kernels) instead of the
            deterministic builtin kernels.
    """

    def __init__(self, content: bytes, *, preserve: bool = True, xnnpack: bool = False) -> None:
        self.xnnpack = xnnpack
        """Whether XNNPACK runs the ops it supports (asked for, or needed by a custom op)."""
        try:
            self.interp = _interpreter(content, preserve, xnnpack)
        except (ValueError, RuntimeError) as exc:
            custom = _unresolved_custom_op(exc)
            if xnnpack or custom not in XNNPACK_CUSTOM_OPS:
                raise _load_error(exc, custom) from exc
            try:  # a custom op XNNPACK implements: the model is valid, XNNPACK runs it
                self.interp = _interpreter(content, preserve, True)
            except (ValueError, RuntimeError) as again:
                raise _load_error(again, _unresolved_custom_op(again)) from again
            self.xnnpack = True
        details = self.interp.get_tensor_details()  # a Python dict per tensor: read once
        self.details: dict[int, dict[str, Any]] = {int(d["index"]): d for d in details}
        self.tensors = {
            d["index"]: TensorInfo(
                d["index"],
                d["name"],
                tuple(int(s) for s in d["shape"]),
                np.dtype(d["dtype"]),
                _qparams(d),
            )
            for d in details
        }
        # The nodes as ``_get_ops_details`` lists them, without the details dict of every
        # operand it builds too (most of the set-up of a model of a thousand ops).
        nodes = self.interp._interpreter
        self.ops = [
            OpInfo(i, str(nodes.NodeName(i)), tuple(int(t) for t in nodes.NodeInputs(i)),
                   tuple(int(t) for t in nodes.NodeOutputs(i)))
            for i in range(nodes.NumNodes())
        ]
        self.input_details = self.interp.get_input_details()
        self.output_details = self.interp.get_output_details()
        self.producer = {t: op for op in self.ops if op.op_type != DELEGATE for t in op.outputs}
        self.custom_ops = tuple(sorted({op.op_type for op in self.ops
                                        if op.op_type in XNNPACK_CUSTOM_OPS}))
        """Custom ops of the model that only XNNPACK runs (empty for builtin-only models)."""
        self._readers: dict[int, Callable[[], np.ndarray]] = {}

    @property
    def input_indices(self) -> list[int]:
        """Tensor indices of the graph inputs."""
        return [int(d["index"]) for d in self.input_details]

    @property
    def output_indices(self) -> list[int]:
        """Tensor indices of the graph outputs."""
        return [int(d["index"]) for d in self.output_details]

    def input_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the inputs, with the batch dimension."""
        return [tuple(int(s) for s in d["shape"]) for d in self.input_details]

    def invoke(self, inputs: list[np.ndarray]) -> None:
        """Run one sample. ``inputs`` are real-valued, without the batch dimension; integer
        inputs are quantized with the input's own scale and zero point."""
        for d, x in zip(self.input_details, inputs, strict=True):
            info = self.tensors[int(d["index"])]
            if info.qp is None and info.dtype.kind in "biu":  # ids and masks: as they are
                self.interp.set_tensor(int(d["index"]), np.asarray(x).astype(info.dtype)[None])
                continue
            value = np.asarray(x, dtype=np.float32)[None]
            if info.qp is not None:
                qp = info.qp
                value = np.clip(np.round(value / qp.scale) + qp.zero_point, qp.qmin, qp.qmax)
            self.interp.set_tensor(int(d["index"]), value.astype(info.dtype))
        self.interp.invoke()

    def get(self, index: int) -> np.ndarray:
        """A copy of a tensor's value after ``invoke``."""
        return np.asarray(self.interp.get_tensor(index))

    def view(self, index: int) -> np.ndarray:
        """A tensor's value after ``invoke``, in the interpreter's own memory: valid until the
        next ``invoke`` (copy it before), for reading many tensors without a copy each."""
        return self.interp.tensor(index)()

    def reader(self, index: int) -> Callable[[], np.ndarray]:
        """What ``view(index)`` returns, as a function made once per tensor and kept: each call
        gives the tensor's value after the latest ``invoke``, in the interpreter's memory (the
        same rule: copy it before the next ``invoke``). Holding the function, unlike holding
        its value, leaves the interpreter free to run."""
        read = self._readers.get(index)
        if read is None:
            read = self._readers[index] = self.interp.tensor(index)
        return read

    def compute_ops(self) -> list[OpInfo]:
        """Ops other than the QUANTIZE/DEQUANTIZE that connect float and integer regions (and
        the DELEGATE nodes a delegate adds, which stand for ops listed already)."""
        return [op for op in self.ops if op.op_type not in EDGE_OPS and op.op_type != DELEGATE]

    def model_ops(self) -> list[OpInfo]:
        """The model's own ops, without the DELEGATE nodes a delegate adds."""
        return [op for op in self.ops if op.op_type != DELEGATE]

    def float_islands(self) -> list[OpInfo]:
        """Compute ops whose outputs are float32 in an otherwise integer model."""
        if not self.quantized_activations():
            return []
        return [
            op
            for op in self.compute_ops()
            if any(self.tensors[t].dtype == np.float32 for t in op.outputs)
        ]

    def quantized_activations(self) -> bool:
        """Whether any op computes integer-quantized values (not only weights)."""
        return any(
            self.tensors[t].qp is not None for op in self.compute_ops() for t in op.outputs
        )

    def describe(self) -> str:
        """What the deployed model is, in one phrase (full INT8, int16x8, dynamic range...)."""
        outs = [self.tensors[t] for op in self.compute_ops() for t in op.outputs]
        kinds = {t.dtype.name for t in outs if t.qp is not None}
        if kinds:
            # Ops left in float (--keep-float, or ops the converter could not quantize) make
            # it integer with float islands, not full integer.
            islands = len(self.float_islands())
            if {"int8", "int16"} <= kinds:  # a per-op recipe (ai-edge-quantizer, fix --allow)
                n16 = sum(t.dtype.name == "int16" for t in outs if t.qp is not None)
                scheme = (f"mixed integer ({n16} op output(s) with 16-bit activations, "
                          f"{sum(t.dtype.name == 'int8' for t in outs if t.qp is not None)} "
                          "with int8; 8-bit weights)")
            elif "int16" in kinds:
                scheme = "int16x8 (16-bit activations, 8-bit weights)"
            elif islands:
                scheme = "integer (int8 activations and weights)"
            else:
                return "full integer (int8 activations and weights)"
            return f"{scheme} with {islands} op(s) left in float" if islands else scheme
        consts = [
            self.tensors[i]
            for op in self.ops
            for i in op.inputs
            if i >= 0 and i not in self.producer and i not in self.input_indices
        ]
        dequantized = {op.inputs[0] for op in self.ops if op.op_type == "DEQUANTIZE" and op.inputs}
        if any(t.dtype == np.int8 for t in consts) and all(
                t.index in dequantized for t in consts if t.dtype == np.int8):
            return ("weight-only int8 (int8 weights dequantized to float by DEQUANTIZE ops; "
                    "float activations and kernels): the error measured is the weights' alone")
        if any(t.dtype == np.int8 for t in consts):
            return (
                "dynamic range (int8 weights; float activations between ops, quantized to "
                "int8 on the fly inside the kernels with int8 weights): the error measured is "
                "the weights' and those kernels' own activation quantization"
            )
        if any(t.dtype == np.float16 for t in consts):
            return "float16 weights, float activations: the error measured is the weights' alone"
        return "float (not quantized)"

    def _partitions(self) -> list[tuple[OpInfo, set[int]]]:
        """Each DELEGATE node with the indices of the ops it took over: those on the paths
        from its inputs to its outputs (its partition of the graph)."""
        producer = {t: op for op in self.ops if op.op_type != DELEGATE for t in op.outputs}
        found: list[tuple[OpInfo, set[int]]] = []
        for node in self.ops:
            if node.op_type != DELEGATE:
                continue
            taken: set[int] = set()
            stop = set(node.inputs)
            stack = [t for t in node.outputs if t not in stop]
            while stack:
                op = producer.get(stack.pop())
                if op is None or op.index in taken:
                    continue
                taken.add(op.index)
                stack.extend(t for t in op.inputs if t >= 0 and t not in stop)
            found.append((node, taken))
        return found

    def delegated_ops(self) -> list[int]:
        """Indices of the ops a delegate took over."""
        return sorted({i for _, taken in self._partitions() for i in taken})

    def hidden_tensors(self) -> set[int]:
        """Tensors computed inside a delegate's partition that are not among its outputs: the
        delegate never writes them back, so their values cannot be observed (what reads there
        is stale memory, not the op's value)."""
        by_index = {op.index: op for op in self.ops}
        hidden: set[int] = set()
        for node, taken in self._partitions():
            shown = set(node.outputs)
            hidden |= {t for i in taken for t in by_index[i].outputs if t not in shown}
        return hidden

    def hidden_ops(self) -> list[OpInfo]:
        """Ops whose output values cannot be observed (``hidden_tensors``)."""
        hidden = self.hidden_tensors()
        return [op for op in self.ops
                if op.op_type != DELEGATE and any(t in hidden for t in op.outputs)]


def _interpreter(content: bytes, preserve: bool, xnnpack: bool) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (
        OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    # XNNPACK's delegate announces itself on stderr ("INFO: Created ... delegate for CPU.")
    with without_info_lines() if xnnpack else contextlib.nullcontext():
        interp = Interpreter(
            model_content=content,
            experimental_preserve_all_tensors=preserve,
            experimental_op_resolver_type=resolver,
            num_threads=1,
        )
        interp.allocate_tensors()
    return interp


def _unresolved_custom_op(exc: BaseException) -> str | None:
    """The custom op LiteRT had no kernel for (its "unresolved custom op: NAME")."""
    m = re.search(r"unresolved custom op: ([\w.\-/]+?)\.?(?:\s|$)", str(exc))
    return m.group(1) if m else None


def _load_error(exc: BaseException, custom: str | None) -> TfliteModelError:
    if custom is not None:
        return TfliteModelError(
            f"the .tflite model uses the custom op {custom!r}, which neither LiteRT's builtin "
            "kernels nor its XNNPACK delegate implement, so no interpreter here can run it",
            "give the model without that op (or with builtin ops in its place); custom ops "
            f"qdebug can run through XNNPACK: {', '.join(XNNPACK_CUSTOM_OPS)}",
        )
    return TfliteModelError(
        f"LiteRT cannot load the .tflite model: {str(exc).splitlines()[0][:200]}",
        "give a valid .tflite file with builtin ops only",
    )


def _names(lite: LiteModel, ops: list[OpInfo]) -> str:
    shown = [f"{op.op_type} #{op.index} ({lite.tensors[op.outputs[0]].name})"
             if op.outputs else f"{op.op_type} #{op.index}" for op in ops[:_NAMED]]
    more = f" and {len(ops) - _NAMED} more" if len(ops) > _NAMED else ""
    return ", ".join(shown) + more


def kernel_notes(int8: LiteModel, twin: LiteModel) -> list[str]:
    """What a trace must say when a custom op made a model run on XNNPACK: which kernels gave
    the values, and exactly which ops' values could not be observed (kept out of rankings)."""
    sides = [(side, lite) for side, lite in (("deployed", int8), ("float", twin))
             if lite.custom_ops]
    if not sides:
        return []
    ops = sorted({name for _, lite in sides for name in lite.custom_ops})
    who = (f"the {sides[0][0]} model has" if len(sides) == 1
           else "the deployed and the float model have")
    text = (
        f"{who} the custom op {', '.join(ops)}, which LiteRT's builtin kernels lack: it runs "
        "on the XNNPACK delegate, which implements it, and so does every op XNNPACK supports "
        "(their values are XNNPACK's kernels', not the reference kernels')"
    )
    hidden = [(side, lite, lite.hidden_ops()) for side, lite in sides]
    for side, lite, ops_hidden in hidden:
        if ops_hidden:
            text += (
                f"; in the {side} model the values of {len(ops_hidden)} op(s) computed inside "
                "XNNPACK's fused partitions could not be observed (a delegate writes back only "
                f"a partition's outputs) and are kept out of every ranking: "
                f"{_names(lite, ops_hidden)}"
            )
    if not any(ops_hidden for _, _, ops_hidden in hidden):
        text += "; every op's output could be observed"
    return [text]


def kernels_text(int8: LiteModel, deploy: LiteModel | None) -> str:
    """The trace's ``kernels`` attribute: which kernels gave the values."""
    if int8.custom_ops:
        return (
            f"xnnpack for every op it supports: the custom op {', '.join(int8.custom_ops)} has "
            "no builtin kernel; the builtin reference kernels run the rest"
        )
    if deploy is not None:
        return ("xnnpack (deployment) outputs compared with the builtin reference kernels, "
                "which give every op's values")
    return "builtin (deterministic)"
