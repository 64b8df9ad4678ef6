"""``--keep-float LAYER``: every op the layer lowered to, found on the calibrated float model.
The one resolver of ``--keep-float``: ``convert_int8_and_twin`` is handed it.

A user thinks in layers: keeping ``probs`` (Dense + softmax) in float must keep its
FULLY_CONNECTED *and* its SOFTMAX, whose tensor carries no layer name. So the layers are matched
to the calibrated model's tensors as for a trace (numerically), each layer is given the chain of
ops it lowered to, and those ops' names go to the quantizer's deny list. A model traced as ops
has no layers to keep.
"""

from __future__ import annotations

import difflib

import numpy as np

from qdebug.errors import ConversionError
from qdebug.tracer.graph import LayerGraph
from qdebug.tracer.litert import EDGE_OPS, LiteModel
from qdebug.tracer.matching import align_tensors, match_layers
from qdebug.tracer.oprows import assign_layers, build_op_table


def layer_op_names(
    calibrated: bytes,
    graph: LayerGraph | None,
    keras_values: dict[str, np.ndarray],
    twin_values: dict[int, np.ndarray],
    keep: tuple[str, ...],
    notes: list[str],
) -> list[str]:
    """Names of the ops (their output tensors in ``calibrated``) of the layers in ``keep``;
    ``graph`` None (a model traced as ops) has none of them.

    A layer without an op of its own (fused into the next one's op, e.g. a Conv2D under its
    BatchNorm and ReLU) keeps the op that computes it; ``notes`` says so.
    """
    twin = LiteModel(calibrated, preserve=False)
    records = [] if graph is None else match_layers(graph, keras_values, twin, twin_values, twin)
    table = build_op_table(twin, twin, align_tensors(twin, twin))
    assign_layers(table, records, twin)
    by_name = {r.name: r for r in records}
    short = {r.name.rpartition("/")[2]: r.name for r in records}
    names: list[str] = []
    for layer in keep:
        rec = by_name.get(layer) or by_name.get(short.get(layer, ""))
        if rec is None:
            close = difflib.get_close_matches(layer, list(short), n=3)
            raise ConversionError(
                f"--keep-float: the model has no layer named {layer!r}",
                f"did you mean {', '.join(close)}" if close else "give Keras layer names",
            )
        seen = {rec.name}
        while not rec.ops and rec.related and rec.related not in seen:
            seen.add(rec.related)
            rec = by_name[rec.related]
        if not rec.ops:
            raise ConversionError(
                f"--keep-float: layer {layer!r} has no TFLite op (it computes nothing, or is an "
                "input)",
                "keep the layer after it in float instead",
            )
        if rec.name != layer and rec.name != short.get(layer):
            notes.append(f"--keep-float {layer}: it is computed inside {rec.name}'s op(s), "
                         f"which are kept in float")
        for row in rec.ops:
            op = table.rows[row]
            if op.op_type not in EDGE_OPS and op.tensor_name not in names:
                names.append(op.tensor_name)
    return names
