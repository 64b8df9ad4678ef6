"""Conversion of a Keras model to full-INT8 TFLite and to its float twin, with converter
failures translated into the Keras layer and the fix."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdebug.errors import ConversionError
from qdebug.tracer import calibration
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

    def as_dict(self, keep_float_ops: Iterable[str] = (), keras_export: str = "",
                calibration: str = "") -> dict[str, Any]:
        """The options as plain values, with what the conversion made of them (``Conversion``:
        the ops kept in float, the Keras export route, the calibration's route): the trace's
        ``converter`` attribute."""
        out = asdict(self)
        out["keep_float"] = list(self.keep_float)
        out["keras_export"] = keras_export
        out["calibration"] = calibration
        out["keep_float_ops"] = list(keep_float_ops)
        if self.scheme == "int16x8":
            out["supported_ops"] = INT16X8_OPS
        return out


@dataclass(frozen=True)
class Conversion:
    """What one conversion made: the deployed model, its float twin, and how."""

    int8: bytes
    twin: bytes
    keep_float_ops: tuple[str, ...] = ()
    """The op names left in float for ``ConversionOptions.keep_float`` (the quantizer's deny
    list)."""
    keras_export: str = ""
    """How the Keras model reached the converter (``frozen graph`` or ``saved model``); empty
    for a SavedModel folder."""
    calibration: str = ""
    """How the calibration was made (``qdebug.tracer.calibration.last_route``: ``two threads``,
    or ``the calibrator (why)``); empty where the converter calibrated by its older route."""


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
    if not inputs or isinstance(model, Path) or not callable(model) or has_rolled_rnn(model):
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


def has_rolled_rnn(model: Any) -> bool:
    """Whether the Keras model holds a recurrent layer (LSTM, GRU, any RNN, also inside a
    Bidirectional wrapper or a nested model) that is not unrolled. The converter fuses those
    (UNIDIRECTIONAL_SEQUENCE_LSTM) from the function annotations of the SavedModel route; on
    the frozen graph of a fixed-batch tf_keras LSTM it crashed the process (a segmentation
    fault in TensorFlow 2.21), so such models always take the SavedModel route. An unrolled
    layer (``unroll=True``) is plain ops on both routes, and its SavedModel export is most of
    the conversion (the tf_keras export traces every step of every layer again)."""
    seen: set[int] = set()
    stack = [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        names = {c.__name__ for c in type(layer).__mro__}
        if "RNN" in names and not getattr(layer, "unroll", False):
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
        _samples_as_lists(fast, [input_name(t) for t in model.inputs])
        try:
            with captured_output():
                return bytes(fast.convert()), EXPORT_FROZEN
        except Exception:
            pass  # the usual route below reports the real error
    with _inputs_named_as_layers(model):
        conv = _converter(model)
        configure(conv)
        return _run(conv, layer_names), EXPORT_SAVED_MODEL


def _samples_as_lists(conv: Any, names: list[str]) -> None:
    """Calibration samples keyed by input name, given to a frozen-graph converter as lists in
    its inputs' order: a model without signatures takes no dicts (its calibrator failed on the
    first sample of every multi-input model, which was then converted again the slow way)."""
    given = conv.representative_dataset
    if given is None or len(names) < 2:
        return

    def in_order() -> Iterator[Any]:
        for sample in given():
            if isinstance(sample, dict) and set(sample) == set(names):
                yield [sample[n] for n in names]
            else:
                yield sample

    conv.representative_dataset = in_order


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
) -> tuple[bytes, str]:
    """Full-integer post-training quantization of ``model``: the flatbuffer and the Keras
    export route (``Conversion.keras_export``)."""
    tf = import_tf()

    def configure(conv: Any) -> None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [_op_set(options.scheme)]
        if options.int8_io:
            io = tf.int16 if options.scheme == "int16x8" else tf.int8
            conv.inference_input_type = io
            conv.inference_output_type = io

    with calibration.faster_calibration():
        content, route = _convert_keras(model, configure, layer_names)
    return content, _route(model, route)


def _route(model: Any, route: str) -> str:
    """The route recorded for ``model``: none for a SavedModel folder."""
    return "" if isinstance(model, Path) else route


def _op_set(scheme: str) -> Any:
    tf = import_tf()
    if scheme == "int16x8":
        return tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    if scheme != "int8":
        raise ConversionError(f"unknown scheme {scheme!r}", f"give one of {', '.join(SCHEMES)}")
    return tf.lite.OpsSet.TFLITE_BUILTINS_INT8


def convert_int8_and_twin(
    model: Any,
    representative: Callable[[], Iterable[list[np.ndarray]]],
    options: ConversionOptions,
    layer_names: list[str],
    keep_float_ops: Callable[[bytes], list[str]] | None = None,
) -> Conversion:
    """The INT8 model and its float twin from one conversion.

    ``keep_float_ops`` gives, from the calibrated model, the op names of the layers in
    ``options.keep_float`` (``qdebug.tracer.keep_float.layer_op_names``); it is needed when
    ``options.keep_float`` names any.

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
    if options.keep_float and keep_float_ops is None:
        raise ValueError("keep_float needs keep_float_ops, the resolver of the layers' ops")

    def two_conversions() -> Conversion:
        calibration.last_route = ""
        int8, route = convert_int8(model, representative, options, layer_names)
        # int16x8 goes through the older quantizer, which calibrates again by itself.
        made_by = calibration.last_route if options.scheme == "int8" else ""
        return Conversion(int8, convert_float(model, layer_names), keras_export=route,
                          calibration=made_by)

    if options.scheme != "int8":
        # 16-bit activations go through the converter's older quantizer (mlir_quantize is
        # int8-only in it), so the twin is a plain float conversion.
        return two_conversions()
    if mlir_quantize is None or not _has_calibrate_only():
        if options.keep_float:
            raise ConversionError(
                "--keep-float needs tensorflow.lite.python.convert.mlir_quantize, which this "
                "TensorFlow lacks",
                "use TensorFlow 2.16 or newer",
            )
        return two_conversions()

    def configure(conv: Any) -> None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv._experimental_calibrate_only = True

    calibration.last_route = ""
    with calibration.faster_calibration():
        calibrated, route = _convert_keras(model, configure, layer_names)
    if is_quantized(calibrated):
        # A QAT model: the converter quantizes it from its fake-quant ranges even in
        # calibrate-only mode. The float twin is then a plain conversion, which keeps the fake
        # quantization as QUANTIZE/DEQUANTIZE pairs (matching maps them).
        if options.keep_float:
            raise ConversionError(
                "--keep-float cannot be applied to a quantization-aware-trained model",
                "annotate only the layers to quantize with tfmot's quantize_annotate_layer",
            )
        return two_conversions()
    io_type = tf.int8 if options.int8_io else tf.float32
    denylisted = (keep_float_ops(calibrated) if options.keep_float and keep_float_ops is not None
                  else None)
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
    return Conversion(bytes(int8), calibrated, tuple(denylisted or ()), _route(model, route),
                      calibration.last_route)


def _has_calibrate_only() -> bool:
    """Whether this TensorFlow's converter has the (private) calibrate-only mode."""
    try:
        from tensorflow.lite.python import lite

        return hasattr(lite.TFLiteConverterBase(), "_experimental_calibrate_only")
    except Exception:  # pragma: no cover - depends on the TensorFlow version
        return False


@functools.lru_cache(maxsize=2)
def is_quantized(content: bytes) -> bool:
    """Whether a ``.tflite`` model's compute ops already produce integer tensors (asked of the
    same float twin three times a trace: an interpreter of a 1,300-op model takes 0.3 s)."""
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
