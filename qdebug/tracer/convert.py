"""Conversion of a Keras model to full-INT8 TFLite and to its float twin, with converter
failures translated into the Keras layer and the fix."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qdebug.errors import ConversionError
from qdebug.tracer.convert_errors import layer_names_in as layer_names_in
from qdebug.tracer.convert_errors import translate
from qdebug.tracer.tfenv import captured_output, import_tf

#: Fewer calibration samples than this is too few for stable ranges (the tracer warns; ``qdebug
#: check`` calls it an error).
MIN_CALIB_SAMPLES = 100


@dataclass(frozen=True)
class ConversionOptions:
    """The converter settings, recorded in the trace."""

    calib_samples: int = 200
    """Samples of the calibration data given to the representative dataset."""
    int8_io: bool = False
    """Whether the model's inputs and outputs are int8 too (else float with QUANTIZE/DEQUANTIZE
    at the edges)."""
    optimizations: str = "DEFAULT"
    supported_ops: str = "TFLITE_BUILTINS_INT8"
    keep_float: tuple[str, ...] = ()
    """Keras layers left in float (selective quantization: DEQUANTIZE/QUANTIZE around them)."""
    scheme: str = "int8"
    """``int8``, or ``int16x8`` (16-bit activations, 8-bit weights)."""
    denylisted: list[str] = field(default_factory=list)
    """Filled by the conversion: the op names left in float for ``keep_float``."""
    keras_export: list[str] = field(default_factory=list)
    """Filled by the conversion: how the model reached the converter (``frozen graph`` or
    ``saved model``; empty for a SavedModel folder)."""

    def as_dict(self) -> dict[str, Any]:
        """The options as plain values."""
        out = asdict(self)
        out["keep_float"] = list(self.keep_float)
        out["keep_float_ops"] = out.pop("denylisted")
        out["keras_export"] = self.keras_export[0] if self.keras_export else ""
        if self.scheme == "int16x8":
            out["supported_ops"] = INT16X8_OPS
        return out


#: The converter's op set for 16-bit activations and 8-bit weights.
INT16X8_OPS = "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8"
SCHEMES = ("int8", "int16x8")


def _converter(model: Any) -> Any:
    """The converter for a Keras model, or for a SavedModel folder given as a ``Path``."""
    tf = import_tf()
    if isinstance(model, Path):
        return tf.lite.TFLiteConverter.from_saved_model(str(model))
    return tf.lite.TFLiteConverter.from_keras_model(model)


#: How the Keras model reached the converter (recorded as ``converter.keras_export``).
EXPORT_FROZEN = "frozen graph"
EXPORT_SAVED_MODEL = "saved model"


def _frozen_converter(model: Any) -> Any | None:
    """A converter over the Keras model's inference function as a frozen graph, or None when
    the model is not a Keras graph model.

    ``from_keras_model`` first writes the model out as a SavedModel and reads it back, which
    is most of a conversion's time (5 of 8 s for MobileNetV2). Handing the converter the same
    inference function (``training=False``, the model's own input signature, one list
    argument for several inputs, as ``from_keras_model`` traces it) without the SavedModel
    gives the same ops, quantization and weights (bench/converter_paths.py over the corpus: 28
    of 31 models identical op for op, the other three the same ops in another order); the graph
    inputs' and outputs' tensor names differ (``image`` for ``serving_default_image:0``).
    """
    tf = import_tf()
    inputs = list(getattr(model, "inputs", None) or [])
    if not inputs or isinstance(model, Path) or not callable(model) or has_recurrent(model):
        return None
    try:
        specs = [tf.TensorSpec(t.shape, dtype=t.dtype, name=input_name(t)) for t in inputs]
        signature = specs if len(specs) == 1 else [specs]
        fn = tf.function(lambda x: model(x, training=False), input_signature=signature)
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    except Exception:  # an unusual model: the converter's own route handles it
        return None
    conv.experimental_lower_to_saved_model = False
    return conv


def input_name(tensor: Any) -> str:
    """A model input's name as qdebug asks for it in the data: its input layer's
    (``input_layer_1``), not the tensor's (Keras 3 names an unnamed input's tensor
    ``keras_tensor_1``, and only a model loaded from a file has the two agree)."""
    hist = getattr(tensor, "_keras_history", None)
    layer = hist[0] if hist is not None else None
    name = getattr(layer, "name", None) or str(getattr(tensor, "name", "input"))
    return str(name).split(":")[0]


def has_recurrent(model: Any) -> bool:
    """Whether the Keras model holds a recurrent layer (LSTM, GRU, any RNN, Bidirectional),
    nested models included. The converter fuses those (UNIDIRECTIONAL_SEQUENCE_LSTM) from the
    function annotations of the SavedModel route; on the frozen graph of a fixed-batch tf_keras
    LSTM it crashed the process (a segmentation fault in TensorFlow 2.21), so such models
    always take the SavedModel route."""
    seen: set[int] = set()
    stack = [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        names = {c.__name__ for c in type(layer).__mro__}
        if "RNN" in names or "Bidirectional" in names:
            return True
        stack.extend(getattr(layer, "layers", None) or [])
        for attr in ("layer", "forward_layer", "backward_layer"):  # wrappers
            inner = getattr(layer, attr, None)
            if inner is not None and inner is not layer:
                stack.append(inner)
    return False


def _convert_keras(
    model: Any, configure: Callable[[Any], None], layer_names: list[str]
) -> tuple[bytes, str]:
    """Convert ``model`` with the converter settings ``configure`` applies: by the frozen
    graph when that works, else (and for SavedModel folders) by the converter's usual route,
    whose errors are the ones reported. Returns the flatbuffer and the route taken."""
    fast = None if isinstance(model, Path) else _frozen_converter(model)
    if fast is not None:
        configure(fast)
        try:
            with captured_output():
                return bytes(fast.convert()), EXPORT_FROZEN
        except Exception:
            pass  # the usual route below reports the real error
    with _inputs_named_as_layers(model):
        conv = _converter(model)
        configure(conv)
        return _run(conv, layer_names), EXPORT_SAVED_MODEL


@contextlib.contextmanager
def _inputs_named_as_layers(model: Any) -> Iterator[None]:
    """While converting, a Keras 3 model's input tensors carry their input layers' names.

    The converter names a Keras 3 model's signature inputs after its input tensors: for an
    unnamed ``keras.Input`` built in Python that is ``keras_tensor_1``, while qdebug (and the
    same model loaded from a ``.keras`` file) calls it ``input_layer_1``; the calibration data,
    keyed by the names qdebug asks for, then missed it."""
    renamed: list[tuple[Any, str]] = []
    if not isinstance(model, Path):
        for t in list(getattr(model, "inputs", None) or []):
            name, wanted = getattr(t, "name", None), input_name(t)
            if isinstance(name, str) and ":" not in name and name != wanted:
                try:
                    t.name = wanted
                except AttributeError:  # tf_keras: tensor names are fixed, and already right
                    continue
                renamed.append((t, name))
    try:
        yield
    finally:
        for t, name in renamed:
            t.name = name


def convert_int8(
    model: Any,
    representative: Callable[[], Iterable[list[np.ndarray]]],
    options: ConversionOptions,
    layer_names: list[str],
) -> bytes:
    """Full-integer post-training quantization of ``model``."""
    tf = import_tf()

    def configure(conv: Any) -> None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [_op_set(options.scheme)]
        if options.int8_io:
            io = tf.int16 if options.scheme == "int16x8" else tf.int8
            conv.inference_input_type = io
            conv.inference_output_type = io

    content, route = _convert_keras(model, configure, layer_names)
    _note_route(options, model, route)
    return content


def _note_route(options: ConversionOptions, model: Any, route: str) -> None:
    if not isinstance(model, Path):
        options.keras_export[:] = [route]


def _op_set(scheme: str) -> Any:
    tf = import_tf()
    if scheme == "int16x8":
        return tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    if scheme != "int8":
        raise ConversionError(f"unknown scheme {scheme!r}", f"give one of {', '.join(SCHEMES)}")
    return tf.lite.OpsSet.TFLITE_BUILTINS_INT8


def keep_float_nodes(
    calibrated: bytes, keep_float: Iterable[str], layer_names: list[str]
) -> list[str]:
    """The op names (their output tensors' names in the calibrated model) of the Keras layers
    to keep in float, as ``mlir_quantize``'s ``denylisted_nodes`` wants them.

    A layer owns every op whose fused name carries its scope, so a layer fused into its
    neighbour (Conv+BN+ReLU) keeps the whole fused op in float.
    """
    from qdebug.tracer.litert import LiteModel

    lite = LiteModel(calibrated, preserve=False)
    op_names = [lite.tensors[op.outputs[0]].name for op in lite.compute_ops() if op.outputs]
    known = {n.rpartition("/")[2]: n for n in layer_names}
    nodes: list[str] = []
    for layer in keep_float:
        if layer not in known and layer not in layer_names:
            close = difflib.get_close_matches(layer, list(known), n=3)
            raise ConversionError(
                f"--keep-float: the model has no layer named {layer!r}",
                f"did you mean {', '.join(close)}" if close else "give Keras layer names",
            )
        mine = [n for n in op_names if layer_names_in(n, [known.get(layer, layer)])]
        if not mine:
            raise ConversionError(
                f"--keep-float: layer {layer!r} has no TFLite op of its own (it is folded into "
                "a neighbour, or has no computation)",
                "keep the layer it is fused into in float instead (see the fused layers in "
                "qdebug view)",
            )
        nodes.extend(n for n in mine if n not in nodes)
    return nodes


def convert_int8_and_twin(
    model: Any,
    representative: Callable[[], Iterable[list[np.ndarray]]],
    options: ConversionOptions,
    layer_names: list[str],
    keep_float_ops: Callable[[bytes], list[str]] | None = None,
) -> tuple[bytes, bytes]:
    """The INT8 model and its float twin from one conversion.

    ``keep_float_ops`` gives, from the calibrated model, the op names of the layers in
    ``options.keep_float`` (default: by the layers' name scopes).

    The converter's calibrate-only mode returns the float model it calibrated (the same ops and
    tensor names as a plain float conversion) and ``mlir_quantize`` turns it into the INT8 model
    exactly as ``convert()`` would. That halves the time, since most of a conversion is the
    Keras export. Both are private TensorFlow APIs: when they are missing, two ordinary
    conversions are made instead.
    """
    tf = import_tf()
    try:
        from tensorflow.lite.python.convert import mlir_quantize
    except ImportError:  # pragma: no cover - depends on the TensorFlow version
        mlir_quantize = None
    if options.keep_float and options.scheme != "int8":
        raise ConversionError(
            "--keep-float works with --scheme int8 only",
            "trace the int16x8 scheme without --keep-float",
        )
    if options.scheme != "int8":
        # 16-bit activations go through the converter's older quantizer (mlir_quantize is
        # int8-only in it), so the twin is a plain float conversion.
        return (
            convert_int8(model, representative, options, layer_names),
            convert_float(model, layer_names),
        )
    if mlir_quantize is None or not _has_calibrate_only():
        if options.keep_float:
            raise ConversionError(
                "--keep-float needs tensorflow.lite.python.convert.mlir_quantize, which this "
                "TensorFlow lacks",
                "use TensorFlow 2.16 or newer",
            )
        return (
            convert_int8(model, representative, options, layer_names),
            convert_float(model, layer_names),
        )

    def configure(conv: Any) -> None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv._experimental_calibrate_only = True

    calibrated, route = _convert_keras(model, configure, layer_names)
    _note_route(options, model, route)
    if is_quantized(calibrated):
        # A QAT model: the converter quantizes it from its fake-quant ranges even in
        # calibrate-only mode. The float twin is then a plain conversion, which keeps the fake
        # quantization as QUANTIZE/DEQUANTIZE pairs (matching maps them).
        if options.keep_float:
            raise ConversionError(
                "--keep-float cannot be applied to a quantization-aware-trained model",
                "annotate only the layers to quantize with tfmot's quantize_annotate_layer",
            )
        return (
            convert_int8(model, representative, options, layer_names),
            convert_float(model, layer_names),
        )
    io_type = tf.int8 if options.int8_io else tf.float32
    denylisted = None
    if options.keep_float:
        denylisted = (
            keep_float_ops(calibrated)
            if keep_float_ops is not None
            else keep_float_nodes(calibrated, options.keep_float, layer_names)
        )
    options.denylisted.clear()
    options.denylisted.extend(denylisted or [])
    log: list[str] = []
    try:
        with captured_output() as log:
            int8 = mlir_quantize(
                calibrated,
                disable_per_channel=False,
                input_data_type=io_type,
                output_data_type=io_type,
                denylisted_nodes=denylisted,
            )
    except Exception as exc:
        raise translate(exc, layer_names, "".join(log)) from exc
    return bytes(int8), calibrated


def _has_calibrate_only() -> bool:
    """Whether this TensorFlow's converter has the (private) calibrate-only mode."""
    try:
        from tensorflow.lite.python import lite

        return hasattr(lite.TFLiteConverterBase(), "_experimental_calibrate_only")
    except Exception:  # pragma: no cover - depends on the TensorFlow version
        return False


def is_quantized(content: bytes) -> bool:
    """Whether a ``.tflite`` model's compute ops already produce integer tensors."""
    from qdebug.tracer.litert import LiteModel

    lite = LiteModel(content, preserve=False)
    return any(
        lite.tensors[t].qp is not None for op in lite.compute_ops() for t in op.outputs
    )


def convert_float(model: Any, layer_names: list[str]) -> bytes:
    """The float twin: same converter, no optimizations, so the same ops and tensor names."""
    return _convert_keras(model, lambda conv: None, layer_names)[0]


def _run(conv: Any, layer_names: list[str]) -> bytes:
    log: list[str] = []
    try:
        with captured_output() as log:
            result = conv.convert()
    except Exception as exc:
        raise translate(exc, layer_names, "".join(log)) from exc
    return bytes(result)
