"""Per-layer float ranges from a Keras probe, and how much of other data falls outside them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

#: Values kept per layer for percentiles.
_KEEP = 50_000


@dataclass
class LayerRange:
    """Float range of one layer's output over a data set."""

    lo: float = np.inf
    hi: float = -np.inf
    kept: list[np.ndarray] = field(default_factory=list)
    n_kept: int = 0

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if not v.size:
            return
        self.lo = min(self.lo, float(v.min()))
        self.hi = max(self.hi, float(v.max()))
        if self.n_kept < _KEEP:
            take = v[: _KEEP - self.n_kept]
            self.kept.append(take)
            self.n_kept += take.size

    @property
    def absmax(self) -> float:
        return max(abs(self.lo), abs(self.hi)) if np.isfinite(self.lo) else 0.0

    def abs_quantile(self, q: float) -> float:
        if not self.kept:
            return 0.0
        return float(np.quantile(np.abs(np.concatenate(self.kept)), q))


def _probed(
    probe: object, samples: list[list[np.ndarray]], size: int
) -> Iterator[dict[str, np.ndarray]]:
    """Layer values of ``samples``, a fixed-size (padded) batch per probe call."""
    for i in range(0, len(samples), size):
        chunk = samples[i : i + size]
        padded = chunk + [chunk[-1]] * (size - len(chunk))
        inputs = [np.stack([s[j] for s in padded]) for j in range(len(chunk[0]))]
        values = probe(inputs)  # type: ignore[operator]
        yield {name: np.asarray(v)[: len(chunk)] for name, v in values.items()}


def layer_ranges(probe: object, samples: list[list[np.ndarray]], batch: int = 16) -> dict[
    str, LayerRange
]:
    """Each layer's float range over ``samples`` (via ``probe``, a ``tracer.graph.Probe``)."""
    out: dict[str, LayerRange] = {}
    for values in _probed(probe, samples, batch):
        for name, v in values.items():
            out.setdefault(name, LayerRange()).add(np.asarray(v))
    return out


@dataclass(frozen=True)
class Coverage:
    """How one layer's values on evaluation data compare with its calibrated range."""

    value_share: float
    """Share of values outside the range."""
    sample_share: float
    """Share of samples with at least one value outside it."""
    overshoot: float
    """Largest |value| beyond the range, in units of the range's width."""


def outside_share(
    probe: object, samples: list[list[np.ndarray]], calib: dict[str, LayerRange], batch: int = 16
) -> dict[str, Coverage]:
    """Per layer, how much of ``samples``' values fall outside the calibrated range."""
    outside: dict[str, int] = {}
    total: dict[str, int] = {}
    hit: dict[str, int] = {}
    over: dict[str, float] = {}
    n = 0
    for values in _probed(probe, samples, batch):
        n += len(next(iter(values.values())))
        for name, v in values.items():
            r = calib.get(name)
            if r is None or not np.isfinite(r.lo):
                continue
            a = np.asarray(v, dtype=np.float64).reshape(len(v), -1)
            # half an int8 step of slack: such values round to the limit anyway
            width = max(r.hi - r.lo, 1e-12)
            slack = width / 510.0
            out = (a < r.lo - slack) | (a > r.hi + slack)
            outside[name] = outside.get(name, 0) + int(np.count_nonzero(out))
            total[name] = total.get(name, 0) + a.size
            hit[name] = hit.get(name, 0) + int(np.count_nonzero(out.any(axis=1)))
            beyond = max(float(a.max()) - r.hi, r.lo - float(a.min()), 0.0) / width
            over[name] = max(over.get(name, 0.0), beyond)
    return {
        k: Coverage(outside[k] / total[k], hit[k] / max(n, 1), over[k])
        for k in outside
        if total[k]
    }
