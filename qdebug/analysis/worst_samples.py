"""Per measured layer, the samples with the lowest SQNR at that layer, and the inputs of the
worst few (bounded: ``K`` per layer, at most ``cap`` distinct samples in all, deduplicated
across layers) so the input that blows a layer up can be opened later (docs/trace-format.md,
``/samples/layer_worst``). Only sample indices are kept while tracing; the inputs are read in a
second pass over the data, which runs no model."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Container, Iterable, Mapping, Sequence

import numpy as np

from qdebug.errors import TraceFileError
from qdebug.metrics import sqnr_from_sums
from qdebug.store.layer_worst import LayerWorstSamples, Values
from qdebug.store.reader import Trace

#: Worst samples kept per layer.
K = 4
#: Distinct samples whose inputs are kept, at most (fewer when inputs are large).
CAP = 32


class LayerWorst:
    """Tracks, per layer, the ``k`` samples with the lowest per-sample SQNR."""

    def __init__(self, layers: int, k: int = K) -> None:
        self.k = k
        self._heaps: list[list[tuple[float, int]]] = [[] for _ in range(layers)]
        self.keep = 0
        """How many of each layer's worst samples keep their activations of that layer
        (``keep_for``; 0: none)."""
        self._values: list[dict[int, Values]] = [{} for _ in range(layers)]

    def keep_for(self, store_samples: int) -> None:
        """Keep each layer's activations of its ``store_samples // 4`` worst samples (at most
        ``k``): a quarter of what the stored samples take, at most."""
        self.keep = max(0, min(self.k, store_samples // 4))

    def note(
        self, first: int, layer_stats: dict[str, np.ndarray],
        values: Mapping[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] | None = None,
    ) -> None:
        """One batch's statistics (samples, layers); samples are numbered from ``first``.
        ``values``: per layer, the batch's float, raw and float_local (or None) values, whose
        rows for the samples entering a layer's worst are kept (``keep``)."""
        f2, e2 = layer_stats["sum_f2"], layer_stats["sum_e2"]
        sq = sqnr_from_sums(f2, e2)
        sq = np.where(np.isneginf(sq), -1e9, sq)  # error on a zero signal: worst of all
        for j, heap in enumerate(self._heaps):
            col = sq[:, j]
            ok = np.nonzero(np.isfinite(col))[0]  # no tensor (NaN), no error at all (+inf)
            for b in ok[np.argsort(col[ok], kind="stable")][: self.k]:
                item = (-float(col[b]), -(first + int(b)))
                if len(heap) < self.k:
                    heapq.heappush(heap, item)
                elif item > heap[0]:
                    self._values[j].pop(-heapq.heapreplace(heap, item)[1], None)
                else:
                    continue
                got = values.get(j) if self.keep and values is not None else None
                if got is not None:
                    f, raw, local = got
                    self._values[j][first + int(b)] = (
                        np.array(f[b]), np.array(raw[b]),
                        None if local is None else np.array(local[b]))

    def ranked(self) -> list[list[tuple[int, float]]]:
        """Per layer, (sample, SQNR dB) worst first."""
        return [[(-s, -v) for v, s in sorted(h, reverse=True)] for h in self._heaps]

    def select(self, cap: int, skip: set[int]) -> list[int]:
        """The samples whose inputs to keep (``select``)."""
        return select(self.ranked(), self.k, cap, skip)

    def finish(
        self, data: Iterable[list[np.ndarray]], cap: int, skip: set[int], first: int = 0
    ) -> LayerWorstSamples:
        """The per-layer lists and the chosen samples' inputs, read from ``data`` again (whose
        first sample is sample ``first``: a shard's slice)."""
        ranked = self.ranked()
        layers = np.full((len(ranked), self.k), -1, dtype=np.int64)
        sqnr = np.full((len(ranked), self.k), np.nan)
        for j, per in enumerate(ranked):
            for r, (s, v) in enumerate(per):
                layers[j, r], sqnr[j, r] = s, v
        chosen = self.select(cap, skip)
        inputs: dict[int, list[np.ndarray]] = {}
        if chosen:
            wanted, last = set(chosen), max(chosen)
            for i, sample in enumerate(data, start=first):
                if i in wanted:
                    inputs[i] = sample
                if i >= last:
                    break
        index = np.array([s for s in chosen if s in inputs], dtype=np.int64)
        activations: dict[int, list[Values]] = {}
        for j, per in enumerate(ranked):
            rows = list(itertools.takewhile(lambda v: v is not None,
                                            (self._values[j].get(s) for s, _ in per[:self.keep])))
            if rows:
                activations[j] = [r for r in rows if r is not None]
        return LayerWorstSamples(layers, sqnr, index, [inputs[int(s)] for s in index], cap,
                                 self.keep, activations)


