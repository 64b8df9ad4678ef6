"""User-defined metrics (``qdebug trace --metric`` and ``--output-metric``): loaded when tracing,
computed while tracing, and stored in the trace with their definition, so that every later
report shows them without the user's code. Reading a trace never imports anything it names.

A ``--metric`` is a ``qdebug.metrics.Metric``, a function ``fn(stats, scale) -> array`` of the
pooled statistics, or, with ``fn.kind = "per_sample"``, a function ``fn(float, quantized) ->
float`` of one sample's tensors. An ``--output-metric`` is ``fn(float_outputs,
quantized_outputs) -> float`` over the model's outputs, per sample (the default) or, with
``fn.kind = "whole_set"``, once over every sample (docs/metrics.md "Custom metrics"). A function
may carry a ``unit`` attribute, and its docstring's first line is its definition.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from qdebug import metrics
from qdebug.errors import QdebugError

#: Entry-point group of installed metrics: ``--metric NAME`` loads the entry point NAME.
ENTRY_POINT_GROUP = "qdebug.metrics"
#: Where a trace keeps them, under ``/metrics/layers``, ``/metrics/outputs``, ``/metrics/ops``
#: and (output metrics) ``/metrics/model``.
GROUP = "custom"
#: Per metric and tensor, how many samples a per-sample metric's mean is over (schema 1.4).
SAMPLES_GROUP = "custom_samples"
#: ``kind`` of a metric of the pooled sufficient statistics (traces before 1.4 store no kind).
POOLED = "pooled"
#: ``kind`` of a function of one sample's arrays, averaged over the samples.
PER_SAMPLE = "per_sample"
#: ``kind`` of an output metric called once with the outputs of every sample.
WHOLE_SET = "whole_set"
#: The parts of a trace that hold custom metrics, and the option each comes from.
PARTS = ("layers", "outputs", "ops", "model")


@dataclass(frozen=True)
class UserMetric:
    """A metric to compute while tracing, and where it came from."""

    metric: metrics.Metric
    source: str
    """What was given: ``module:function``, ``file.py:function`` or ``entry point NAME``."""


@dataclass(frozen=True)
class StoredMetric:
    """A custom metric as a trace holds it: values only, never code."""

    name: str
    unit: str
    definition: str
    source: str
    values: np.ndarray
    """One value per layer (or output, op; one for the model), NaN where it does not apply."""
    error: str = ""
    """Why the values are NaN when computing the metric failed while tracing."""
    kind: str = POOLED
    """``pooled``, ``per_sample`` (a mean over samples) or ``whole_set``."""
    samples: np.ndarray | None = None
    """Per value, the number of samples its mean is over (per-sample metrics; None else)."""


@dataclass(frozen=True)
class ArrayMetric:
    """A user function of arrays: one sample's (float, quantized) tensors (``--metric`` with
    ``kind = "per_sample"``), or the model's outputs (``--output-metric``)."""

    name: str
    unit: str
    definition: str
    source: str
    fn: Callable[..., Any]
    kind: str
    """``per_sample`` or, for output metrics, ``whole_set``."""


@dataclass(frozen=True)
class UserMetrics:
    """Every user metric of one trace, by how it is computed."""

    pooled: tuple[UserMetric, ...] = ()
    """Functions of the pooled statistics, computed when the trace is written."""
    per_sample: tuple[ArrayMetric, ...] = ()
    """Functions of one sample's tensors, on every layer, op and output."""
    outputs: tuple[ArrayMetric, ...] = ()
    """Functions of the model's outputs (``--output-metric``)."""

    @property
    def on_arrays(self) -> bool:
        """Whether the tracer has to hand arrays to user code while it runs."""
        return bool(self.per_sample or self.outputs)


def _fail(spec: str, why: str, hint: str = "", option: str = "--metric") -> QdebugError:
    return QdebugError(
        f"{option} {spec}: {why}",
        hint or "give module:function or file.py:function (docs/metrics.md, Custom metrics)",
    )


