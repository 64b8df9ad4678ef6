"""Architecture risks: residual depth, merges of unbalanced ranges, softmax heads, outliers."""

from __future__ import annotations

from typing import Any

from qdebug.tools.check.findings import INFO, WARNING, Finding
from qdebug.tools.check.ranges import LayerRange
from qdebug.tracer.graph import LayerGraph

#: Residual additions in series from which accumulation is worth a warning.
DEEP_RESIDUAL = 8
#: Range ratio between the inputs of a merge that costs the smaller one most of its levels.
MERGE_RATIO = 8.0
#: max|x| / 99.9th percentile of |x| above which outliers stretch the int8 range.
OUTLIER_RATIO = 10.0
#: Softmax classes from which a near-uniform int8 output cannot be resolved.
SOFTMAX_CLASSES = 100

_BOUNDED = {"sigmoid", "tanh", "softmax", "relu6", "hard_sigmoid", "hard_swish", "hard_silu"}


def _activation(layer: Any) -> str:
    act = getattr(layer, "activation", None)
    if act is None:
        cls = type(layer).__name__
        return {"Softmax": "softmax", "ReLU": "relu"}.get(cls, "")
    return str(getattr(act, "__name__", act))


def check_architecture(graph: LayerGraph, ranges: dict[str, LayerRange]) -> list[Finding]:
    """Structural risks, sharpened by float ranges when data was given (``ranges`` may be
    empty)."""
    found: list[Finding] = []
    adds = [n for n in graph.nodes if n.class_name == "Add" and len(n.inbound) >= 2]
    if len(adds) >= DEEP_RESIDUAL:
        found.append(Finding(
            WARNING, "architecture", adds[-1].name,
            f"{len(adds)} residual additions in series: every addition re-quantizes the sum "
            "and the error of each branch accumulates towards the output",
            "trace it (qdebug trace) and let qdebug fix find the few layers worth keeping in "
            "float; or normalize inside the blocks; or try --scheme int16x8",
        ))
    for node in graph.nodes:
        if node.class_name not in ("Add", "Concatenate") or len(node.inbound) < 2:
            continue
        sizes = [ranges[i].absmax for i in node.inbound if i in ranges]
        if len(sizes) < 2 or min(sizes) <= 0:
            continue
        ratio = max(sizes) / min(sizes)
        if ratio < MERGE_RATIO:
            continue
        small = node.inbound[sizes.index(min(sizes))]
        if node.class_name == "Add":
            msg = (f"adds tensors whose ranges differ {ratio:.0f}×: the sum's int8 step is set "
                   f"by the larger one, so '{small}' keeps about {256 / ratio:.0f} levels")
        else:
            msg = (f"concatenates tensors whose ranges differ {ratio:.0f}×: TFLite gives the "
                   f"inputs one shared scale, so '{small}' keeps about {256 / ratio:.0f} levels")
        found.append(Finding(
            WARNING, "architecture", node.name, msg,
            "normalize or rescale the branches before merging, or keep the layer in float "
            "(--keep-float)",
        ))
    for node in graph.nodes:
        act = _activation(node.layer)
        if act == "softmax":
            classes = node.output_shape[-1] if node.output_shape else None
            if classes and classes >= SOFTMAX_CLASSES:
                found.append(Finding(
                    WARNING, "architecture", node.name,
                    f"softmax over {classes} classes: the int8 output has step 1/256, so "
                    f"probabilities below 1/512 (a near-uniform {1 / classes:.4f} each) "
                    "quantize to 0 and the ranking of small classes is lost",
                    "take the logits (drop the softmax from the INT8 model), or keep the "
                    "softmax in float (--keep-float)",
                ))
        r = ranges.get(node.name)
        if r is None or node.is_input or act in _BOUNDED or r.n_kept < 1000:
            continue
        p999 = r.abs_quantile(0.999)
        if p999 > 0 and r.absmax / p999 >= OUTLIER_RATIO:
            found.append(Finding(
                WARNING if act in ("", "linear", "relu") else INFO, "architecture", node.name,
                f"unbounded activation with outliers: max |x| = {r.absmax:.3g} is "
                f"{r.absmax / p999:.0f}× the 99.9th percentile, so 99.9% of the values share "
                f"a few of the 256 int8 levels",
                "bound it (ReLU6, clipping), or keep the layer in float, or --scheme int16x8",
            ))
    depth = sum(1 for n in graph.nodes if not n.is_input and not n.is_model)
    if depth >= 150:
        found.append(Finding(
            INFO, "architecture", "",
            f"{depth} layers: error has many steps to accumulate through",
            "trace it and read the SQNR curve (qdebug view)",
        ))
    return found
