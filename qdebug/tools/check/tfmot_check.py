"""Whether tfmot's quantization-aware training accepts the model (tfmot is imported through
``qdebug.tracer.tfenv.import_tfmot``, which undoes its ``TF_USE_LEGACY_KERAS=1``)."""

from __future__ import annotations

import re
from typing import Any

from qdebug.tools.check.findings import INFO, WARNING, Finding
from qdebug.tracer.tfenv import import_tfmot


def check_tfmot(model: Any, flavour: str, layer_names: list[str]) -> list[Finding]:
    """Try ``quantize_model`` on a tf_keras model; explain tf_keras for a Keras 3 model."""
    if flavour != "tf_keras":
        return [
            Finding(
                INFO, "tfmot", "",
                "this is a Keras 3 model: tfmot's quantization-aware training "
                "(quantize_model) accepts only tf_keras models",
                "for QAT, build the model with tf_keras (import tf_keras as keras) and load "
                "the weights; post-training INT8 (qdebug trace) works as it is",
            )
        ]
    try:
        tfmot = import_tfmot()
    except ImportError:
        return [Finding(INFO, "tfmot", "", "tensorflow-model-optimization is not installed",
                        "pip install tensorflow-model-optimization")]
    try:
        tfmot.quantization.keras.quantize_model(model)
    except Exception as exc:
        text = " ".join(str(exc).split())
        layer = _layer_in(text, layer_names)
        custom = "custom" in text.lower() or "not supported" in text.lower() or "Layer" in text
        fix = (
            "annotate the layer with tfmot.quantization.keras.quantize_annotate_layer(layer, "
            "quantize_config=MyQuantizeConfig()) and quantize_apply inside "
            "tfmot.quantization.keras.quantize_scope({'MyLayer': MyLayer, 'MyQuantizeConfig': "
            "MyQuantizeConfig}); or annotate only the other layers to leave it unquantized"
            if custom
            else "see tfmot's comprehensive guide (quantize_annotate_layer, QuantizeConfig)"
        )
        return [
            Finding(
                WARNING, "tfmot", layer,
                f"tfmot quantize_model refuses the model: {text[:240]}",
                fix,
            )
        ]
    return []


def _layer_in(text: str, layer_names: list[str]) -> str:
    for name in sorted(layer_names, key=len, reverse=True):
        short = name.rpartition("/")[2]
        if re.search(rf"(?<![\w]){re.escape(short)}(?![\w])", text):
            return name
    return ""
