"""The model's inputs and outputs on both sides: input specs, checking a given ``.tflite``
against the Keras model, the float twin's values on a few samples, and which LiteRT output
carries each Keras output."""

from __future__ import annotations

import numpy as np

from qdebug.errors import TfliteModelError
from qdebug.store.schema import LayerRecord, OutputRecord
from qdebug.tracer.data import InputSpec
from qdebug.tracer.graph import LayerGraph, input_dtype
from qdebug.tracer.litert import LiteModel
from qdebug.tracer.op_view import class_scores
from qdebug.tracer.sides import lite_input_order


def input_specs(graph: LayerGraph) -> list[InputSpec]:
    specs = []
    for name, t in zip(graph.input_names, graph.model.inputs, strict=True):
        shape = t.shape.as_list() if hasattr(t.shape, "as_list") else list(t.shape)
        dtype = input_dtype(t)
        specs.append(
            InputSpec(
                name,
                tuple(None if d is None else int(d) for d in shape[1:]),
                dtype if dtype != "float64" else "float32",
            )
        )
    return specs


def check_inputs(int8: LiteModel, specs: list[InputSpec]) -> None:
    """Refuse a ``.tflite`` whose inputs do not fit the Keras model's."""
    shapes = int8.input_shapes()
    if len(shapes) != len(specs):
        raise TfliteModelError(
            f"the .tflite model has {len(shapes)} inputs, the Keras model {len(specs)}",
            "give the .tflite converted from this model",
        )
    order = lite_input_order(int8, [s.name for s in specs])
    for shape, pos in zip(shapes, order, strict=True):
        want = specs[pos].shape
        if len(shape) - 1 != len(want) or any(
            w is not None and w != s for w, s in zip(want, shape[1:], strict=False)
        ):
            raise TfliteModelError(
                f"the .tflite model takes input shape {tuple(shape)}, the Keras model "
                f"{('N', *want)}",
                "give the .tflite converted from this model",
            )


def twin_values(
    twin: LiteModel, samples: list[list[np.ndarray]], names: list[str]
) -> dict[int, np.ndarray]:
    """Every float tensor of the twin on ``samples`` (matching compares them with Keras)."""
    order = lite_input_order(twin, names)
    wanted = [
        i
        for i, t in twin.tensors.items()
        if t.dtype == np.float32 and (i in twin.producer or i in twin.input_indices)
    ]
    per: dict[int, list[np.ndarray]] = {i: [] for i in wanted}
    for s in samples:
        twin.invoke([s[p] for p in order])
        for i in wanted:
            per[i].append(twin.get(i)[0] if twin.get(i).shape[:1] == (1,) else twin.get(i))
    return {i: np.stack(v) for i, v in per.items()}


def output_records(
    graph: LayerGraph,
    records: list[LayerRecord],
    int8: LiteModel,
    keras_vals: dict[str, np.ndarray],
    twin: LiteModel,
    twin_vals: dict[int, np.ndarray],
    labelled: bool = False,
) -> tuple[list[OutputRecord], list[int]]:
    """Each Keras output's record and the LiteRT output position that carries it (a position
    no earlier output took, where two fit as well: an LSTM's output and its state ``h``)."""
    outs: list[OutputRecord] = []
    positions: list[int] = []
    twin_out = twin.output_indices
    for j, (key, layer) in enumerate(zip(graph.output_keys, graph.output_names, strict=True)):
        k = np.asarray(keras_vals[key], dtype=np.float64).reshape(len(keras_vals[key]), -1)
        errs = []
        for t in twin_out:
            v = twin_vals.get(t)
            if v is None or v.reshape(len(v), -1).shape != k.shape:
                errs.append(np.inf)
                continue
            errs.append(
                float(np.linalg.norm(k - v.reshape(k.shape)))
                / max(float(np.linalg.norm(k)), 1e-12)
            )
        pos = j
        if errs and np.isfinite(min(errs)):
            best = min(errs)
            fits = [p for p, e in enumerate(errs) if e <= best + 1e-6]
            pos = next((p for p in fits if p not in positions), fits[0])
        positions.append(pos)
        q_index = int8.output_indices[pos]
        info = int8.tensors[q_index]
        qp = info.qp
        if qp is None:
            op = int8.producer.get(q_index)
            if op is not None and op.op_type == "DEQUANTIZE":
                qp = int8.tensors[op.inputs[0]].qp
        shape = graph.output_shapes[j]
        made = twin.producer.get(twin_out[pos]) if pos < len(twin_out) else None
        outs.append(
            OutputRecord(
                name=key,
                layer=layer,
                tensor_name=info.name,
                scale=qp.scale if qp else float("nan"),
                zero_point=qp.zero_point if qp else 0,
                classifier=class_scores(shape, made.op_type if made else "", k, labelled),
            )
        )
    return outs, positions


def integer_source(lite: LiteModel, index: int) -> int:
    """The integer tensor behind a float graph output (the input of its DEQUANTIZE op)."""
    op = lite.producer.get(index)
    if lite.tensors[index].qp is None and op is not None and op.op_type == "DEQUANTIZE":
        return op.inputs[0]
    return index


def input_bytes(specs: list[InputSpec]) -> int:
    """Bytes of one sample's inputs (float32; unknown dimensions counted as 1)."""
    return sum(4 * int(np.prod([d or 1 for d in s.shape], dtype=np.int64)) for s in specs)
