"""Per-batch measurement: accumulated and local error statistics, per-channel sums, ranges,
and the worst samples. Everything kept across batches is bounded by layers × channels, never
by the number of samples."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qdebug import metrics, sums
from qdebug.analysis.segments import Segment, source_of
from qdebug.analysis.worst_samples import LayerWorst
from qdebug.store.schema import STATUS_INPUT, LayerRecord, OutputRecord
from qdebug.tracer.segment_runner import SegmentRunner


@dataclass
class ChannelSums:
    """Σf², Σe², clipped and saturated counts per channel (last axis) of one layer, over all
    samples."""

    sum_f2: np.ndarray
    sum_e2: np.ndarray
    clipped: np.ndarray
    saturated: np.ndarray | None = None
    """Raw values at an end of the integer range that does not represent 0 (schema 1.2)."""


@dataclass
class Measurements:
    """What one batch contributes to the trace."""

    layer_stats: dict[str, np.ndarray]
    output_stats: dict[str, np.ndarray]
    top1: np.ndarray
    local_ref: dict[int, np.ndarray] = field(default_factory=dict)
    """f(x̂) per segment-output layer index, (n, ...)."""


class Measurer:
    """Computes every statistic of a batch from the Keras values and the int8 tensors.

    Args:
        records: the layer table.
        qps: per measured layer index, the int8 tensor's quantization (None for float).
        runner: re-runs each segment's float computation (None: no decomposition).
        sources: per segment input name, the index of the measured layer carrying its value.
        worst_k: how many worst samples (lowest output SQNR) to keep the inputs of.
    """

    def __init__(
        self,
        records: list[LayerRecord],
        outputs: list[OutputRecord],
        qps: dict[int, metrics.QuantParams | None],
        runner: SegmentRunner | None,
        sources: dict[str, int],
        worst_k: int = 8,
        local_inputs: dict[int, list[int]] | None = None,
    ) -> None:
        self.records = records
        self.outputs = outputs
        self.qps = qps
        self.runner = runner
        self.sources = sources
        self.keep_analysis = True
        """Whether per-channel sums and ranges are kept (layers, not the ops behind them)."""
        self.pad_to = 1
        """Batch size every segment re-run is padded to (the tracer's ``--batch-size``)."""
        self.local_inputs = local_inputs or {}
        """Per record given f(x̂) from outside (the numeric-verify model): the records whose
        tensors are its inputs."""
        self.index = {r.name: i for i, r in enumerate(records)}
        self.channels: dict[int, ChannelSums] = {}
        self.float_min = np.full(len(records), np.inf)
        self.float_max = np.full(len(records), -np.inf)
        self.raw_min = np.full(len(records), np.inf)
        self.raw_max = np.full(len(records), -np.inf)
        self.worst_k = worst_k
        self.segment_check: np.ndarray | None = None
        """‖f_s − f‖ / ‖f‖ per layer on the first batch: the re-run vs Keras (NaN: no segment)."""
        self._worst: list[tuple[float, int, list[np.ndarray]]] = []  # max-heap on -sqnr
        self.layer_worst = LayerWorst(len(records))
        """Per layer, its worst samples by its own per-sample SQNR."""

    def measure(
        self,
        n: int,
        keras: dict[str, np.ndarray],
        raws: dict[int, np.ndarray],
        out_raws: list[tuple[np.ndarray, metrics.QuantParams | None]],
        f_hats: dict[int, np.ndarray] | None = None,
        out_refs: list[np.ndarray] | None = None,
        given: dict[int, dict[str, np.ndarray]] | None = None,
        shared: dict[int, np.ndarray] | None = None,
        on_arrays: Callable[[int, sums.ErrorArrays], None] | None = None,
    ) -> Measurements:
        """Statistics of a batch of ``n`` samples.

        Args:
            keras: the float reference per layer name (the float twin's tensors), (n, ...).
            raws: the quantized model's tensor per measured record index.
            f_hats: f(x̂) per record index, where it comes from the numeric-verify model.
            out_refs: the float reference of each output (else ``keras[output.layer]``).
            given: statistics already computed for a record (its op's, measured on the same
                tensors), used instead of computing them again; local statistics included
                where they are not NaN.
            shared: per record, its dequantized values, already made for its op, whose
                per-channel sums and ranges ``channels_from`` took from the op's arrays.
            on_arrays: called with each record's ``ErrorArrays`` as they are made (the op
                measurer hands them to the layers that are its ops' tensors).
        """
        layer_stats = {k: np.full((n, len(self.records)), np.nan) for k in metrics.STATS}
        deq: dict[int, np.ndarray] = {}
        # f(x̂)'s statistics, made in the same pass as the record's own (all but sum_in_e2)
        local: dict[int, dict[str, np.ndarray]] = {}
        for i, raw in raws.items():
            r = self.records[i]
            f = keras[r.name][:n]
            qp = self.qps[i]
            st = given.get(i) if given else None
            a: sums.ErrorArrays | None = None
            if shared is not None and i in shared:
                deq[i] = shared[i]
                if st is None:
                    st = sums.sample_stats(f, raw, qp, shared[i])
            elif st is None:  # with f(x̂), its local statistics in the same pass
                fh = f_hats[i][:n] if f_hats and i in f_hats else None
                st, loc, a = sums.tensor_stats(f, raw, qp, f_hat=fh)
                if loc is not None:
                    local[i] = loc
            elif self.keep_analysis or on_arrays is not None:
                a = sums.error_arrays(f, raw, qp)
            else:
                deq[i] = metrics.dequantize(raw, qp).reshape(f.shape)
            if a is not None:
                deq[i] = a.q.reshape(f.shape)
                if self.keep_analysis:
                    self._channels(i, f, a, qp)
                if on_arrays is not None:
                    on_arrays(i, a)
            for k, v in st.items():
                if k in metrics.ACCUMULATED_STATS or not np.isnan(v).any():
                    layer_stats[k][:, i] = v
            if r.status == STATUS_INPUT:  # nothing computed: all of its error is its own
                layer_stats["sum_ref2"][:, i] = st["sum_f2"]
                layer_stats["sum_local_e"][:, i] = st["sum_e"]
                layer_stats["sum_local_e2"][:, i] = st["sum_e2"]
                layer_stats["sum_prop_e2"][:, i] = 0.0
        local_ref: dict[int, np.ndarray] = {}
        if self.runner is not None and self.runner.segments:
            local_ref = self._decompose(n, keras, raws, deq, layer_stats)
        if f_hats:
            local_ref.update(self._given_local(n, keras, raws, deq, f_hats, layer_stats, given,
                                               local))
        output_stats = {k: np.full((n, len(self.outputs)), np.nan) for k in metrics.STATS}
        top1 = np.full((n, len(self.outputs)), -1, dtype=np.int8)
        for j, o in enumerate(self.outputs):
            raw, qp = out_raws[j]
            f = out_refs[j][:n] if out_refs is not None else keras[o.layer][:n]
            st = sums.sample_stats(f, raw, qp)
            for k, v in st.items():
                output_stats[k][:, j] = v
            if o.classifier:
                top1[:, j] = metrics.top1_match(f, metrics.dequantize(raw, qp))
        return Measurements(layer_stats, output_stats, top1, local_ref)

    def _decompose(
        self,
        n: int,
        keras: dict[str, np.ndarray],
        raws: dict[int, np.ndarray],
        deq: dict[int, np.ndarray],
        layer_stats: dict[str, np.ndarray],
    ) -> dict[int, np.ndarray]:
        assert self.runner is not None
        local_ref: dict[int, np.ndarray] = {}
        size = max(next(iter(keras.values())).shape[0], self.pad_to)
        hat_feeds: dict[str, np.ndarray] = {}
        float_feeds: dict[str, np.ndarray] = {}
        for name in self.runner.feeds:
            src = self.sources[name]
            x = keras[self.records[src].name][:n]
            xq = deq[src].reshape((n, *x.shape[1:]))
            if size > n:  # every call has the same batch size, so results never depend on it
                xq = np.concatenate([xq, np.repeat(xq[-1:], size - n, axis=0)])
                x = np.concatenate([x, np.repeat(x[-1:], size - n, axis=0)])
            hat_feeds[name] = np.asarray(xq, dtype=np.float32)
            float_feeds[name] = np.asarray(x, dtype=np.float32)
        f_hat = self.runner(hat_feeds)
        # The re-run computation must reproduce Keras on float inputs; checked on the first
        # batch (the same code runs on every batch), recorded per layer.
        f_s = self.runner(float_feeds) if self.segment_check is None else None
        if f_s is not None:
            self.segment_check = np.full(len(self.records), np.nan)
        for seg in self.runner.segments:
            i = self.index[seg.output]
            if i not in raws:
                continue
            # Σ (x̂ − x)² of an input is its own sum_e2, measured above on the same values.
            in_e2 = np.zeros(n)
            for name in seg.inputs:
                in_e2 += layer_stats["sum_e2"][:, self.sources[name]]
            f = keras[seg.output][:n]
            if f_s is not None and self.segment_check is not None:
                diff = (f_s[seg.output][:n] - f).astype(np.float64)
                den = float(np.sqrt((f.astype(np.float64) ** 2).sum()))
                num = float(np.sqrt((diff**2).sum()))
                self.segment_check[i] = num / den if den else (0.0 if num == 0 else np.inf)
            st = sums.local_stats(
                f, f_hat[seg.output][:n], raws[i], self.qps[i], in_e2, q=deq[i]
            )
            for k, v in st.items():
                layer_stats[k][:, i] = v
            local_ref[i] = f_hat[seg.output][:n]
        return local_ref

    def _given_local(
        self,
        n: int,
        refs: dict[str, np.ndarray],
        raws: dict[int, np.ndarray],
        deq: dict[int, np.ndarray],
        f_hats: dict[int, np.ndarray],
        layer_stats: dict[str, np.ndarray],
        given: dict[int, dict[str, np.ndarray]] | None,
        local: dict[int, dict[str, np.ndarray]],
    ) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for i, fh in f_hats.items():
            if i not in raws:
                continue
            if given and i in given and not np.isnan(given[i]["sum_local_e2"]).any():
                out[i] = fh[:n]  # its statistics came with the op's
                continue
            in_e2 = np.zeros(n)
            for j in self.local_inputs.get(i, []):
                if j in deq:  # Σ (x̂ − x)² of an input: its own sum_e2, measured above
                    in_e2 += layer_stats["sum_e2"][:, j]
            if i in local:
                st = {**local[i], "sum_in_e2": in_e2}
            else:
                f = refs[self.records[i].name][:n]
                st = sums.local_stats(f, fh[:n], raws[i], self.qps[i], in_e2, q=deq[i])
            for k, v in st.items():
                layer_stats[k][:, i] = v
            out[i] = fh[:n]
        return out

    def channels_from(self, i: int, f: np.ndarray, a: sums.ErrorArrays) -> None:
        """Per-channel sums and ranges of layer ``i`` from the arrays its op's statistics
        made on the same tensors (``f``: the float values in the layer's shape)."""
        if self.keep_analysis:
            self._channels(i, f, a, self.qps[i])

    def _channels(
        self, i: int, f: np.ndarray, a: sums.ErrorArrays, qp: metrics.QuantParams | None
    ) -> None:
        """Per-channel sums of one batch of layer ``i``, and its float and raw ranges."""
        c = f.shape[-1] if f.ndim > 1 else 1
        f2 = a.f.reshape(-1, c)
        e = a.e.reshape(-1, c)
        clipped = np.zeros(c)
        if not f2.size:
            lo, hi = np.inf, -np.inf
        elif a.f_range is not None:  # each row's, from the statistics: the same extremes
            lo, hi = float(a.f_range[0].min()), float(a.f_range[1].max())
        else:
            lo, hi = float(f2.min()), float(f2.max())
        if qp is not None and (lo < qp.clip_low or hi > qp.clip_high):
            clipped = qp.outside(f2).sum(axis=0).astype(float)
        raw = a.raw
        bounds = None  # the raw integers' extremes, each row's from the statistics if made
        if np.issubdtype(raw.dtype, np.integer) and raw.size:
            bounds = (raw.min(), raw.max()) if a.raw_range is None else (
                a.raw_range[0].min(), a.raw_range[1].max())
        # float32 fused multiply-sums (relative error ~1e-5 per batch), added up in float64.
        batch = ChannelSums(
            np.einsum("ij,ij->j", f2, f2).astype(np.float64),
            np.einsum("ij,ij->j", e, e).astype(np.float64),
            clipped,
            channel_saturation(a.raw, qp, c, f2, bounds),
        )
        cur = self.channels.get(i)
        if cur is None:
            self.channels[i] = batch
        else:
            cur.sum_f2 += batch.sum_f2
            cur.sum_e2 += batch.sum_e2
            cur.clipped += batch.clipped
            if cur.saturated is not None and batch.saturated is not None:
                cur.saturated += batch.saturated
        if f2.size:
            self.float_min[i] = min(self.float_min[i], lo)
            self.float_max[i] = max(self.float_max[i], hi)
        if bounds is not None:
            self.raw_min[i] = min(self.raw_min[i], float(bounds[0]))
            self.raw_max[i] = max(self.raw_max[i], float(bounds[1]))

    def note_worst(
        self, first: int, m: Measurements, inputs: list[list[np.ndarray]],
        values: Mapping[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] | None = None,
    ) -> None:
        """Keep the inputs of the ``worst_k`` samples with the lowest first-output SQNR, and
        note each layer's worst samples (with ``values``, the batch's float, raw and
        float_local values per layer, their activations: ``LayerWorst.keep``)."""
        self.layer_worst.note(first, m.layer_stats, values)
        if not self.outputs or self.worst_k <= 0:
            return
        sq = metrics.derive(
            {k: v[:, 0] for k, v in m.output_stats.items() if k in metrics.ACCUMULATED_STATS}
        )["sqnr_db"]
        for b, value in enumerate(sq):
            item = (-float(value) if np.isfinite(value) else -1e9, -(first + b), inputs[b])
            if len(self._worst) < self.worst_k:
                heapq.heappush(self._worst, item)
            elif item[:2] > self._worst[0][:2]:
                heapq.heapreplace(self._worst, item)

    def analysis(self) -> dict[str, Any]:
        """Arrays for ``/analysis`` (see docs/trace-format.md)."""
        worst = sorted(self._worst, key=lambda t: t[:2], reverse=True)
        return {
            "channels": self.channels,
            "float_min": self.float_min,
            "float_max": self.float_max,
            "int8_min": self.raw_min,
            "int8_max": self.raw_max,
            "worst_index": np.array([-t[1] for t in worst], dtype=np.int64),
            "segment_check": (
                self.segment_check
                if self.segment_check is not None
                else np.full(len(self.records), np.nan)
            ),
            "worst_inputs": [t[2] for t in worst],
        }


def channel_saturation(
    raw: np.ndarray | None, qp: metrics.QuantParams | None, channels: int,
    f: np.ndarray | None = None,
    bounds: tuple[Any, Any] | None = None,
) -> np.ndarray:
    """Per channel (last axis), the ``saturated`` statistic: raw integers at an end of the
    range that does not represent 0 whose float value ``f`` does not round to it (without
    ``f``, every value there); zeros for a float tensor. ``bounds``: the (min, max) of
    ``raw``, when the caller has them."""
    if raw is None or qp is None or not np.issubdtype(raw.dtype, np.integer):
        return np.zeros(channels)
    r = np.asarray(raw).reshape(-1, channels)
    if not r.size:
        return np.zeros(channels)
    low, high = (r.min(), r.max()) if bounds is None else bounds
    if low > qp.qmin and high < qp.qmax:
        return np.zeros(channels)
    if f is None:
        hit = np.zeros(r.shape, dtype=bool)
        for end in (qp.qmin, qp.qmax):
            if end != qp.zero_point:
                hit |= r == end
    else:
        hit = qp.saturated(r, np.asarray(f).reshape(-1, channels))
    return hit.sum(axis=0).astype(np.float64)


def segment_sources(segments: list[Segment], records: list[LayerRecord]) -> dict[str, int]:
    """Per segment input name, the index of the measured layer whose tensor carries it."""
    by_name = {r.name: r for r in records}
    index = {r.name: i for i, r in enumerate(records)}
    return {name: index[source_of(name, by_name)] for s in segments for name in s.inputs}
