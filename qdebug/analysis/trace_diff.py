"""Compares two traces of one model: did quantization get worse? Reads summary tables only.

``diff_traces(base, new)`` reads the layer and output tables, the pooled metrics and the per-sample
top-1 flags of each trace (one byte per sample and output, needed for top-1 agreement); it never
reads per-sample statistics, stored inputs or activations. Argument order is always (base, new).
The rules (which traces are comparable, what counts as a regression) are in ``docs/diff.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qdebug.analysis.accuracy import accuracy
from qdebug.errors import TraceFileError
from qdebug.metrics import EXACT_DB
from qdebug.store.layer_metrics import LayerMetrics
from qdebug.store.reader import Trace, open_trace
from qdebug.textfmt import db, pct, plain

#: Layers listed as "changed most".
MOST_CHANGED = 5
#: Below this share of common layer names two traces are of different models.
MIN_SHARED_LAYERS = 0.5


@dataclass(frozen=True)
class Thresholds:
    """How much worse NEW may be than BASE before ``diff`` calls it a regression."""

    max_output_drop_db: float = 1.0
    """Largest allowed drop of an output's SQNR (dB). 1 dB is 26 % more error power at the
    output; re-tracing the same model and data gives exactly 0."""
    max_layer_drop_db: float = 3.0
    """Largest allowed drop of a layer's accumulated SQNR (dB). 3 dB is twice the error power."""
    max_top1_drop: float = 0.01
    """Largest allowed drop of top-1 agreement, as a fraction of samples (0.01 = 1 point)."""
    max_accuracy_drop: float = 0.01
    """Largest allowed drop of INT8 task accuracy against labels, as a fraction of samples;
    checked when both traces were traced with ``--labels``."""

    def __post_init__(self) -> None:
        for name in ("max_output_drop_db", "max_layer_drop_db", "max_top1_drop",
                     "max_accuracy_drop"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be a number ≥ 0, not {value!r}")


@dataclass(frozen=True)
class Change:
    """One number in BASE and in NEW (NaN where a trace has no value)."""

    base: float
    new: float

    @property
    def delta(self) -> float:
        """``new − base``: 0 when equal (both +∞ included), NaN when either is missing."""
        if self.base == self.new:
            return 0.0
        if math.isnan(self.base) or math.isnan(self.new):
            return math.nan
        return self.new - self.base

    @property
    def drop(self) -> float:
        """``base − new``, how much worse NEW is for a higher-is-better number."""
        return -self.delta


@dataclass(frozen=True)
class OutputDiff:
    """One model output in both traces."""

    name: str
    sqnr_db: Change
    top1_agreement: Change
    """NaN in both when the output is not a classifier."""
    regressed: bool


@dataclass(frozen=True)
class LayerDiff:
    """One layer present (by name) in both traces."""

    name: str
    class_name: str
    status: tuple[str, str]
    """(base, new) match status."""
    tensor: tuple[str, str]
    """(base, new) name of the INT8 tensor holding the layer's output."""
    sqnr_db: Change
    """Accumulated SQNR (dB)."""
    saturation: Change
    local_sqnr_db: Change | None
    """SQNR of the layer's own (local) error; None unless both traces have the analysis."""
    gain: Change | None
    """Error gain of the layer; None unless both traces have the analysis."""
    regressed: bool

    @property
    def rematched(self) -> bool:
        """Whether the layer's match status or tensor changed."""
        return self.status[0] != self.status[1] or self.tensor[0] != self.tensor[1]


@dataclass(frozen=True)
class DiffResult:
    """What changed from BASE to NEW, with the verdict."""

    base: str
    new: str
    model_name: str
    thresholds: Thresholds
    outputs: tuple[OutputDiff, ...]
    layers: tuple[LayerDiff, ...]
    """Layers in both traces, in NEW's topological order."""
    added: tuple[str, ...]
    """Layers only in NEW."""
    removed: tuple[str, ...]
    """Layers only in BASE."""
    most_changed: tuple[str, ...]
    """Up to five layers with the largest accumulated-SQNR change, biggest drops first."""
    reasons: tuple[str, ...]
    """One line per threshold exceeded; empty when within thresholds."""
    notes: tuple[str, ...] = field(default=())
    """Facts worth knowing that do not decide the verdict (weights differ, sample counts, …)."""
    int8_accuracy: Change | None = None
    """INT8 task accuracy against labels; None unless both traces have labels."""
    float_accuracy: Change | None = None
    """Float task accuracy against labels; None unless both traces have labels."""

    @property
    def regressed(self) -> bool:
        """Whether any threshold was exceeded."""
        return bool(self.reasons)

    @property
    def verdict(self) -> str:
        """``regression`` or ``ok``."""
        return "regression" if self.regressed else "ok"

    @property
    def rematched(self) -> tuple[str, ...]:
        """Layers in both traces whose match status or tensor changed."""
        return tuple(d.name for d in self.layers if d.rematched)

    @property
    def regressed_layers(self) -> tuple[LayerDiff, ...]:
        """Layers whose accumulated SQNR dropped by more than the threshold."""
        return tuple(d for d in self.layers if d.regressed)

    def layer(self, name: str) -> LayerDiff:
        """The diff of one layer by name."""
        for d in self.layers:
            if d.name == name:
                return d
        raise KeyError(name)


def _names(trace: Trace) -> list[str]:
    return [r.name for r in trace.layers]


def check_comparable(base: Trace, new: Trace) -> list[str]:
    """Refuse traces of different models; return notes on legitimate differences.

    Two traces are of the same model when they have the same input names and the same output
    names, at least half of all layer names occur in both, and, if the model names differ, the
    layer names are identical (a renamed model). ``model_sha256`` is not compared: new weights
    (retraining, a fix) are a reason to diff, not a different model.

    Raises:
        TraceFileError: the traces are of different models.
    """
    problems = []
    ins = (list(base.meta.input_names), list(new.meta.input_names))
    if ins[0] != ins[1]:
        problems.append(f"inputs {ins[0]} vs {ins[1]}")
    outs = ([o.name for o in base.outputs], [o.name for o in new.outputs])
    if outs[0] != outs[1]:
        problems.append(f"outputs {outs[0]} vs {outs[1]}")
    a, b = set(_names(base)), set(_names(new))
    shared = len(a & b) / max(len(a | b), 1)
    if shared < MIN_SHARED_LAYERS:
        problems.append(f"only {len(a & b)} of {len(a | b)} layer names in common")
    if base.model_name != new.model_name and _names(base) != _names(new):
        problems.append(f"model {base.model_name!r} vs {new.model_name!r}")
    if problems:
        raise TraceFileError(
            f"{base.path} and {new.path} are traces of different models ({'; '.join(problems)})",
            "diff compares two traces of one model, e.g. before and after a converter, "
            "calibration or weight change",
        )
    notes = []
    if base.model_name != new.model_name:
        notes.append(f"model renamed {base.model_name!r} → {new.model_name!r}")
    if base.meta.model_sha256 != new.meta.model_sha256:
        notes.append("the model files differ (model_sha256: another file, format or weights)")
    if base.n_samples != new.n_samples:
        notes.append(f"sample counts differ: {base.n_samples} vs {new.n_samples}")
    if base.meta.data_source != new.meta.data_source:
        notes.append("the traced data differ (data_source)")
    return notes


def _exceeds(drop: float, limit: float) -> bool:
    return not math.isnan(drop) and drop > limit


def _diff_outputs(base: Trace, new: Trace, th: Thresholds) -> tuple[list[OutputDiff], list[str]]:
    bm, nm = base.output_metrics(), new.output_metrics()
    diffs, reasons = [], []
    for j, o in enumerate(new.outputs):
        sq = Change(float(bm["sqnr_db"][j]), float(nm["sqnr_db"][j]))
        top1 = Change(float(bm["top1_agreement"][j]), float(nm["top1_agreement"][j]))
        bad = False
        if _exceeds(sq.drop, th.max_output_drop_db):
            bad = True
            reasons.append(
                f"output {o.name}: SQNR {db(sq.base)} → {db(sq.new)} dB "
                f"(drop {db(sq.drop)} dB > {th.max_output_drop_db:g} dB)"
            )
        if _exceeds(top1.drop, th.max_top1_drop):
            bad = True
            reasons.append(
                f"output {o.name}: top-1 agreement {pct(top1.base)} → {pct(top1.new)} "
                f"(drop {plain(top1.drop, 3)} > {th.max_top1_drop:g})"
            )
        diffs.append(OutputDiff(o.name, sq, top1, bad))
    return diffs, reasons


def _measured(values: np.ndarray) -> bool:
    """Whether a trace really has a metric (a trace without the analysis holds it as NaN)."""
    return bool(np.any(~np.isnan(values)))


def _optional(
    base_values: np.ndarray, new_values: np.ndarray, ib: int, jn: int, exact: bool = False
) -> Change | None:
    """The change of a metric both traces have; ``exact``: an SQNR at ``EXACT_DB`` or more
    (float noise over an exact op) reads as exact."""
    if not (_measured(base_values) and _measured(new_values)):
        return None
    base, new = float(base_values[ib]), float(new_values[jn])
    if exact:
        base, new = (math.inf if v >= EXACT_DB else v for v in (base, new))
    return Change(base, new)


def _diff_layers(
    base: Trace, new: Trace, bm: LayerMetrics, nm: LayerMetrics, th: Thresholds
) -> tuple[list[LayerDiff], list[str]]:
    index = {name: i for i, name in enumerate(_names(base))}
    diffs, reasons = [], []
    for j, rn in enumerate(new.layers):
        i = index.get(rn.name)
        if i is None:
            continue
        rb = base.layers[i]
        both = rb.ranked and rn.ranked  # an unverified row may hold another tensor's numbers
        sq = Change(float(bm.sqnr_db[i]), float(nm.sqnr_db[j]))
        bad = both and _exceeds(sq.drop, th.max_layer_drop_db)
        if bad:
            reasons.append(
                f"layer {rn.name}: SQNR {db(sq.base)} → {db(sq.new)} dB "
                f"(drop {db(sq.drop)} dB > {th.max_layer_drop_db:g} dB)"
            )
        diffs.append(
            LayerDiff(
                name=rn.name,
                class_name=rn.class_name,
                status=(rb.status, rn.status),
                tensor=(rb.tensor_name, rn.tensor_name),
                sqnr_db=sq,
                saturation=Change(float(bm.saturation[i]), float(nm.saturation[j])),
                local_sqnr_db=_optional(bm.local_sqnr_db, nm.local_sqnr_db, i, j, exact=True),
                gain=_optional(bm.gain, nm.gain, i, j),
                regressed=bad,
            )
        )
    return diffs, reasons


def _most_changed(layers: Iterable[LayerDiff]) -> tuple[str, ...]:
    moved = [d for d in layers if not math.isnan(d.sqnr_db.delta) and d.sqnr_db.delta != 0.0]
    # Biggest drops first, then the biggest gains; ties keep topological order.
    moved.sort(key=lambda d: (d.sqnr_db.delta >= 0, -abs(d.sqnr_db.delta)))
    return tuple(d.name for d in moved[:MOST_CHANGED])


def diff_traces(base: Trace, new: Trace, thresholds: Thresholds | None = None) -> DiffResult:
    """Compare two open traces of one model.

    Args:
        base: the reference trace.
        new: the trace under test.
        thresholds: limits for the verdict (defaults: ``Thresholds()``).

    Returns:
        The per-output and per-layer changes and the verdict.

    Raises:
        TraceFileError: the traces are of different models.
    """
    th = thresholds or Thresholds()
    notes = check_comparable(base, new)
    bm, nm = base.typed_layer_metrics(), new.typed_layer_metrics()
    has = [_measured(m.local_sqnr_db) or _measured(m.gain) for m in (bm, nm)]
    if has[0] != has[1]:
        notes.append(
            f"only {'BASE' if has[0] else 'NEW'} has the propagation analysis; "
            "local SQNR and gain are not compared"
        )
    outputs, out_reasons = _diff_outputs(base, new, th)
    acc_q, acc_f, acc_reasons = _diff_accuracy(base, new, th, notes)
    out_reasons += acc_reasons
    layers, layer_reasons = _diff_layers(base, new, bm, nm, th)
    base_names, new_names = set(_names(base)), set(_names(new))
    return DiffResult(
        base=str(base.path),
        new=str(new.path),
        model_name=new.model_name,
        thresholds=th,
        outputs=tuple(outputs),
        layers=tuple(layers),
        added=tuple(n for n in _names(new) if n not in base_names),
        removed=tuple(n for n in _names(base) if n not in new_names),
        most_changed=_most_changed(layers),
        reasons=tuple(out_reasons + layer_reasons),
        notes=tuple(notes),
        int8_accuracy=acc_q,
        float_accuracy=acc_f,
    )


def _diff_accuracy(
    base: Trace, new: Trace, th: Thresholds, notes: list[str]
) -> tuple[Change | None, Change | None, list[str]]:
    """INT8 (and float) task accuracy of both traces; a reason when INT8 accuracy dropped more
    than ``max_accuracy_drop``."""
    ab, an = accuracy(base), accuracy(new)
    if ab is None or an is None:
        if ab is not None or an is not None:
            notes.append(
                f"only {'BASE' if ab is not None else 'NEW'} has labels; task accuracy is not "
                "compared"
            )
        return None, None, []
    if len(ab.labels) != len(an.labels) or not np.array_equal(ab.labels, an.labels):
        notes.append("the traces' labels differ: accuracies are over different samples")
    q = Change(ab.int8_accuracy, an.int8_accuracy)
    f = Change(ab.float_accuracy, an.float_accuracy)
    reasons = []
    if _exceeds(q.drop, th.max_accuracy_drop):
        reasons.append(
            f"int8 accuracy {pct(q.base)} → {pct(q.new)} "
            f"(drop {plain(q.drop, 3)} > {th.max_accuracy_drop:g})"
        )
    return q, f, reasons


def diff_paths(
    base: str | Path | Trace, new: str | Path | Trace, thresholds: Thresholds | None = None
) -> DiffResult:
    """``diff_traces`` on paths (or already open traces); files opened here are closed."""
    opened: list[Trace] = []
    try:
        traces = []
        for t in (base, new):
            if isinstance(t, Trace):
                traces.append(t)
            else:
                opened.append(open_trace(t))
                traces.append(opened[-1])
        return diff_traces(traces[0], traces[1], thresholds)
    finally:
        for t in opened:
            t.close()