def select(
    ranked: Sequence[Sequence[tuple[int, float]]], k: int, cap: int, skip: set[int],
    available: Container[int] | None = None,
) -> list[int]:
    """The samples whose inputs to keep: every layer's worst first, then its second worst,
    …, until ``cap`` distinct samples; samples in ``skip`` (whose inputs the trace stores
    already) cost nothing, samples not ``available`` (when given) are passed over."""
    chosen: list[int] = []
    seen = set(skip)
    for rank in range(k):
        for per in ranked:
            if rank < len(per) and per[rank][0] not in seen:
                if available is not None and per[rank][0] not in available:
                    continue
                if len(chosen) >= cap:
                    return sorted(chosen)
                seen.add(per[rank][0])
                chosen.append(per[rank][0])
    return sorted(chosen)


def merge(
    shards: Sequence[Trace], skip: set[int], input_names: Sequence[str]
) -> LayerWorstSamples | None:
    """``/samples/layer_worst`` of a merged run: per layer, the ``K`` worst of every shard's
    worst (lowest SQNR first, ties: lower sample), and the inputs of as many of them as the
    whole run would keep (``select`` with the shards' recorded ``cap``; those in ``skip``,
    stored by the merged trace, cost nothing). None when no shard has the table."""
    n_layers = len(shards[0].layers)
    pooled: list[list[tuple[float, int]]] = [[] for _ in range(n_layers)]
    holder: dict[int, Trace] = {}
    caps, seen = [], 0
    found = False
    for t in shards:
        kept = [int(s) for s in t.input_samples()]
        for s in kept:
            holder.setdefault(s, t)
        seen = max(seen, len(set(kept) - set(t.stored_samples.tolist())))
        caps.append(t.layer_worst_cap())
        for i in range(n_layers):
            rows = t.layer_worst_samples(i)
            found |= bool(rows)
            pooled[i].extend((v, s) for s, v in rows)
    if not found:
        return None
    ranked = [[(s, v) for v, s in sorted(p)[:K]] for p in pooled]
    layers = np.full((n_layers, K), -1, dtype=np.int64)
    sqnr = np.full((n_layers, K), np.nan)
    for j, per in enumerate(ranked):
        for r, (s, v) in enumerate(per):
            layers[j, r], sqnr[j, r] = s, v
    # the run's cap when the shards recorded it (the same in each), else the most any kept
    cap = min(CAP, max(c for c in caps if c is not None)) if None not in caps else seen
    chosen = select(ranked, K, cap, skip, holder)
    inputs = []
    for s in chosen:
        given = holder[s].inputs(s)
        missing = [n for n in input_names if n not in given]
        if missing:
            raise TraceFileError(
                f"{holder[s].path} is a damaged trace: the kept inputs of sample {s} lack "
                f"{missing}", "re-create it with `qdebug trace`, or ask for the file again")
        inputs.append([given[n] for n in input_names])
    shapes = {tuple(np.shape(x) for x in row) for row in inputs}
    if len(shapes) > 1:
        raise TraceFileError(
            "the shards keep inputs of different shapes for their worst samples",
            "merge the shards of one `qdebug trace … --shard K/N` command")
    keep = min(K, max((t.layer_worst_cap("keep") or 0) for t in shards))
    activations: dict[int, list[Values]] = {}
    for j, per in enumerate(ranked):
        acts: list[Values] = []
        for s, _ in per[:keep]:  # each is among its shard's first ``keep``: kept there
            shard = next((t for t in shards if t.has_activation(j, s)), None)
            if shard is None:
                break
            a = shard.activation(j, s)
            acts.append((a.float, a.raw, a.float_local))
        if acts:
            activations[j] = acts
    return LayerWorstSamples(layers, sqnr, np.array(chosen, dtype=np.int64), inputs, cap,
                             keep, activations)


def input_cap(input_bytes: int, budget_mb: float) -> int:
    """How many samples' inputs to keep: ``CAP``, fewer when they would take more than a
    quarter of the store budget (never fewer than ``K``)."""
    room = int(budget_mb * 2**20 / 4 // max(input_bytes, 1))
    return max(K, min(CAP, room))