def _import(spec: str, option: str = "--metric") -> Any:
    target, _, attr = spec.rpartition(":")
    if not target or not attr.isidentifier():
        raise _fail(spec, "not of the form module:function, file.py:function or an entry point",
                    option=option)
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise _fail(spec, f"{path}: no such file", option=option)
        name = f"qdebug_metric_{path.stem}_{abs(hash(path.resolve()))}"
        mspec = importlib.util.spec_from_file_location(name, path)
        if mspec is None or mspec.loader is None:
            raise _fail(spec, f"{path} cannot be imported as Python", option=option)
        module = importlib.util.module_from_spec(mspec)
        sys.modules[name] = module
        try:
            mspec.loader.exec_module(module)
        except Exception as exc:
            raise _fail(spec, f"importing it failed: {type(exc).__name__}: {exc}",
                        option=option) from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise _fail(spec, f"cannot import {target!r} ({exc})",
                        "make the module importable (PYTHONPATH) or give file.py:function",
                        option) from exc
    if not hasattr(module, attr):
        raise _fail(spec, f"{target} has no {attr!r}", option=option)
    return getattr(module, attr)


def _entry_point(name: str, option: str = "--metric") -> Any:
    found = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
             if ep.name == name]
    if not found:
        raise _fail(name, f"no installed metric of that name (entry points {ENTRY_POINT_GROUP})",
                    option=option)
    return found[0].load()


def as_metric(obj: Any, spec: str) -> metrics.Metric:
    """``obj`` (a ``Metric`` or a function of the statistics) as a ``Metric``."""
    if isinstance(obj, metrics.Metric):
        m = obj
    elif callable(obj):
        doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
        needs = tuple(getattr(obj, "needs", metrics.ACCUMULATED_STATS))
        m = metrics.Metric(
            str(getattr(obj, "metric_name", getattr(obj, "__name__", ""))),
            str(getattr(obj, "unit", "")),
            doc[0] if doc else spec,
            obj,
            needs,
        )
    else:
        raise _fail(spec, f"is a {type(obj).__name__}, not a function or a qdebug Metric")
    if not m.name.isidentifier():
        raise _fail(spec, f"its name {m.name!r} is not an identifier")
    if m.name in metrics.METRICS:
        raise _fail(spec, f"{m.name!r} is a built-in metric", "give the function another name")
    unknown = [s for s in m.needs if s not in metrics.STATS]
    if unknown:
        raise _fail(spec, f"needs unknown statistics {unknown}",
                    f"statistics are {', '.join(metrics.STATS)}")
    _try(m, spec)
    return m


def _try(m: metrics.Metric, spec: str) -> None:
    """Run the metric on made-up statistics of three tensors, so a broken one fails before the
    trace, not after it."""
    stats = {s: np.array([1.0, 2.0, 4.0]) for s in metrics.STATS}
    try:
        out = np.asarray(m.compute(stats, np.array([0.1, np.nan, 0.5])), dtype=np.float64)
    except Exception as exc:
        raise _fail(spec, f"failed on test statistics: {type(exc).__name__}: {exc}") from exc
    if out.shape != (3,):
        raise _fail(spec, f"returned shape {out.shape} for 3 tensors; return one value each")


def _resolve(spec: Any, option: str) -> tuple[Any, str, str]:
    """(the object, where it came from, how to name it in an error) of one option value."""
    if isinstance(spec, str):
        obj = _import(spec, option) if ":" in spec else _entry_point(spec, option)
        return obj, spec if ":" in spec else f"entry point {spec}", spec
    name = str(getattr(spec, "name", None) or getattr(spec, "__name__", "metric"))
    module = getattr(spec, "__module__", "") or ""
    return spec, f"{module}:{name}".lstrip(":"), name


def load_metric(spec: str | metrics.Metric | Callable[..., Any]) -> UserMetric:
    """A ``--metric`` value (``module:function``, ``file.py:function``, an entry point name of
    group ``qdebug.metrics``), or a ``Metric`` / function given in Python."""
    obj, source, shown = _resolve(spec, "--metric")
    return UserMetric(as_metric(obj, shown), source)


def load_metrics(specs: Sequence[Any]) -> list[UserMetric]:
    """Every ``--metric``, refusing two of one name."""
    out = [load_metric(s) for s in specs]
    _unique([u.metric.name for u in out])
    return out


def _unique(names: Sequence[str]) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise QdebugError(f"--metric: two metrics named {dup[0]!r}", "give each metric once")


