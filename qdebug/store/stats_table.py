"""Per-sample statistics of a table of tensors (layers, outputs or ops), appended batch by
batch to HDF5, with their pooled sums kept in memory."""

from __future__ import annotations

from collections.abc import Mapping

import h5py
import numpy as np

from qdebug import metrics

GROW = 256
"""Rows of per-sample statistics per HDF5 chunk."""


class StatsTable:
    """Per-sample statistics of ``width`` tensors, appended in batches; pooled sums in memory."""

    def __init__(self, group: h5py.Group, width: int, per_sample: bool = True) -> None:
        self.width = width
        self.rows = 0
        self.keep_samples = per_sample
        self.per_sample = group.create_group("per_sample") if per_sample else None
        self.pooled_group = group.create_group("pooled")
        self.sums: dict[str, np.ndarray] = {}
        self._pending: dict[str, list[np.ndarray]] = {}
        """Per-sample rows not yet written (fewer than a chunk's worth)."""
        self._written = 0
        for stat in metrics.STATS if per_sample else ():
            self.per_sample.create_dataset(  # type: ignore[union-attr]
                stat,
                shape=(0, width),
                maxshape=(None, width),
                dtype=np.float64,
                chunks=(GROW, max(width, 1)),
                compression="lzf",  # a chunk is allocated whole: unused rows cost nothing
            )

    def append(self, stats: Mapping[str, np.ndarray]) -> None:
        batch = next(iter(stats.values())).shape[0]
        for stat in metrics.STATS:
            if stat not in stats:
                values = np.full((batch, self.width), np.nan)
            else:
                values = np.asarray(stats[stat], dtype=np.float64).reshape(batch, self.width)
            if self.per_sample is not None:
                self._pending.setdefault(stat, []).append(values)
            pooled = metrics.pool({stat: values})[stat]
            if stat not in self.sums:
                self.sums[stat] = pooled
            elif stat == "max_abs_e":
                self.sums[stat] = np.maximum(self.sums[stat], pooled)
            else:
                self.sums[stat] = self.sums[stat] + pooled
        self.rows += batch
        if self.rows - self._written >= GROW:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows: one write per chunk's worth, not one per batch (each write
        of a compressed chunk compresses it again)."""
        if self.per_sample is None or self._written == self.rows:
            return
        for stat, parts in self._pending.items():
            ds = self.per_sample[stat]
            ds.resize(self.rows, axis=0)
            ds[self._written : self.rows] = np.concatenate(parts)
        self._pending = {}
        self._written = self.rows

    def finish(self, scale: np.ndarray) -> dict[str, np.ndarray]:
        self.flush()
        sums = self.sums or {s: np.full(self.width, np.nan) for s in metrics.STATS}
        for stat, value in sums.items():
            self.pooled_group.create_dataset("stat_" + stat, data=value)
        derived = metrics.derive(sums, scale)
        for name, value in derived.items():
            ds = self.pooled_group.create_dataset(name, data=np.asarray(value, dtype=np.float64))
            ds.attrs["unit"] = metrics.METRICS[name].unit
            ds.attrs["definition"] = metrics.METRICS[name].description
        return derived
