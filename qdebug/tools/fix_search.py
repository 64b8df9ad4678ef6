"""The fix loop: which layers to keep in float so that the INT8 model reaches a target.

A greedy search guided by the trace's culprits: at each step the best-ranked culprits of the
current trace (layers that inject error, amplify it, or clip) are tried, each verified by
re-tracing the model with it added to the float set, and the one that raises the output SQNR
most is kept. It stops at the target or at the budget (layers, time). ``one_at_a_time`` is the
sensitivity analysis: each layer alone in float. Runs on the Python API; the CLI prints it.
"""

from __future__ import annotations

import math
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from qdebug.analysis.ranking import lowest
from qdebug.errors import ConversionError, QdebugError
from qdebug.store.schema import STATUS_MATCHED, CulpritKind
from qdebug.tools.precision import Cost, cost_of_traces


@dataclass(frozen=True)
class Outcome:
    """The output numbers of one traced candidate."""

    keep_float: tuple[str, ...]
    """Layers kept in float."""
    output_sqnr_db: float
    """SQNR of the first output (dB)."""
    top1: float
    """Top-1 agreement of the first output (NaN for non-classifiers)."""
    trace: Path
    """The trace of this candidate."""
    seconds: float
    """Time it took to trace it."""


@dataclass(frozen=True)
class FixResult:
    """What ``search_fix`` found."""

    baseline: Outcome
    final: Outcome
    reached: bool
    """Whether ``final`` meets the target."""
    tried: tuple[Outcome, ...]
    """Every candidate traced, in order."""
    stopped: str
    """Why the search ended: ``target``, ``max-float-layers``, ``time`` or ``no candidates``."""
    command: str
    """The ``qdebug trace`` command that reproduces the final trace."""
    cost: Cost | None = None
    """What the final model costs beside the baseline (None: a trace without its model)."""

    @property
    def keep_float(self) -> tuple[str, ...]:
        """The layers to keep in float."""
        return self.final.keep_float


class Numbers(Protocol):
    """A traced candidate's output numbers (``Outcome``, ``MixedOutcome``)."""

    @property
    def output_sqnr_db(self) -> float: ...

    @property
    def top1(self) -> float: ...


@dataclass(frozen=True)
class Target:
    """Output SQNR in dB and/or top-1 agreement to reach."""

    output_sqnr_db: float | None = None
    top1: float | None = None

    def met(self, o: Numbers) -> bool:
        """Whether ``o`` reaches every given target."""
        ok = True
        if self.output_sqnr_db is not None:
            ok = ok and o.output_sqnr_db >= self.output_sqnr_db
        if self.top1 is not None:
            ok = ok and math.isfinite(o.top1) and o.top1 >= self.top1
        return ok

    def describe(self) -> str:
        """The target as text."""
        parts = []
        if self.output_sqnr_db is not None:
            parts.append(f"output SQNR ≥ {self.output_sqnr_db:g} dB")
        if self.top1 is not None:
            parts.append(f"top-1 agreement ≥ {self.top1:g}")
        return " and ".join(parts)


@dataclass
class Searcher:
    """Traces a model with a given float set; caches outcomes by set.

    Args:
        model: a live Keras model or a path/factory spec (as for ``qdebug.trace``).
        data: the evaluation data.
        workdir: where candidate traces go.
        options: further ``TraceOptions`` fields (calib, samples, ...).
    """

    model: Any
    data: Any
    workdir: Path
    options: dict[str, Any] = field(default_factory=dict)
    cache: dict[frozenset[str], Outcome] = field(default_factory=dict)
    loaded: Any = None

    def outcome(self, keep: Sequence[str], out: Path | None = None) -> Outcome:
        """Trace with ``keep`` in float (cached)."""
        key = frozenset(keep)
        if key in self.cache and out is None:
            return self.cache[key]
        from qdebug.store.reader import open_trace
        from qdebug.tracer.pipeline import TraceOptions, Tracer

        if self.loaded is None:
            self.loaded = load_for_search(self.model, self.options.get("trust_model_code", False))
        path = out or self.workdir / f"cand{len(self.cache)}.h5"
        start = time.monotonic()
        opts = {"store_samples": 0, "quiet": True, **self.options}
        Tracer(self.loaded, self.data, TraceOptions(out=path, keep_float=tuple(keep), **opts)).run()
        with open_trace(path) as tr:
            om = tr.output_metrics()
            top1 = float(om["top1_agreement"][0]) if "top1_agreement" in om else math.nan
            o = Outcome(tuple(keep), float(om["sqnr_db"][0]), top1, path,
                        time.monotonic() - start)
        self.cache[key] = o
        return o

    def ranked_candidates(self, trace: Path, exclude: Sequence[str]) -> list[str]:
        """Layers of ``trace`` worth keeping in float, best first: the top culprit, then the
        measured neighbours of layers already in float (an op kept in float still has its
        output re-quantized, so float regions pay off when they are contiguous), then the other
        culprits by score and the layers with the largest local error."""
        import numpy as np

        from qdebug.store.reader import open_trace

        with open_trace(trace) as tr:
            names = [c.layer for c in tr.culprits() if c.kind != CulpritKind.FLOAT_ISLAND]
            m = tr.layer_metrics()
            if "local_sqnr_db" in m:
                local = np.asarray(m["local_sqnr_db"], dtype=float)
                order = np.argsort(np.where(np.isfinite(local), local, np.inf))
                names += [tr.layers[int(i)].name for i in order if np.isfinite(local[i])]
            measured = [
                r.name for r in tr.layers if r.status == STATUS_MATCHED and not r.float_island
            ]
        neighbours: list[str] = []
        for i, n in enumerate(measured):
            if n in exclude:
                continue
            if (i > 0 and measured[i - 1] in exclude) or (
                i + 1 < len(measured) and measured[i + 1] in exclude
            ):
                neighbours.append(n)
        ordered = names[:1] + neighbours + names[1:]
        seen: list[str] = []
        for n in ordered:
            if n not in seen and n not in exclude and n in measured:
                seen.append(n)
        return seen


