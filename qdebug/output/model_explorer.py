"""Node data for Google's Model Explorer (``ai-edge-model-explorer``): qdebug's per-op numbers
as overlays on the INT8 ``.tflite`` graph.

The files follow Model Explorer's own format, its ``node_data_builder.GraphNodeData`` dataclass
serialised by ``to_json_string``: ``{"name", "results": {key: {"value"}}, "thresholds": [...]}``
and the side panel's options (no sums of dB, see ``HIDDEN_STATS``),
keyed by the INT8 model's output tensor names (the key Model Explorer matches against a TFLite
node's ``tensor_name`` output metadata). Written without importing Model Explorer, so ``qdebug
export`` works without the ``explorer`` extra. Never imports TensorFlow.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdebug import metrics
from qdebug.store.reader import Trace

#: +∞ dB (an op without any error) is shown as this value: JSON has no infinity.
NO_ERROR_DB = 100.0

#: The colour of each of ``metrics.SQNR_BANDS``, worst first (red … green).
BAND_COLOURS = ("#d73027", "#fc8d59", "#fee08b", "#d9ef8b", "#1a9850")
#: SQNR colours as Model Explorer's thresholds (a value ≤ ``value`` takes the first item's
#: colour; JSON has no infinity, so the last band's ceiling is 1e9 dB).
SQNR_THRESHOLDS = tuple(
    (min(ceiling, 1e9), colour)
    for (ceiling, _), colour in zip(metrics.SQNR_BANDS, BAND_COLOURS, strict=True)
)
#: Error gain colours: ≤ 1 (the op does not amplify the error reaching it) green … > 4 red.
GAIN_THRESHOLDS = (
    (1.0, "#1a9850"),
    (2.0, "#fee08b"),
    (4.0, "#fc8d59"),
    (1e9, "#d73027"),
)


#: Model Explorer's side-panel statistics not shown for a set (``hideAggregatedStats``).
HIDDEN_STATS = ("sum", "avg")


@dataclass(frozen=True)
class Overlay:
    """One node-data set: a metric of every op, by output tensor name."""

    metric: str
    """The trace's metric (``sqnr_db``, ``local_sqnr_db``, ``gain``)."""
    name: str
    """The name Model Explorer shows for the set."""
    suffix: str
    """File-name suffix beside the main file (empty for the main file)."""
    thresholds: tuple[tuple[float, str], ...]


OVERLAYS = (
    Overlay("sqnr_db", "qdebug: accumulated SQNR (dB)", "", SQNR_THRESHOLDS),
    Overlay("local_sqnr_db", "qdebug: local SQNR (dB)", ".local_sqnr", SQNR_THRESHOLDS),
    Overlay("gain", "qdebug: error gain", ".gain", GAIN_THRESHOLDS),
)


def _value(v: float, metric: str) -> float | None:
    if math.isnan(v):
        return None
    if math.isinf(v):
        return NO_ERROR_DB if v > 0 and metric != "gain" else None
    return round(float(v), 4)


def _rows(trace: Trace) -> tuple[list[str], dict[str, np.ndarray]]:
    """Tensor names and metrics of every op (schema 1.2), or of every layer (older traces)."""
    if trace.ops:
        return [o.tensor_name for o in trace.ops], trace.op_metrics()
    return [r.tensor_name for r in trace.layers], trace.layer_metrics()


def node_data(trace: Trace) -> dict[str, dict[str, Any]]:
    """``{file suffix: GraphNodeData as plain data}`` for each overlay the trace has."""
    names, metrics = _rows(trace)
    out: dict[str, dict[str, Any]] = {}
    for ov in OVERLAYS:
        values = metrics.get(ov.metric)
        if values is None:
            continue
        results: dict[str, dict[str, float]] = {}
        for tensor, v in zip(names, values, strict=True):
            val = _value(float(v), ov.metric)
            if tensor and val is not None:
                results[tensor] = {"value": val}
        if not results:
            continue
        out[ov.suffix] = {
            "name": ov.name,
            "results": results,
            "thresholds": [{"value": t, "bgColor": c} for t, c in ov.thresholds],
            # A sum (or mean) of dB or of gains is no SQNR: Model Explorer's side panel shows
            # only the min and max, and no per-group shares of a sum.
            "hideAggregatedStats": list(HIDDEN_STATS),
            "hideInChildrenStatsTable": True,
        }
    return out


def overlay_paths(out: Path, suffixes: list[str]) -> dict[str, Path]:
    """Where each set goes: ``OUT.json`` (accumulated SQNR), ``OUT.local_sqnr.json``, …"""
    stem = out.with_suffix("") if out.suffix == ".json" else out
    return {s: stem.with_name(stem.name + s + ".json") for s in suffixes}


def encode_node_data(body: dict[str, Any]) -> bytes:
    """One node-data set as the bytes of its file."""
    return json.dumps(body, indent=2).encode()


def write_node_data(trace: Trace, out: Path, *, force: bool = False) -> list[Path]:
    """Write every overlay beside ``out``; returns the files written (accumulated SQNR
    first)."""
    from qdebug.output.export import check_export_target, write_atomic

    data = node_data(trace)
    if not data:
        from qdebug.errors import QdebugError

        raise QdebugError(f"{trace.path} has no per-op SQNR to overlay", "re-trace the model")
    paths = overlay_paths(Path(out), list(data))
    for p in paths.values():
        check_export_target(p, force)
    for suffix, body in data.items():
        text = encode_node_data(body)
        write_atomic(paths[suffix], lambda fh, text=text: fh.write(text), force)  # type: ignore[misc]
    return list(paths.values())
