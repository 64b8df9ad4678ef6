"""The mixed-precision fix: the cheapest set of ops to raise to int16 activations or float,
through ai-edge-quantizer's per-op recipe, each candidate verified by re-tracing.

The model (a Keras model, converted to a float ``.tflite`` once, or a float ``.tflite``) is
quantized by AEQ with a recipe that keeps every op static int8 except the raised ones
(``precision.recipe_for``); the result is traced as a pair against the float model on LiteRT's
builtin kernels, as ``qdebug trace MODEL --tflite`` does. A greedy search guided by the
trace's culprits: at each step the groups (an op and its readers, ``FloatGraph.group``) of the
best-ranked ops of the current trace are tried, each at int16 first and at float when int16
does not reach the target; the step keeps the cheapest candidate that meets the target, else
the one buying the most dB per byte. When no group gains (the error builds up over many ops),
every op at int16 is tried once, and kept when it gains and fits ``max_ops``. It stops at the
target or at the budget (ops, time); at the target, each raised op is lowered in turn where
the target still holds for fewer bytes.
"""

from __future__ import annotations

import json
import math
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdebug.errors import QdebugError
from qdebug.store.schema import CulpritKind
from qdebug.tools.fix_search import Target, load_for_search, numbers
from qdebug.tools.precision import (
    FLOAT,
    INT16,
    PRECISIONS,
    Cost,
    FloatGraph,
    Footprint,
    Raised,
    cost,
    footprint,
    merged,
    recipe_for,
)

#: A step must buy at least this much to be kept (dB).
MIN_GAIN_DB = 0.1


@dataclass(frozen=True)
class MixedOutcome:
    """One traced per-op recipe."""

    raised: Raised
    """(op key, precision) of every raised op."""
    output_sqnr_db: float
    top1: float
    cost: Cost
    trace: Path
    tflite: Path
    """The model AEQ wrote for this recipe."""
    seconds: float

    def count(self, precision: str) -> int:
        """Ops raised to ``precision``."""
        return sum(p == precision for _, p in self.raised)


@dataclass(frozen=True)
class MixedResult:
    """What ``search_mixed`` found."""

    baseline: MixedOutcome
    final: MixedOutcome
    reached: bool
    tried: tuple[MixedOutcome, ...]
    stopped: str
    """``target``, ``max-ops``, ``time`` or ``no candidates``."""
    recipe: list[dict[str, Any]]
    """AEQ's recipe of ``final``."""
    labels: dict[str, str]
    """Op key → a readable name, every op of the float model in execution order."""
    float_model: Path
    """The float ``.tflite`` the recipe applies to."""
    everywhere: MixedOutcome | None = None
    """Every op at int16, traced when the greedy steps found nothing more (a bound on what
    int16 can buy); None when not tried."""


