"""User-defined metrics (``qdebug trace --metric``): loaded when tracing, computed from the pooled
sufficient statistics, and stored in the trace with their definition, so that every later
report shows them without the user's code. Reading a trace never imports anything it names.

A metric is a ``qdebug.metrics.Metric``, or a function ``fn(stats, scale) -> array`` of the
pooled statistics (see docs/metrics.md "Custom metrics"); a function may carry ``unit`` and
``needs`` attributes, and its docstring's first line is its definition.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdebug import metrics
from qdebug.errors import QdebugError

#: Entry-point group of installed metrics: ``--metric NAME`` loads the entry point NAME.
ENTRY_POINT_GROUP = "qdebug.metrics"
#: Where a trace keeps them, under ``/metrics/layers`` and ``/metrics/outputs``.
GROUP = "custom"


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
    """One value per layer (or output), NaN where it does not apply."""
    error: str = ""
    """Why the values are NaN when computing the metric failed while tracing."""


def _fail(spec: str, why: str, hint: str = "") -> QdebugError:
    return QdebugError(
        f"--metric {spec}: {why}",
        hint or "give module:function or file.py:function (docs/metrics.md, Custom metrics)",
    )


def _import(spec: str) -> Any:
    target, _, attr = spec.rpartition(":")
    if not target or not attr.isidentifier():
        raise _fail(spec, "not of the form module:function, file.py:function or an entry point")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise _fail(spec, f"{path}: no such file")
        name = f"qdebug_metric_{path.stem}_{abs(hash(path.resolve()))}"
        mspec = importlib.util.spec_from_file_location(name, path)
        if mspec is None or mspec.loader is None:
            raise _fail(spec, f"{path} cannot be imported as Python")
        module = importlib.util.module_from_spec(mspec)
        sys.modules[name] = module
        try:
            mspec.loader.exec_module(module)
        except Exception as exc:
            raise _fail(spec, f"importing it failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise _fail(spec, f"cannot import {target!r} ({exc})",
                        "make the module importable (PYTHONPATH) or give file.py:function") from exc
    if not hasattr(module, attr):
        raise _fail(spec, f"{target} has no {attr!r}")
    return getattr(module, attr)


def _entry_point(name: str) -> Any:
    found = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
             if ep.name == name]
    if not found:
        raise _fail(name, f"no installed metric of that name (entry points {ENTRY_POINT_GROUP})")
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


def load_metric(spec: str | metrics.Metric | Callable[..., Any]) -> UserMetric:
    """A ``--metric`` value (``module:function``, ``file.py:function``, an entry point name of
    group ``qdebug.metrics``), or a ``Metric`` / function given in Python."""
    if isinstance(spec, str):
        obj = _import(spec) if ":" in spec else _entry_point(spec)
        source = spec if ":" in spec else f"entry point {spec}"
        return UserMetric(as_metric(obj, spec), source)
    name = getattr(spec, "name", None) or getattr(spec, "__name__", "metric")
    module = getattr(spec, "__module__", "") or ""
    return UserMetric(as_metric(spec, str(name)), f"{module}:{name}".lstrip(":"))


def load_metrics(specs: Sequence[Any]) -> list[UserMetric]:
    """Every ``--metric``, refusing two of one name."""
    out = [load_metric(s) for s in specs]
    names = [u.metric.name for u in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise QdebugError(f"--metric: two metrics named {dup[0]!r}", "give each metric once")
    return out


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
    """``<group>/custom/<name>``: float64 (width,), attributes ``unit``, ``definition``,
    ``source`` and, when computing it failed, ``error``."""
    if not user:
        return
    g = group.require_group(GROUP)
    for name, (u, values, error) in compute(user, sums, scale).items():
        ds = g.create_dataset(name, data=values)
        ds.attrs["unit"] = u.metric.unit
        ds.attrs["definition"] = u.metric.description
        ds.attrs["source"] = u.source
        if error:
            ds.attrs["error"] = error