def _array_metric(obj: Any, source: str, shown: str, option: str, kinds: tuple[str, ...]
                  ) -> ArrayMetric:
    if not callable(obj):
        raise _fail(shown, f"is a {type(obj).__name__}, not a function", option=option)
    kind = str(getattr(obj, "kind", kinds[0]))
    if kind not in kinds:
        raise _fail(shown, f"its kind {kind!r} is not one of {', '.join(kinds)}", option=option)
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    name = str(getattr(obj, "metric_name", getattr(obj, "__name__", "")))
    if not name.isidentifier():
        raise _fail(shown, f"its name {name!r} is not an identifier", option=option)
    if name in metrics.METRICS:
        raise _fail(shown, f"{name!r} is a built-in metric", "give the function another name",
                    option)
    return ArrayMetric(name, str(getattr(obj, "unit", "")), doc[0] if doc else shown, source,
                       obj, kind)


def _try_arrays(m: ArrayMetric, shown: str) -> None:
    """Run a per-sample metric on one made-up sample of four values, so a broken one fails
    before the trace, not after it."""
    f = np.array([[0.5, -1.0, 2.0, 0.0]], dtype=np.float32)
    q = np.array([[0.5, -0.9, 2.1, 0.0]], dtype=np.float32)
    f.flags.writeable = q.flags.writeable = False  # as the tracer hands its own arrays
    try:
        as_number(m.fn(f, q))
    except Exception as exc:
        raise _fail(shown, f"failed on a test sample: {type(exc).__name__}: {exc}",
                    "it gets one sample's float and quantized arrays, float32 of shape (1, ...), "
                    "and returns one number (docs/metrics.md, Custom metrics)") from exc


