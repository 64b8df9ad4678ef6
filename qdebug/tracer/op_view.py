"""What the op view needs: a model without a Keras layer graph (a subclassed model, a plain
SavedModel, a Keras 3 ``model.export()`` folder, a float ``.tflite``) described by its float
conversion: inputs from its input tensors, outputs from its output tensors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from qdebug.errors import ModelLoadError
from qdebug.store.schema import LayerRecord, OutputRecord
from qdebug.tracer.data import InputSpec
from qdebug.tracer.litert import LiteModel


def _clean(name: str) -> str:
    """``serving_default_image:0`` → ``image``."""
    name = re.sub(r":\d+$", "", name)
    return name.removeprefix("serving_default_") or name


def signature_names(lite: LiteModel) -> tuple[dict[int, str], dict[int, str]]:
    """Tensor index → name of the inputs and of the outputs in the model's only signature
    (a SavedModel's ``serving_default``: the names its author gave, such as ``logits``, where
    the tensor is called ``StatefulPartitionedCall:0``); empty without exactly one."""
    try:
        signatures = lite.interp._get_full_signature_list()
    except (AttributeError, ValueError, RuntimeError):
        return {}, {}
    if not isinstance(signatures, dict) or len(signatures) != 1:
        return {}, {}
    sig = next(iter(signatures.values()))

    def invert(side: str) -> dict[int, str]:
        named = sig.get(side) if isinstance(sig, dict) else None
        if not isinstance(named, dict):
            return {}
        return {int(i): str(n) for n, i in named.items()}

    return invert("inputs"), invert("outputs")


def lite_input_specs(lite: LiteModel) -> list[InputSpec]:
    """The model's inputs as the float ``.tflite`` declares them, named as its signature
    names them where it has one."""
    named, _ = signature_names(lite)
    specs = []
    for d in lite.input_details:
        sig = d.get("shape_signature")
        shape = [int(x) for x in (sig if sig is not None and len(sig) else d["shape"])]
        dims = tuple(None if x < 0 else x for x in shape[1:])
        name = named.get(int(d["index"])) or _clean(str(d["name"]))
        specs.append(InputSpec(name, dims, np.dtype(d["dtype"]).name))
    return specs


#: Float ops whose output is class scores (docs/metrics.md, ``top1_agreement``).
CLASS_SCORE_OPS = ("SOFTMAX", "LOG_SOFTMAX")


def class_scores(
    shape: list[int | None] | tuple[int, ...], op_type: str, values: np.ndarray | None = None,
    labelled: bool = False,
) -> bool:
    """Whether a model output holds class scores, so that its arg-max is an answer and top-1
    agreement means something: rank 2 with more than one class, and computed by a softmax
    (``CLASS_SCORE_OPS`` in the float model), or holding probability vectors on the first
    samples (no value outside [0, 1], each sample's summing to 1 within 1e-3), or labelled
    (``--labels``: the user says it classifies, logits included). An embedding, a regression
    or a box is none of these."""
    if len(shape) != 2 or not (shape[-1] or 0) > 1:
        return False
    if labelled or op_type in CLASS_SCORE_OPS:
        return True
    if values is None or not values.size:
        return False
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    return bool(v.min() >= 0 and v.max() <= 1 and np.all(np.abs(v.sum(axis=1) - 1) <= 1e-3))


def _float_op(twin: LiteModel, pos: int) -> str:
    """The type of the float op computing output ``pos`` ("" when unknown)."""
    if pos >= len(twin.output_indices):
        return ""
    op = twin.producer.get(twin.output_indices[pos])
    return op.op_type if op is not None else ""


def op_outputs(
    records: list[LayerRecord], int8: LiteModel, twin: LiteModel, labelled: bool = False
) -> tuple[list[OutputRecord], list[int]]:
    """One output record per model output (same order in both models), each naming the row
    whose op computes it."""
    by_tensor = {r.tensor_index: r.name for r in records}
    _, named = signature_names(twin)
    outs: list[OutputRecord] = []
    for pos, index in enumerate(int8.output_indices):
        source = index
        op = int8.producer.get(index)
        if int8.tensors[index].qp is None and op is not None and op.op_type == "DEQUANTIZE":
            source = op.inputs[0]
        qp = int8.tensors[source].qp
        shape = int8.tensors[index].shape
        name = (
            named.get(twin.output_indices[pos])
            or _clean(twin.tensors[twin.output_indices[pos]].name)
            if pos < len(twin.output_indices)
            else f"output_{pos}"
        )
        outs.append(
            OutputRecord(
                name=name,
                layer=by_tensor.get(source, name),
                tensor_name=int8.tensors[index].name,
                scale=qp.scale if qp else float("nan"),
                zero_point=qp.zero_point if qp else 0,
                classifier=class_scores(list(shape), _float_op(twin, pos), None, labelled),
            )
        )
    return outs, list(range(len(outs)))


def _peek_shape(data_spec: Any) -> tuple[int, ...] | None:
    """The per-sample shape of a ``.npy``/``.npz`` data file (without reading it) or of an
    array given to the Python API."""
    if isinstance(data_spec, np.ndarray):
        return tuple(data_spec.shape[1:]) if data_spec.ndim > 1 else None
    if not isinstance(data_spec, str | Path):
        return None
    path = Path(str(data_spec))
    try:
        if path.suffix == ".npy" and path.is_file():
            return tuple(np.load(path, mmap_mode="r").shape[1:])
        if path.suffix == ".npz" and path.is_file():
            with np.load(path) as z:
                keys = list(z.keys())
                if len(keys) == 1:
                    return tuple(z[keys[0]].shape[1:])
    except (OSError, ValueError):
        return None
    return None


def _first_sample_shape(data_spec: Any, rank: int) -> tuple[int, ...] | None:
    """The shape of the first sample a data function (or an iterable from Python) gives, for
    an input of ``rank`` dimensions of any size; None where it gives none or fails (the real
    load then says why)."""
    from qdebug.errors import QdebugError
    from qdebug.tracer.data import load_data

    if isinstance(data_spec, str | Path) and Path(str(data_spec)).is_dir():
        return None  # images are resized to the model's size: they have none of their own
    try:
        source = load_data(data_spec, [InputSpec("input", (None,) * rank)], limit=1)
        first = next(iter(source), None)
    except (QdebugError, ValueError, TypeError):
        return None
    if not first:
        return None
    shape = tuple(int(d) for d in np.shape(first[0]))
    return shape if len(shape) == rank else None


def _built_shape(model: Any) -> tuple[int, ...] | None:
    shapes = getattr(model, "_build_shapes_dict", None)  # Keras 3
    if isinstance(shapes, dict) and len(shapes) == 1:
        shape = next(iter(shapes.values()))
        if shape is not None:
            return tuple(shape)[1:]
    shape = getattr(model, "_build_input_shape", None)  # tf_keras
    if shape is not None and not isinstance(shape, dict | list):
        dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
        return tuple(dims)[1:]
    return None


def wrap_subclassed(model: Any, data_spec: Any) -> Any:
    """A subclassed model called on a ``keras.Input`` of the data's shape: a functional model
    the converter accepts (its layers stay Python code, so the trace shows its ops).

    The data's shape comes first: a model that takes any image size is traced at the size of
    the data, not the one it was first built on; the built shape is used where the data's
    shape is unknown (a folder of images) or the model refuses it."""
    built = _built_shape(model)
    peeked = _peek_shape(data_spec)
    if peeked is None and built is not None and data_spec is not None:
        peeked = _first_sample_shape(data_spec, len(built))
    shapes = [s for s in (peeked, built) if s is not None]
    if not shapes:
        raise ModelLoadError(
            f"model {model.name!r} is subclassed and has no input shape",
            "call model.build(input_shape) in its factory, or give the data as .npy/.npz",
        )
    if peeked is not None and built is not None and (
        len(peeked) != len(built) or peeked == built
    ):
        shapes = [built]  # another rank: the data is wrong, which its check will say
    for shape in shapes[:-1]:
        try:
            return _wrap(model, shape)
        except Exception:  # the model refuses this size: the one it was built on
            continue
    return _wrap(model, shapes[-1])


def _wrap(model: Any, shape: tuple[int, ...]) -> Any:
    import keras

    name = _call_argument(model)
    if isinstance(model, keras.Model):
        inp = keras.Input(shape=shape, name=name)
        return keras.Model(inp, model(inp), name=model.name)
    import tf_keras

    inp = tf_keras.Input(shape=shape, name=name)
    return tf_keras.Model(inp, model(inp), name=model.name)


def _call_argument(model: Any) -> str:
    """The name of the first argument of the model's ``call`` (``x``, ``inputs``): what its
    author calls the input (else ``input``), not Keras's ``keras_tensor_2``."""
    import inspect

    try:
        params = list(inspect.signature(model.call).parameters.values())
    except (TypeError, ValueError, AttributeError):
        return "input"
    first = next((p.name for p in params if p.kind in (p.POSITIONAL_ONLY,
                                                       p.POSITIONAL_OR_KEYWORD)), "")
    return first if first.isidentifier() and first != "self" else "input"
