"""What the tracer derived and stored under ``/analysis``: culprits, weight statistics,
per-channel sums, the segment check, and user metrics. The part of ``Trace`` that reads them;
see ``qdebug.store.reader``."""

from __future__ import annotations

import math

import h5py
import numpy as np

from qdebug import metrics, user_metrics
from qdebug.store.h5safe import MARGIN, MAX_ROWS, guarded, memory_cap, plain, text
from qdebug.store.schema import Culprit, CulpritKind
from qdebug.store.trace_samples import SampleReads
from qdebug.user_metrics import StoredMetric


class AnalysisReads(SampleReads):
    """Reads of ``/analysis`` and ``/metrics/*/custom``."""

    @guarded("the culprits")
    def culprits(self) -> list[Culprit]:
        """The ranked culprits written by the tracer (empty for schema 1.0 traces)."""
        key = "analysis/culprits"
        if key not in self._f:
            return []
        index = np.asarray(self._read(f"{key}/index", (None,), "iu"), dtype=np.int64)
        n = len(index)
        # a layer of many ops may be named by several of its ops: one row per op at most
        # ... for each output that has culprits
        bound = (len(self.layers) + len(getattr(self, "ops", None) or ())) * max(
            1, len(self.outputs))
        if n > bound or np.any((index < 0) | (index >= len(self.layers))):
            raise self._corrupt(f"{key} names layers the trace does not have")
        layer, kind, reason = (self._strings(f"{key}/{c}", n) for c in ("layer", "kind", "reason"))
        score = self._float(f"{key}/score", (n,))
        first = self.outputs[0].name if self.outputs else ""
        about = self._strings(f"{key}/output", n) if f"{key}/output" in self._f else [first] * n
        # Older tracers ranked rows whose tensor was never verified: never show those.
        return [
            Culprit(a, int(b), _kind(c), float(d), e, o or first)
            for a, b, c, d, e, o in zip(layer, index, kind, score, reason, about, strict=True)
            if self.layers[int(b)].ranked and math.isfinite(float(d))
        ]

    @guarded("the weight statistics")
    def weight_channels(self, layer: int | str) -> dict[str, np.ndarray] | None:
        """Per output channel of a layer's weights: ``sqnr_db`` and ``range`` (max |w|)."""
        key = f"analysis/weights/channels/{self.layer_index(layer):05d}"
        if key not in self._f:
            return None
        sq = self._float(f"{key}/sqnr_db", (None,))
        return {"sqnr_db": sq, "range": self._float(f"{key}/range", (len(sq),))}

    @guarded("the per-channel sums")
    def channel_sqnr_db(self, layer: int | str) -> np.ndarray | None:
        """Accumulated SQNR per channel (last axis) of a layer's activations, all samples."""
        key = f"analysis/channels/{self.layer_index(layer):05d}"
        if key not in self._f:
            return None
        f2 = self._float(f"{key}/sum_f2", (None,))
        e2 = self._float(f"{key}/sum_e2", (len(f2),))
        return metrics.sqnr_from_sums(f2, e2)

    @guarded("the segment check")
    def segment_check(self) -> np.ndarray | None:
        """Per layer, ‖f_s − f‖/‖f‖ on the first batch: how closely the tracer's float re-run
        of the layer's segment reproduced the float reference (NaN: no segment; schema ≥ 1.1,
        else None). ``f(x̂)`` and the decomposition are only as good as this."""
        key = "analysis/segment_check"
        if key not in self._f:
            return None
        return self._float(key, (len(self.layers),))

    @guarded("the custom metrics")
    def custom_metrics(self, part: str = "layers") -> dict[str, StoredMetric]:
        """The user metrics the trace was made with (``qdebug trace --metric``,
        ``--output-metric``) by name, each with one value per layer (``part="layers"``), per
        output (``"outputs"``), per op (``"ops"``) or one for the model (``"model"``, the output
        metrics): values and definitions as stored; the code that computed them is never
        imported."""
        widths = {"layers": len(self.layers), "outputs": len(self.outputs),
                  "ops": len(getattr(self, "ops", None) or ()), "model": 1}
        if part not in widths:
            raise ValueError(part)
        width = widths[part]
        key = f"metrics/{part}/{user_metrics.GROUP}"
        counts = f"metrics/{part}/{user_metrics.SAMPLES_GROUP}"
        g = self._f.get(key)
        if not isinstance(g, h5py.Group):
            return {}
        if len(g) > MAX_ROWS:
            raise self._corrupt(f"{key} declares {len(g):,} metrics")
        out = {}
        for name in sorted(g):
            ds = self._dataset(f"{key}/{name}")
            with memory_cap(MARGIN):
                attrs = {a: text(plain(ds.attrs.get(a, "")))[:1000] for a in
                         ("unit", "definition", "source", "error", "kind")}
            samples = (self._float(f"{counts}/{name}", (width,))
                       if f"{counts}/{name}" in self._f else None)
            out[text(name)] = StoredMetric(
                text(name), attrs["unit"], attrs["definition"], attrs["source"],
                self._float(f"{key}/{name}", (width,)), attrs["error"],
                attrs["kind"] or user_metrics.POOLED, samples,
            )
        return out

    @guarded("the per-channel sums")
    def channel_stats(self, layer: int | str) -> dict[str, np.ndarray] | None:
        """Per channel (last axis) of a layer's activations, over all samples: ``sum_f2``,
        ``sum_e2``, ``sqnr_db``, ``clipped`` (float values outside the calibrated range),
        ``saturated`` (raw values at a range end not representing 0; traces from 1.2 on, else
        absent), ``count`` (values per channel) and the fractions ``clip_fraction`` and
        ``saturation``. None when the trace has no per-channel sums for the layer."""
        idx = self.layer_index(layer)
        key = f"analysis/channels/{idx:05d}"
        if key not in self._f:
            return None
        f2 = self._float(f"{key}/sum_f2", (None,))
        c = len(f2)
        out = {"sum_f2": f2, "sum_e2": self._float(f"{key}/sum_e2", (c,)),
               "clipped": self._float(f"{key}/clipped", (c,))}
        if f"{key}/saturated" in self._f:
            out["saturated"] = self._float(f"{key}/saturated", (c,))
        return metrics.channel_metrics(out, self._pooled_count(idx))

    def _pooled_count(self, idx: int) -> float:
        key = "metrics/layers/pooled/stat_count"
        if key not in self._f:
            return math.nan
        return float(self._float(key, (len(self.layers),))[idx])


def _kind(stored: str) -> CulpritKind | str:
    """A stored culprit kind as the enum; one this qdebug does not know stays its text."""
    try:
        return CulpritKind(stored)
    except ValueError:
        return stored