@dataclass
class MixedSearcher:
    """Quantizes with a per-op recipe and traces; caches outcomes by raised set."""

    model: Any
    data: Any
    workdir: Path
    options: dict[str, Any] = field(default_factory=dict)
    cache: dict[Raised, MixedOutcome] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.loaded = load_for_search(self.model, self.options.get("trust_model_code", False))
        self.float_bytes = _float_tflite(self.loaded)
        self.float_path = self.workdir / "float.tflite"
        self.float_path.write_bytes(self.float_bytes)
        from qdebug.tracer.loading import TFLITE

        if self.loaded.flavour == TFLITE and bytes(self.loaded.model) != self.float_bytes:
            # repaired for AEQ (float16 weights, op codes, signature): the pair's float side
            # is the repaired model, which computes the same and names the same tensors
            self.loaded = load_for_search(str(self.float_path), False)
        self.graph = FloatGraph(self.float_bytes)
        self.samples = _calibration(self.float_bytes, self.options.get("calib") or self.data,
                                    int(self.options.get("calib_samples", 200)))
        self.base_footprint: Footprint | None = None
        self.names: dict[str, str] = {}

    def outcome(self, raised: Raised, out: Path | None = None) -> MixedOutcome:
        """Quantize with ``raised`` and trace (cached)."""
        if raised in self.cache and out is None:
            return self.cache[raised]
        from qdebug.store.reader import open_trace
        from qdebug.tracer.aeq import quantize_with_aeq
        from qdebug.tracer.pipeline import TraceOptions, Tracer

        start = time.monotonic()
        n = len(self.cache)
        q = quantize_with_aeq(self.float_bytes, recipe_for(raised, self.graph), self.samples)
        tfl = (out.with_suffix(".tflite") if out else self.workdir / f"cand{n}.tflite")
        tfl.write_bytes(q.tflite)
        path = out or self.workdir / f"cand{n}.h5"
        opts = {"store_samples": 0, "quiet": True,
                **{k: v for k, v in self.options.items() if k not in ("calib", "calib_samples")}}
        Tracer(self.loaded, self.data, TraceOptions(out=path, tflite=tfl, **opts)).run()
        fp = footprint(q.tflite)
        if self.base_footprint is None:
            self.base_footprint = fp
        with open_trace(path) as tr:
            om = tr.output_metrics()
            top1 = float(om["top1_agreement"][0]) if "top1_agreement" in om else math.nan
            o = MixedOutcome(raised, float(om["sqnr_db"][0]), top1,
                             cost(self.base_footprint, fp), path, tfl,
                             time.monotonic() - start)
        self.cache[raised] = o
        return o

    def ranked_groups(self, trace: Path, raised: Raised) -> list[tuple[str, ...]]:
        """Groups worth raising, best first: those of the trace's top culprit, then the ops
        next to the raised ones (regions pay off when contiguous), then the other culprits
        and the ops with the lowest local SQNR."""
        names, _ = trace_op_ranking(trace)
        done = dict(raised)
        near = [r for k in done for r in (*self.graph.group(k)[1:], *self._writers(k))
                if r not in done]
        keys = [k for k in (*names[:1], *near, *names[1:]) if k in self.graph.ops]
        groups: list[tuple[str, ...]] = []
        for k in dict.fromkeys(keys):
            g = self.graph.group(k)
            if any(done.get(m) != PRECISIONS[-1] for m in g) and g not in groups:
                groups.append(g)
        return groups

    def _writers(self, key: str) -> list[str]:
        return [k for k, op in self.graph.ops.items() if key in op.readers]

    def labels(self, trace: Path) -> dict[str, str]:
        """Op key → a readable name, the same in every candidate: the baseline trace's."""
        if not self.names:
            self.names = trace_op_ranking(trace)[1]
        return self.names


def _float_tflite(loaded: Any) -> bytes:
    """The float ``.tflite`` of the model: the file itself, or the converter's float
    conversion of a Keras model (the one ``qdebug trace`` compares with)."""
    from qdebug.tracer.loading import TFLITE

    if loaded.flavour == TFLITE:
        from qdebug.tracer.float_tflite import prepare_float_tflite

        return prepare_float_tflite(bytes(loaded.model)).model
    if not loaded.is_keras:
        raise QdebugError(f"{loaded.source}: --allow int16 quantizes a Keras model or a float "
                          ".tflite with ai-edge-quantizer, not a plain SavedModel",
                          "convert it to a float .tflite and give that as MODEL")
    from qdebug.tracer.convert import convert_float

    return convert_float(loaded.model, [layer.name for layer in loaded.model.layers])


def _calibration(float_bytes: bytes, spec: Any, limit: int) -> list[list[Any]]:
    from qdebug.tracer.data import load_data
    from qdebug.tracer.litert import LiteModel
    from qdebug.tracer.op_view import lite_input_specs

    source = load_data(spec, lite_input_specs(LiteModel(float_bytes, preserve=False)),
                       limit=limit)
    out: list[list[Any]] = []
    for sample in source:
        if len(out) >= limit:
            break
        out.append(list(sample))
    return out


def trace_op_ranking(trace: Path) -> tuple[list[str], dict[str, str]]:
    """Op keys (output tensor names) of a trace, best candidates first: the culprits' ops
    (a layer's op computing its tensor first), then ops by lowest local SQNR; and each key's
    readable name: its layer's (with the op type where the layer has several ops), else the
    op's own."""
    import numpy as np

    from qdebug.store.reader import open_trace

    with open_trace(trace) as tr:
        owned: dict[str, int] = {}
        for o in tr.ops:
            owned[o.layer] = owned.get(o.layer, 0) + 1
        labels = {o.tensor_name: (o.name if not o.layer else o.layer if owned[o.layer] == 1
                                  else f"{o.layer} ({o.op_type})") for o in tr.ops}
        by_name = {o.name: o for o in tr.ops}
        layers = {r.name: r for r in tr.layers}
        keys: list[str] = []
        for c in tr.culprits():
            if c.kind == CulpritKind.FLOAT_ISLAND:
                continue
            if c.layer in by_name:
                keys.append(by_name[c.layer].tensor_name)
            elif c.layer in layers:
                keys += [tr.ops[i].tensor_name for i in reversed(layers[c.layer].ops)]
        m = tr.op_metrics()
        if "local_sqnr_db" in m and tr.ops:
            local = np.asarray(m["local_sqnr_db"], dtype=float)
            order = np.argsort(np.where(np.isfinite(local), local, np.inf), kind="stable")
            keys += [tr.ops[int(i)].tensor_name for i in order if np.isfinite(local[i])]
    return list(dict.fromkeys(keys)), labels


