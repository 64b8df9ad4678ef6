"""Segments: what the INT8 model computes between measured tensors. Pure Python on the layer
table, shared by the tracer (which re-runs them) and the culprit ranking (which reads them).

A segment is a matched layer plus the layers fused into it (Conv and BatchNorm fused into a
ReLU's CONV_2D); its inputs are the layers whose measured tensors feed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qdebug.store.schema import STATUS_FOLDED, STATUS_FUSED, STATUS_MATCHED, LayerRecord


@dataclass
class Segment:
    """The layers computed by one measured tensor's op(s)."""

    output: str
    """The matched layer whose tensor ends the segment."""
    members: list[str]
    """Layers computed inside the segment, topological order, ``output`` last."""
    inputs: list[str]
    """Layers consumed by the segment from outside it (possibly folded ones)."""


def source_of(name: str, records: dict[str, LayerRecord]) -> str:
    """The measured layer whose tensor carries ``name``'s value (folded layers resolved)."""
    seen = set()
    while records[name].status == STATUS_FOLDED and name not in seen:
        seen.add(name)
        name = records[name].related
    return name


def build_segments(records: Sequence[LayerRecord]) -> list[Segment]:
    """One segment per matched layer whose inputs are all measured; others are skipped."""
    by_name = {r.name: r for r in records}
    order = {r.name: i for i, r in enumerate(records)}
    segments = []
    for rec in records:
        if rec.status != STATUS_MATCHED:
            continue
        members = {rec.name}
        frontier = list(rec.inbound)
        inputs: list[str] = []
        ok = True
        while frontier:
            name = frontier.pop()
            r = by_name.get(name)
            if r is None:
                ok = False
                break
            if r.status == STATUS_FUSED and r.related == rec.name:
                if name not in members:
                    members.add(name)
                    frontier.extend(r.inbound)
                continue
            src = source_of(name, by_name)
            if not by_name[src].measured or by_name[src].tensor_index < 0:
                ok = False
                break
            if name not in inputs:
                inputs.append(name)
        if ok and inputs:
            ordered = sorted(members, key=lambda n: order[n])
            segments.append(Segment(rec.name, ordered, inputs))
    return segments
