"""A small ``.tflite`` pair with MediaPipe's ``Convolution2DTransposeBias`` custom op (as in
MediaPipe's selfie segmentation), built here: a Keras model with a Conv2DTranspose converted by
LiteRT, its TRANSPOSE_CONV rewritten in the flatbuffer into the custom op (inputs: input,
weights, bias; custom options: the raw ``TfLiteTransposeConvParams`` struct), which the builtin
kernels lack and XNNPACK implements."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

CUSTOM = "Convolution2DTransposeBias"
_PADDING = {"same": 1, "valid": 2}  # TfLitePadding


def _model() -> Any:
    import tensorflow as tf

    K = tf.keras
    K.utils.set_random_seed(0)
    inp = K.Input((8, 8, 3), batch_size=1, name="image")
    x = K.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    x = K.layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="up",
                                 bias_initializer="random_normal")(x)
    x = K.layers.Conv2D(2, 1, activation="sigmoid", name="head")(x)
    return K.Model(inp, x, name="deconv")


def to_custom(content: bytes) -> bytes:
    """``content`` with its TRANSPOSE_CONV ops as ``Convolution2DTransposeBias``."""
    from tensorflow.lite.python import schema_py_generated as fb
    from tensorflow.lite.tools import flatbuffer_utils as fu

    model = fu.read_model_from_bytearray(bytearray(content))
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.CUSTOM
    code.customCode, code.version = CUSTOM, 1
    model.operatorCodes.append(code)
    custom = len(model.operatorCodes) - 1
    sg = model.subgraphs[0]
    changed = 0
    for op in sg.operators:
        oc = model.operatorCodes[op.opcodeIndex]
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) != fb.BuiltinOperator.TRANSPOSE_CONV:
            continue
        params = op.builtinOptions
        ins = [int(i) for i in op.inputs]
        weights, data = ins[1], ins[2]
        if len(ins) > 3 and ins[3] >= 0:
            bias = ins[3]
        else:  # a zero bias tensor of the output channels
            n = int(sg.tensors[weights].shape[0])
            buf = fb.BufferT()
            buf.data = np.zeros(n, np.float32).tobytes()
            model.buffers.append(buf)
            t = fb.TensorT()
            t.shape, t.type, t.buffer, t.name = [n], fb.TensorType.FLOAT32, len(
                model.buffers) - 1, b"deconv_bias"
            sg.tensors.append(t)
            bias = len(sg.tensors) - 1
        op.opcodeIndex = custom
        op.inputs = [data, weights, bias]
        op.builtinOptionsType, op.builtinOptions = 0, None
        op.customOptions = list(struct.pack("<iii", params.padding + 1, params.strideW,
                                            params.strideH))
        changed += 1
    assert changed, "no TRANSPOSE_CONV to rewrite"
    return bytes(fu.convert_object_to_bytearray(model))


def write_pair(folder: Path, n: int = 8) -> tuple[Path, Path, Path]:
    """(float .tflite, float16-weights .tflite, data .npy), both models with the custom op."""
    import tensorflow as tf

    model = _model()
    plain = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    half = conv.convert()
    paths = folder / "deconv_float.tflite", folder / "deconv_fp16.tflite", folder / "x.npy"
    paths[0].write_bytes(to_custom(plain))
    paths[1].write_bytes(to_custom(half))
    np.save(paths[2], np.random.default_rng(0).random((n, 8, 8, 3), dtype=np.float32))
    return paths
