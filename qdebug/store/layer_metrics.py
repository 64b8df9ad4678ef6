"""A typed view of the pooled metrics of every layer (``Trace.typed_layer_metrics``): one
named array per metric (shape (layers,), NaN where a layer has no tensor or the trace lacks the
metric), instead of a dict read by ``"sqnr_db"`` string keys. Definitions: docs/metrics.md."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class LayerMetrics:
    """Pooled metrics of every layer, in the layer table's order."""

    sqnr_db: np.ndarray
    """The SQNR of the error the layer's tensor carries, all of it (dB)."""
    rmse_lsb: np.ndarray
    """√(Σ(f−q)²/n) / scale (LSB; NaN for a float tensor)."""
    mse: np.ndarray
    max_abs_error: np.ndarray
    mean_error: np.ndarray
    """Σ(q−f)/n (bias)."""
    cosine: np.ndarray
    saturation: np.ndarray
    """Share of values at a range end that does not represent 0."""
    clip_fraction: np.ndarray
    """Share of float values outside the representable range."""
    clip_share: np.ndarray
    """Share of Σ(f−q)² from clipped values."""
    local_sqnr_db: np.ndarray
    """The SQNR of the error the layer injects itself (dB)."""
    local_rmse_lsb: np.ndarray
    local_mse: np.ndarray
    propagated_mse: np.ndarray
    local_share: np.ndarray
    """Σ(q−f̂)² / (Σ(q−f̂)² + Σ(f̂−f(x))²): the share of the error born here."""
    gain: np.ndarray
    """√(Σ(f̂−f(x))² / Σ(x̂−x)²): how much the layer amplifies the error it receives."""
    weight_sqnr_db: np.ndarray
    """The weights' SQNR (dB; traces with the analysis)."""
    range_use: np.ndarray
    """Share of the layer's integer range its raw values spanned (traces with the analysis)."""
    present: tuple[str, ...] = ()
    """The metrics the trace has, in the order it lists them (``Trace.layer_metrics``)."""

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], n: int) -> LayerMetrics:
        """The view of ``Trace.layer_metrics()``'s arrays for ``n`` layers; a metric the
        trace lacks is all NaN."""
        names = [f.name for f in fields(cls) if f.name != "present"]
        values = {k: np.asarray(arrays[k]) if k in arrays else np.full(n, np.nan)
                  for k in names}
        return cls(**values, present=tuple(k for k in arrays if k in values))

    @classmethod
    def of(cls, m: LayerMetrics | Mapping[str, np.ndarray], n: int) -> LayerMetrics:
        """``m`` as the record: itself, or the view of a dict of arrays for ``n`` rows."""
        return m if isinstance(m, LayerMetrics) else cls.from_arrays(m, n)

    def take(self, rows: np.ndarray) -> LayerMetrics:
        """The metrics of the rows ``rows`` indexes only (e.g. the measured ops' rows)."""
        names = [f.name for f in fields(self) if f.name != "present"]
        return LayerMetrics(**{k: np.asarray(getattr(self, k))[rows] for k in names},
                            present=self.present)

    def has(self, name: str) -> bool:
        """Whether the trace has the metric ``name``."""
        return name in self.present

    def as_dict(self) -> dict[str, np.ndarray]:
        """The metrics the trace has, by name, in its order (``Trace.layer_metrics``)."""
        return {k: getattr(self, k) for k in self.present}