def _pick(tried: list[MixedOutcome], current: MixedOutcome,
          target: Target) -> MixedOutcome | None:
    """The step's choice: the cheapest candidate that meets the target, else the one buying
    the most dB per extra byte (None: none buys ``MIN_GAIN_DB``)."""
    met = [o for o in tried if target.met(o)]
    if met:
        return min(met, key=lambda o: (o.cost.total_bytes, len(o.raised)))
    gaining = [o for o in tried if o.output_sqnr_db >= current.output_sqnr_db + MIN_GAIN_DB]
    if not gaining:
        return None

    def per_byte(o: MixedOutcome) -> float:
        extra = max(o.cost.total_bytes - current.cost.total_bytes, 1)
        return (o.output_sqnr_db - current.output_sqnr_db) / extra

    return max(gaining, key=per_byte)


def _step(
    s: MixedSearcher, current: MixedOutcome, target: Target, allow: Sequence[str], width: int,
    deadline: float, say: Callable[[str], None],
) -> tuple[list[MixedOutcome], bool]:
    """Trace the best-ranked groups at each allowed precision; (outcomes, out of time)."""
    tried: list[MixedOutcome] = []
    groups = s.ranked_groups(current.trace, current.raised)[:width]
    labels = s.labels(current.trace)
    before = dict(current.raised)
    for group in groups:
        for precision in allow:
            if time.monotonic() > deadline:
                return tried, True
            raised = merged(current.raised, group, precision)
            if raised == current.raised or any(o.raised == raised for o in tried):
                continue
            new = [k for k, p in raised if before.get(k) != p]
            try:
                o = s.outcome(raised)
            except QdebugError as exc:  # AEQ refused this recipe: say so, try the next
                say(f"  + {_names(new, labels)} at {precision}: not quantized ({exc})")
                continue
            tried.append(o)
            say(f"  + {_names(new, labels)} at {precision}: {_numbers(o)}")
            if target.met(o):  # a costlier precision, or a later group, is not needed
                return tried, False
    return tried, False


def _everywhere(s: MixedSearcher, current: MixedOutcome,
                say: Callable[[str], None]) -> MixedOutcome | None:
    """The current set with every other op at int16: when no group alone gains, the error
    builds up over many ops, and this says whether int16 can reach the target at all."""
    raised = merged(current.raised, tuple(s.graph.ops), INT16)
    try:
        o = s.outcome(raised)
    except QdebugError as exc:
        say(f"  + every op at int16: not quantized ({exc})")
        return None
    say(f"  + every op at int16: {_numbers(o)}")
    return o


def _trim(s: MixedSearcher, current: MixedOutcome, target: Target, allow: Sequence[str],
          deadline: float, say: Callable[[str], None]) -> MixedOutcome:
    """Once the target is met: lower each raised op in turn, last in execution order first
    (float to int16 where int16 is allowed, else to int8), and keep each lowering that still
    meets the target for fewer bytes; every one verified by a trace."""
    labels = s.labels(current.trace)
    order = [k for k in reversed(s.graph.ops) if k in dict(current.raised)]
    for key in order:
        if time.monotonic() > deadline:
            break
        was = dict(current.raised)[key]
        lower = dict(current.raised)
        if was == FLOAT and INT16 in allow:
            lower[key] = INT16
        else:
            del lower[key]
        try:
            o = s.outcome(tuple(sorted(lower.items())))
        except QdebugError:
            continue
        to = lower.get(key, "int8")
        say(f"  - {labels.get(key, key)} back to {to}: {_numbers(o)}")
        if target.met(o) and o.cost.total_bytes < current.cost.total_bytes:
            current = o
    return current