def as_number(value: Any) -> float:
    """What a user function returned, as one float (refused unless it is one number)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != 1:
        raise ValueError(f"returned {arr.size} values of shape {arr.shape}, not one number")
    return float(arr.reshape(()))


def load_user_metrics(metric_specs: Sequence[Any] = (), output_specs: Sequence[Any] = ()
                      ) -> UserMetrics:
    """Every ``--metric`` (a function of the pooled statistics, or one with ``kind =
    "per_sample"``) and ``--output-metric``, refusing two of one name among them all. A
    ``UserMetric`` or ``ArrayMetric`` (loaded already, as the CLI does before TensorFlow loads)
    is taken as it is."""
    pooled: list[UserMetric] = []
    per_sample: list[ArrayMetric] = []
    for spec in metric_specs:
        if isinstance(spec, UserMetric):
            pooled.append(spec)
            continue
        if isinstance(spec, ArrayMetric):
            per_sample.append(spec)
            continue
        obj, source, shown = _resolve(spec, "--metric")
        if getattr(obj, "kind", POOLED) == POOLED or isinstance(obj, metrics.Metric):
            pooled.append(UserMetric(as_metric(obj, shown), source))
            continue
        m = _array_metric(obj, source, shown, "--metric", (PER_SAMPLE, POOLED))
        _try_arrays(m, shown)
        per_sample.append(m)
    outputs = []
    for spec in output_specs:
        if isinstance(spec, ArrayMetric):
            outputs.append(spec)
            continue
        obj, source, shown = _resolve(spec, "--output-metric")
        outputs.append(_array_metric(obj, source, shown, "--output-metric",
                                     (PER_SAMPLE, WHOLE_SET)))
    _unique([u.metric.name for u in pooled] + [m.name for m in (*per_sample, *outputs)])
    return UserMetrics(tuple(pooled), tuple(per_sample), tuple(outputs))


def compute(user: Sequence[UserMetric], sums: Mapping[str, np.ndarray],
            scale: np.ndarray) -> dict[str, tuple[UserMetric, np.ndarray, str]]:
    """Each metric on pooled statistics: (metric, one value per tensor, error). A metric that
    fails, or returns the wrong shape, gets NaN and the error: a trace is never lost to it."""
    out: dict[str, tuple[UserMetric, np.ndarray, str]] = {}
    width = len(scale)
    for u in user:
        m = u.metric
        values, error = np.full(width, np.nan), ""
        if all(k in sums for k in m.needs):
            try:
                with np.errstate(all="ignore"):
                    values = np.asarray(m.compute(sums, scale), dtype=np.float64).reshape(width)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
        out[m.name] = (u, values, error)
    return out


def write(group: Any, user: Sequence[UserMetric], sums: Mapping[str, np.ndarray],
          scale: np.ndarray) -> None:
    """Each metric of the pooled statistics, computed (``compute``) and stored
    (``write_stored``)."""
    write_stored(group, [
        StoredMetric(name, u.metric.unit, u.metric.description, u.source, values, error)
        for name, (u, values, error) in compute(user, sums, scale).items()
    ])


def write_stored(group: Any, stored: Sequence[StoredMetric]) -> None:
    """``<group>/custom/<name>``: float64 (width,), attributes ``kind``, ``unit``,
    ``definition``, ``source`` and, when computing it failed, ``error``; for a mean over
    samples, ``<group>/custom_samples/<name>``: int64 (width,), the samples of each mean."""
    if not stored:
        return
    g = group.require_group(GROUP)
    for m in stored:
        ds = g.create_dataset(m.name, data=np.asarray(m.values, dtype=np.float64))
        ds.attrs["kind"] = m.kind
        ds.attrs["unit"] = m.unit
        ds.attrs["definition"] = m.definition
        ds.attrs["source"] = m.source
        if m.error:
            ds.attrs["error"] = m.error
        if m.samples is not None:
            group.require_group(SAMPLES_GROUP).create_dataset(
                m.name, data=np.asarray(m.samples, dtype=np.int64))


def merge_parts(traces: Sequence[Any]) -> dict[str, list[StoredMetric]]:
    """The custom metrics of every part (``merge_stored``) of a trace merged from the shard
    traces ``traces`` (``qdebug.store.reader.Trace``, in sample order), for
    ``TraceWriter.add_custom``."""
    t0 = traces[0]
    widths = {"layers": len(t0.layers), "outputs": len(t0.outputs),
              "ops": len(t0.ops or ()), "model": 1}
    return {part: merge_stored([t.custom_metrics(part) for t in traces], width)
            for part, width in widths.items() if width}


def merge_stored(shards: Sequence[Mapping[str, StoredMetric]], width: int) -> list[StoredMetric]:
    """The custom metrics of a trace merged from ``shards`` (in sample order, each
    ``Trace.custom_metrics(part)``). A mean over samples merges exactly, weighted by each
    shard's samples; a metric of the pooled statistics or of the whole set needs its function
    again, so it is kept as NaN with the reason (and, for the whole set, each shard's value)."""
    names = list(dict.fromkeys(n for s in shards for n in s))
    out = []
    for name in names:
        present = [s[name] for s in shards if name in s]
        first = present[0]
        nan = np.full(width, np.nan)
        if len(present) < len(shards):
            error = f"only {len(present)} of {len(shards)} shards have it"
            out.append(replace(first, values=nan, samples=None, error=error))
        elif first.kind == PER_SAMPLE and all(m.samples is not None for m in present):
            out.append(_weighted(first, present, width))
        else:
            out.append(replace(first, values=nan, samples=None,
                               error=_unmergeable(first, present)))
    return out


def _weighted(first: StoredMetric, parts: Sequence[StoredMetric], width: int) -> StoredMetric:
    total, count = np.zeros(width), np.zeros(width, dtype=np.int64)
    for m in parts:
        got = np.asarray(m.samples, dtype=np.float64).reshape(width)
        # a stranger's shard: a count that is no count weighs nothing
        n = np.where(np.isfinite(got) & (got >= 0) & (got < 2**53), got, 0).astype(np.int64)
        total += np.where(n > 0, np.nan_to_num(m.values * n, nan=0.0), 0.0)
        count += n
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    errors = list(dict.fromkeys(m.error for m in parts if m.error))
    return replace(first, values=values, samples=count, error="; ".join(errors)[:300])


def _unmergeable(first: StoredMetric, parts: Sequence[StoredMetric]) -> str:
    if first.kind == WHOLE_SET:
        shown = ", ".join(f"{float(m.values[0]):.6g}" for m in parts)
        return (f"a whole-set metric is not a mean over samples: the merged value needs the "
                f"function (the shards' values: {shown})")[:300]
    return ("a metric of the pooled statistics needs its function again after a merge: "
            "compute it from Trace.layer_pooled_stats()")
