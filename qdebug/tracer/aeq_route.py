"""The ai-edge-quantizer route of ``qdebug trace``: a float ``.tflite`` given alone, or a Keras
model with ``--quantizer aeq``, quantized with ``--recipe`` and calibrated on ``--calib``."""

from __future__ import annotations

from qdebug.progress import Phases
from qdebug.tracer import convert as conv
from qdebug.tracer.aeq import quantize_with_aeq
from qdebug.tracer.litert import LiteModel
from qdebug.tracer.options import TraceOptions
from qdebug.tracer.phase_records import Converted, Prepared
from qdebug.tracer.sides import lite_input_order


def aeq_converted(prep: Prepared, opt: TraceOptions, phases: Phases,
                  options: conv.ConversionOptions) -> Converted:
    """The deployed model AEQ makes of the float one (a Keras model is first converted to a
    float ``.tflite`` by the TFLite converter) and the float model it was made from."""
    floats = prep.float_bytes
    if floats is None:
        with phases.step("convert to float"):
            floats = conv.convert_float(prep.conv_model, prep.layer_names)
    order = lite_input_order(LiteModel(floats, preserve=False), prep.input_names)
    with phases.step("quantize with ai-edge-quantizer"):
        result = quantize_with_aeq(floats, opt.recipe,
                                   ([s[p] for p in order] for s in prep.calib),
                                   calib_samples=opt.calib_samples)
    return Converted(result.tflite, result.float_tflite, options, aeq=result)