def search_mixed(
    model: Any,
    data: Any,
    target: Target,
    *,
    allow: Sequence[str] = PRECISIONS,
    max_ops: int = 16,
    time_budget_s: float = 600.0,
    width: int = 3,
    out: Path | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> MixedResult:
    """Greedy search for the cheapest per-op recipe (int16 activations or float for a few
    ops, int8 for the rest) that reaches ``target``.

    Args:
        model: a live Keras model, a path/factory spec, or a float ``.tflite``'s path.
        data: the evaluation data (as for ``qdebug.trace``); calibration: ``calib`` in
            ``options``, else ``data``.
        target: what to reach.
        allow: the precisions ops may be raised to (``int16``, ``float``), tried in order.
        max_ops: most ops raised.
        time_budget_s: stop starting new candidates after this many seconds.
        width: groups tried per step.
        out: where the final trace goes (its recipe beside it as ``.recipe.json``, the
            model AEQ wrote as ``.tflite``).
        progress: called with one line per traced candidate.
        **options: further ``TraceOptions`` fields (samples, trust_model_code, ...).

    Returns:
        The baseline (all int8), the cheapest recipe found, every candidate and the recipe.
    """
    if target.output_sqnr_db is None and target.top1 is None:
        raise QdebugError("no target given", "give --target-output-sqnr DB or --target-top1 F")
    allow = [p for p in PRECISIONS if p in allow]
    if not allow:
        raise QdebugError("nothing to raise ops to", "give --allow int16, float or both")
    say = progress or (lambda _line: None)
    deadline = time.monotonic() + time_budget_s
    with tempfile.TemporaryDirectory(prefix="qdebug-mixed-") as tmp:
        s = MixedSearcher(model, data, Path(tmp), dict(options))
        base = current = s.outcome(())
        everywhere: MixedOutcome | None = None
        say(f"baseline (all int8): {_numbers(base)}")
        stopped = "target" if target.met(base) else ""
        while not stopped:
            if len(current.raised) >= max_ops:
                stopped = "max-ops"
                break
            tried, late = _step(s, current, target, allow, width, deadline, say)
            best = _pick(tried, current, target)
            if best is None and not late and INT16 in allow and everywhere is None:
                everywhere = _everywhere(s, current, say)
                if (everywhere is not None and len(everywhere.raised) <= max_ops
                        and everywhere.output_sqnr_db >= current.output_sqnr_db + MIN_GAIN_DB):
                    best = everywhere  # float steps follow; at the target, trimmed back
            if best is None:
                stopped = "time" if late else "no candidates"
                break
            current = best
            if target.met(current):
                stopped = "target"
        if stopped == "target" and current.raised:
            current = _trim(s, current, target, allow, deadline, say)
        final_path = out or Path(tempfile.mkdtemp(prefix="qdebug-fix-")) / "fixed.h5"
        final_path.parent.mkdir(parents=True, exist_ok=True)
        final = s.outcome(current.raised, out=final_path)
        recipe = recipe_for(current.raised, s.graph)
        final_path.with_suffix(".recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
        float_copy = final_path.with_name(final_path.stem + "-float.tflite")
        float_copy.write_bytes(s.float_bytes)
        names = s.labels(final.trace)
        labels = {k: names.get(k, k) for k in s.graph.ops}  # in execution order
        tried_all = tuple(o for o in s.cache.values() if o.raised)
    return MixedResult(base, final, target.met(final), tried_all,
                       stopped, recipe, labels, float_copy, everywhere)


def _names(keys: Sequence[str], labels: dict[str, str]) -> str:
    return ", ".join(labels.get(k, k) for k in keys)


def _numbers(o: MixedOutcome) -> str:
    return numbers(o, f"; cost {o.cost.describe()}")


def reproduce_command(prefix: str, result: MixedResult, keras: bool) -> str:
    """The ``qdebug trace`` command that makes the final trace again from the recipe."""
    recipe = result.final.trace.with_suffix(".recipe.json")
    quantizer = " --quantizer aeq" if keras else ""
    return f"{prefix}{quantizer} --recipe {shlex.quote(str(recipe))}"


__all__ = ["MIN_GAIN_DB", "MixedOutcome", "MixedResult", "MixedSearcher", "reproduce_command",
           "search_mixed", "trace_op_ranking"]