def load_for_search(model: Any, trust: bool) -> Any:
    """The model as the tracer takes it (TensorFlow imported)."""
    from qdebug.tracer.loading import load_or_wrap
    from qdebug.tracer.tfenv import import_tf

    import_tf()
    return load_or_wrap(model, trust)


def search_fix(
    model: Any,
    data: Any,
    target: Target,
    *,
    max_float_layers: int = 4,
    time_budget_s: float = 600.0,
    width: int = 3,
    out: Path | None = None,
    command_prefix: str = "qdebug trace MODEL --data DATA",
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> FixResult:
    """Greedy search for a small set of layers to keep in float that reaches ``target``.

    Args:
        model: a live Keras model or a path/factory spec.
        data: the evaluation data (as for ``qdebug.trace``).
        target: what to reach.
        max_float_layers: most layers kept in float.
        time_budget_s: stop starting new candidates after this many seconds.
        width: candidates tried per step (the best-ranked culprits of the current trace).
        out: where the final trace is written (default: a temporary file).
        command_prefix: the start of the reproducing command.
        progress: called with one line per traced candidate.
        **options: further ``TraceOptions`` fields (calib, samples, calib_samples, ...).

    Returns:
        The baseline, the best set found, every candidate tried and the command to reproduce.
    """
    if target.output_sqnr_db is None and target.top1 is None:
        raise QdebugError("no target given", "give --target-output-sqnr DB or --target-top1 F")
    say = progress or (lambda _line: None)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qdebug-fix-") as tmp:
        s = Searcher(model, data, Path(tmp), dict(options))
        base = s.outcome(())
        say(f"baseline: {numbers(base)}")
        current = base
        stopped = "target" if target.met(base) else ""
        while not stopped:
            if len(current.keep_float) >= max_float_layers:
                stopped = "max-float-layers"
                break
            cands = s.ranked_candidates(current.trace, current.keep_float)
            best: Outcome | None = None
            tried = 0
            for layer in cands:
                if tried >= width:
                    break
                if time.monotonic() - start > time_budget_s:
                    stopped = "time"
                    break
                try:
                    o = s.outcome((*current.keep_float, layer))
                except ConversionError:
                    continue  # no op of its own (folded into a neighbour)
                tried += 1
                say(f"  + {layer}: {numbers(o)}")
                if best is None or _better(o, best, target):
                    best = o
                if target.met(o):
                    break
            if stopped:
                break
            if best is None or not _better(best, current, target):
                stopped = "no candidates"
                break
            current = best
            if target.met(current):
                stopped = "target"
        final_path = out or Path(tempfile.mkdtemp(prefix="qdebug-fix-")) / "fixed.h5"
        final_path.parent.mkdir(parents=True, exist_ok=True)
        final = s.outcome(current.keep_float, out=final_path)
        tried_all = tuple(o for o in s.cache.values() if o.keep_float)
        spent = cost_of_traces(base.trace, final.trace)
    command = command_prefix
    if final.keep_float:
        command += " --keep-float " + shlex.quote(",".join(final.keep_float))
    return FixResult(
        baseline=base,
        final=final,
        reached=target.met(final),
        tried=tried_all,
        stopped=stopped,
        command=command,
        cost=spent,
    )


def _better(a: Outcome, b: Outcome, target: Target) -> bool:
    """Whether ``a`` beats ``b`` on what the target asks for: the output SQNR when it has an
    SQNR target, else top-1 agreement first and the SQNR to break ties."""
    if target.output_sqnr_db is not None:
        return a.output_sqnr_db > b.output_sqnr_db
    ta = a.top1 if math.isfinite(a.top1) else 0.0
    tb = b.top1 if math.isfinite(b.top1) else 0.0
    if ta != tb:
        return ta > tb
    return a.output_sqnr_db > b.output_sqnr_db


def numbers(o: Outcome | Any, extra: str = "") -> str:
    """A candidate's output numbers (any record with ``output_sqnr_db``, ``top1`` and
    ``seconds``), ``extra`` and its time, as the progress lines say them."""
    top1 = f", top-1 agreement {o.top1:.3f}" if math.isfinite(o.top1) else ""
    return f"output SQNR {o.output_sqnr_db:.1f} dB{top1}{extra} ({o.seconds:.1f} s)"


def worst_accumulated(trace: Path) -> list[str]:
    """Measured layers, lowest accumulated SQNR first (the naive choice of what to keep in
    float, which ``search_fix`` is compared against)."""
    import numpy as np

    from qdebug.store.reader import open_trace

    with open_trace(trace) as tr:
        sq = np.asarray(tr.layer_metrics()["sqnr_db"], dtype=float)
        return [tr.layers[i].name for i in lowest(tr.layers, sq)
                if tr.layers[i].status == STATUS_MATCHED and np.isfinite(sq[i])
                and not tr.layers[i].float_island]


def __getattr__(name: str) -> Any:
    """``Sensitivity`` and ``one_at_a_time`` lived here before ``qdebug.tools.sensitivity``."""
    if name in ("Sensitivity", "one_at_a_time"):
        from qdebug.tools import sensitivity

        return getattr(sensitivity, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FixResult",
    "Numbers",
    "Outcome",
    "Searcher",
    "Target",
    "load_for_search",
    "numbers",
    "search_fix",
    "worst_accumulated",
]
