"""Ops that cannot become builtin INT8 kernels, and layers that end up as float islands."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from qdebug.errors import ConversionError
from qdebug.tools.check.findings import ERROR, WARNING, Finding


def _parse(exc: ConversionError) -> tuple[str, str]:
    layer = re.search(r"layer '([^']+)'", exc.message)
    op = re.search(r"TensorFlow op (\w+)", exc.message)
    return (layer.group(1) if layer else ""), (op.group(1) if op else "")


def _finding(exc: ConversionError, stage: str) -> Finding:
    layer, op = _parse(exc)
    if op:
        return Finding(
            ERROR, "ops", layer,
            f"{stage} conversion fails: the layer uses TensorFlow op {op}, which has no TFLite "
            "builtin kernel (it would need Select TF ops, which LiteRT cannot run)",
            exc.hint,
        )
    return Finding(ERROR, "ops", layer, f"{stage} conversion fails: {exc.message}", exc.hint)


def check_ops(
    model: Any, layer_names: list[str], samples: list[list[np.ndarray]]
) -> list[Finding]:
    """Convert to float TFLite and to full INT8 in-process; translate what fails, and name the
    layers that stay float inside the INT8 model."""
    from qdebug.tracer import convert as conv
    from qdebug.tracer.litert import LiteModel

    try:
        conv.convert_float(model, layer_names)
    except ConversionError as exc:
        return [_finding(exc, "float")]

    def representative() -> Iterator[Any]:
        for s in samples:
            yield [x[None] for x in s]

    rep: Callable[[], Iterable[Any]] = representative
    try:
        int8 = conv.convert_int8_and_twin(
            model, rep, conv.ConversionOptions(calib_samples=len(samples)), layer_names
        ).int8
    except ConversionError as exc:
        return [_finding(exc, "INT8")]
    lite = LiteModel(int8, preserve=False)
    found: list[Finding] = []
    seen: set[str] = set()
    for op in lite.float_islands():
        name = lite.tensors[op.outputs[0]].name
        layers = conv.layer_names_in(name, layer_names)
        layer = layers[-1] if layers else ""
        if layer in seen:
            continue
        seen.add(layer)
        found.append(
            Finding(
                WARNING, "ops", layer,
                f"op {op.op_type} stays float32 inside the INT8 model (a float island, with "
                "DEQUANTIZE/QUANTIZE around it: slower, and not runnable on integer-only "
                "accelerators)",
                "replace the layer with one that has int8 kernels, or accept the island "
                "(qdebug trace measures its cost)",
            )
        )
    return found
