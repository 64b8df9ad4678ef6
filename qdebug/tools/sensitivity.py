"""Sensitivity: what raising one layer (or op) alone buys at the output.

``one_at_a_time`` keeps each of the best-ranked layers alone in float through the converter
(``qdebug trace --keep-float``). ``raised_alone`` (``qdebug sensitivity --scheme int16``)
goes through ai-edge-quantizer's per-op recipe instead: each layer's ops (each op, for a float
``.tflite``), with the ops reading its output, at int16 activations alone and in float alone,
both beside the all-int8 model AEQ makes, with what each costs (``qdebug.tools.precision``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdebug.errors import ConversionError, QdebugError
from qdebug.tools.fix_search import Outcome, Searcher, numbers
from qdebug.tools.precision import FLOAT, INT16, Cost, merged


@dataclass(frozen=True)
class Sensitivity:
    """One layer kept in float alone."""

    layer: str
    output_sqnr_db: float
    delta_db: float
    """Change of the output SQNR against the all-INT8 baseline (positive: better)."""
    top1: float


def one_at_a_time(
    model: Any,
    data: Any,
    *,
    layers: int = 8,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> tuple[Outcome, list[Sensitivity]]:
    """Keep each of the ``layers`` best-ranked candidates in float alone; rank by the output
    SQNR change. Returns the baseline and the ranking (largest gain first)."""
    say = progress or (lambda _line: None)
    with tempfile.TemporaryDirectory(prefix="qdebug-sens-") as tmp:
        s = Searcher(model, data, Path(tmp), dict(options))
        base = s.outcome(())
        say(f"baseline: {numbers(base)}")
        found: list[Sensitivity] = []
        for layer in s.ranked_candidates(base.trace, ()):
            if len(found) >= layers:
                break
            try:
                o = s.outcome((layer,))
            except ConversionError:
                continue
            say(f"  {layer}: {numbers(o)}")
            found.append(
                Sensitivity(layer, o.output_sqnr_db, o.output_sqnr_db - base.output_sqnr_db,
                            o.top1)
            )
    found.sort(key=lambda x: x.delta_db, reverse=True)
    return base, found


@dataclass(frozen=True)
class Raise:
    """One unit at one precision, alone."""

    output_sqnr_db: float
    delta_db: float
    """Change of the output SQNR against the all-int8 model (positive: better)."""
    cost: Cost


@dataclass(frozen=True)
class RaisedSensitivity:
    """One layer (or op) raised alone, at int16 and in float."""

    name: str
    """The layer's name (the op's, for a float ``.tflite``)."""
    ops: tuple[str, ...]
    """The ops raised: its own and its output's readers (readable op names)."""
    at_int16: Raise | None
    at_float: Raise | None
    """None where the precision was not asked for or AEQ refused the recipe."""

    @property
    def best_delta_db(self) -> float:
        """The larger of the two changes (the ranking key)."""
        return max((r.delta_db for r in (self.at_int16, self.at_float) if r is not None),
                   default=float("-inf"))


def _units(trace: Path, graph_ops: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """(name, op keys) of the units to raise, best-ranked first: the trace's layers with
    ops (culprits first, then by lowest local SQNR), or its ops in a trace without layers."""
    from qdebug.store.reader import open_trace
    from qdebug.tools.mixed_search import trace_op_ranking

    keys, labels = trace_op_ranking(trace)
    with open_trace(trace) as tr:
        owner = {tr.ops[i].tensor_name: r.name for r in tr.layers for i in r.ops}
        layer_keys = {r.name: [tr.ops[i].tensor_name for i in r.ops] for r in tr.layers}
    units: list[tuple[str, tuple[str, ...]]] = []
    seen: set[str] = set()
    for key in keys:
        name = owner.get(key) or labels.get(key, key)
        if name in seen:
            continue
        seen.add(name)
        members = tuple(k for k in layer_keys.get(name, [key]) if k in graph_ops)
        if members:
            units.append((name, members))
    return units


def raised_alone(
    model: Any,
    data: Any,
    *,
    layers: int = 8,
    precisions: tuple[str, ...] = (INT16, FLOAT),
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> tuple[Any, list[RaisedSensitivity]]:
    """Raise each of the ``layers`` best-ranked layers (ops, for a float ``.tflite``) alone,
    with the ops reading its output, to each of ``precisions`` through AEQ; rank by the
    larger output SQNR change. Returns the all-int8 baseline (a ``MixedOutcome``) and the
    ranking (largest gain first)."""
    from qdebug.tools.mixed_search import MixedSearcher

    say = progress or (lambda _line: None)
    found: list[RaisedSensitivity] = []
    with tempfile.TemporaryDirectory(prefix="qdebug-sens-") as tmp:
        s = MixedSearcher(model, data, Path(tmp), dict(options))
        base = s.outcome(())
        say(f"baseline (all int8): output SQNR {base.output_sqnr_db:.1f} dB")
        labels = s.labels(base.trace)
        for name, keys in _units(base.trace, s.graph.ops)[:layers]:
            group = tuple(dict.fromkeys(k for key in keys for k in s.graph.group(key)))
            got: dict[str, Raise] = {}
            for p in precisions:
                try:
                    o = s.outcome(merged((), group, p))
                except QdebugError as exc:
                    say(f"  {name} at {p}: not quantized ({exc})")
                    continue
                got[p] = Raise(o.output_sqnr_db, o.output_sqnr_db - base.output_sqnr_db,
                               o.cost)
                say(f"  {name} at {p}: output SQNR {o.output_sqnr_db:.1f} dB "
                    f"({got[p].delta_db:+.1f}); cost {o.cost.describe()}")
            found.append(RaisedSensitivity(name, tuple(labels.get(k, k) for k in group),
                                           got.get(INT16), got.get(FLOAT)))
    found.sort(key=lambda x: x.best_delta_db, reverse=True)
    return base, found


__all__ = ["Raise", "RaisedSensitivity", "Sensitivity", "one_at_a_time", "raised_alone"]
