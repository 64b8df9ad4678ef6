"""The per-sample loop of a trace: run every side on each batch, measure, write."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from qdebug import metrics, sums
from qdebug.errors import DataError
from qdebug.progress import Phases
from qdebug.store.schema import OP_INTEGER, STATUS_MATCHED, LayerRecord, OutputRecord
from qdebug.store.writer import TraceWriter
from qdebug.tracer.data import SampleSource
from qdebug.tracer.labels import PredictionLog
from qdebug.tracer.litert import LiteModel
from qdebug.tracer.measure import Measurer, segment_sources
from qdebug.tracer.model_io import integer_source
from qdebug.tracer.op_measure import OpMeasurer
from qdebug.tracer.oprows import OpTable
from qdebug.tracer.sample_metrics import MetricFeed
from qdebug.tracer.segment_runner import SegmentRunner
from qdebug.tracer.sides import BatchValues, Sides, run_ahead
from qdebug.tracer.verify import LocalRefs
from qdebug.user_metrics import UserMetrics

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class TracePlan:
    """What the per-sample loop measures, settled before the first sample."""

    sides: Sides
    records: list[LayerRecord]
    outputs: list[OutputRecord]
    out_index: list[int]
    """Per Keras output, the position of the LiteRT output that carries it."""
    runner: SegmentRunner | None
    """Re-runs the Keras layers made of several ops on the int8 inputs (None: none)."""
    ops_view: bool
    """The ops are the layer table (a model without a Keras layer graph)."""
    op_local: frozenset[str] = frozenset()
    """Layers whose local error is their single op's (``op_local_layers``, found once when
    the layers were matched)."""
    user_metrics: UserMetrics = field(default_factory=UserMetrics)
    """The user's metrics; those of arrays (per-sample, output) are run in the loop."""


@dataclass
class LoopResult:
    """What the loop leaves besides the written statistics."""

    measurer: Measurer
    mismatched: int = 0
    """Samples whose instrumented INT8 outputs differ from the plain interpreter's."""
    checked: int = 0
    """Samples whose outputs were compared with the plain interpreter's."""
    max_diff: float = 0.0
    """The largest such difference (raw output units)."""
    first_output: np.ndarray | None = None
    """The float model's first output on the first sample."""
    output_varies: bool = False
    """Whether that output differs on any other sample (an untrained model, or one that
    ignores its input, gives the same output for every sample)."""

    def note_output(self, float_out: np.ndarray) -> None:
        """A batch (n, ...) of the float model's first output."""
        if self.output_varies or not len(float_out):
            return
        if self.first_output is None:
            self.first_output = np.array(float_out[0])
        self.output_varies = not np.array_equal(
            float_out, np.broadcast_to(self.first_output, float_out.shape)
        )


def trace_samples(
    data: SampleSource,
    plan: TracePlan,
    writer: TraceWriter,
    *,
    first_sample: int,
    batch_size: int,
    phases: Phases,
    preds: PredictionLog | None,
) -> LoopResult:
    """Trace every sample of ``data`` (numbered from ``first_sample``) into ``writer``."""
    sides, records, outputs = plan.sides, plan.records, plan.outputs
    int8, table = sides.int8, sides.table
    ops = OpMeasurer(table, int8, outputs, as_layers=plan.ops_view)
    out_tensor = [integer_source(int8, int8.output_indices[pos]) for pos in plan.out_index]
    twin_out = [sides.twin.output_indices[pos] for pos in plan.out_index]
    twin_of = _twin_tensors(table)
    measured = [
        (i, r) for i, r in enumerate(records)
        if r.measured and r.tensor_index >= 0 and r.tensor_index in twin_of
    ]
    row_of = {i: table.row_of_tensor[r.tensor_index] for i, r in measured
              if r.tensor_index in table.row_of_tensor}
    layer_of_op: dict[int, int] = {}
    if plan.ops_view:
        measurer = ops.measurer
    else:
        qps = {i: int8.tensors[r.tensor_index].qp for i, r in measured}
        runner = plan.runner
        sources = segment_sources(runner.segments, records) if runner else {}
        measurer = Measurer(records, outputs, qps, runner, sources)
        measurer.pad_to = max(1, batch_size)
        _warm_up(runner, sources, records, twin_of, sides.twin, measurer.pad_to)
        layer_of_op = _layers_of_ops(ops, table, int8, records, row_of, qps, twin_of)
    single = {i for i, r in enumerate(records) if r.name in plan.op_local}
    int8_wanted = {r.tensor_index for _, r in measured} | ops.int8_tensors
    twin_wanted = {twin_of[r.tensor_index] for _, r in measured} | ops.twin_tensors
    twin_wanted |= set(twin_out)
    result = LoopResult(measurer)
    feed = MetricFeed(plan.user_metrics, int8, table, records, outputs, measured, out_tensor,
                      twin_out, plan.ops_view) if plan.user_metrics.on_arrays else None
    measurer.layer_worst.keep_for(writer.store_samples)
    sample_no = first_sample
    bsz = max(1, batch_size)
    clock = LoopClock()
    ahead = run_ahead(
        batches(data, bsz), clock.timed(lambda b: sides.run(b, int8_wanted, twin_wanted,
                                                            out_tensor))
    )
    # Closed in this order on any exit: the batch in flight finishes, then the threads stop.
    with closing(sides), phases.bar("trace", total=data.known_length) as advance, \
            closing(ahead), clock.into(phases):
        for batch, got in clock.waiting(ahead):
            n = len(batch)
            result.mismatched += got.mismatched
            result.checked += got.checked
            result.max_diff = max(result.max_diff, got.max_diff)
            out_stacked = [(v.reshape(n, -1), int8.tensors[out_tensor[j]].qp)
                           for j, v in enumerate(got.outputs)]
            out_refs = [got.twin[t].reshape(n, -1) for t in twin_out]
            if out_refs:
                result.note_output(out_refs[0])
            if preds is not None:
                raw_out, out_qp = out_stacked[preds.output]
                preds.add(raw_out, out_refs[preds.output], out_qp.scale if out_qp else 0.0)
            to_layers = OpArraysToLayers(layer_of_op, records, twin_of, measurer, got)
            om, op_stats = ops.measure(n, got, out_stacked, out_refs,
                                       to_layers if layer_of_op else None)
            refs = {r.name: shaped(got.twin[twin_of[r.tensor_index]], r)
                    for _, r in measured}
            stacked = {i: shaped(got.int8[r.tensor_index], r) for i, r in measured}
            if feed is not None:
                feed.add(got, refs, stacked)
            if plan.ops_view:
                m = om
            else:
                given = {i: ops.record_stats(om, row, local=i in single)
                         for i, row in row_of.items() if row in ops.record_of}
                f_hats = {i: got.local[row_of[i]] for i in single
                          if i in row_of and row_of[i] in got.local}
                m = measurer.measure(n, refs, stacked, out_stacked, f_hats, out_refs, given,
                                     to_layers.shared)
            writer.add_batch(m.layer_stats, m.output_stats, m.top1, op_stats)
            measurer.note_worst(sample_no, m, batch, {
                i: (refs[r.name], stacked[i], m.local_ref.get(i)) for i, r in measured
            } if measurer.layer_worst.keep else None)
            if writer.wants_samples:
                writer.store_samples_of(
                    sample_no, n, [np.stack([s[j] for s in batch]) for j in range(len(batch[0]))],
                    {i: (refs[r.name], stacked[i]) for i, r in measured}, m.local_ref)
            sample_no += n
            advance(n)
    if sample_no == first_sample:
        raise DataError(f"{data.description} holds no samples", "give at least one sample")
    if feed is not None:
        writer.add_custom(feed.stored())
    return result


class OpArraysToLayers:
    """Called with each op's ``ErrorArrays`` of one batch as the op measurer makes them (by
    the op's record index): the layer that is that op's tensor takes its per-channel sums and
    ranges from them while they are in cache, and keeps the dequantized values (``shared``)
    for its own statistics."""

    def __init__(self, layer_of_op: dict[int, int], records: list[LayerRecord],
                 twin_of: dict[int, int], measurer: Measurer, got: BatchValues) -> None:
        self.layer_of_op, self.records, self.twin_of = layer_of_op, records, twin_of
        self.measurer, self.got = measurer, got
        self.shared: dict[int, np.ndarray] = {}

    def __call__(self, op: int, a: sums.ErrorArrays) -> None:
        i = self.layer_of_op.get(op)
        if i is None:
            return
        r = self.records[i]
        f = shaped(self.got.twin[self.twin_of[r.tensor_index]], r)
        self.measurer.channels_from(i, f, a)
        self.shared[i] = a.q.reshape(f.shape)


def _twin_tensors(table: OpTable) -> dict[int, int]:
    """Per INT8 tensor (an op's output or a graph input), the float twin's tensor of it."""
    twin_of = {r.tensor_index: table.twin_tensor[row]
               for row, r in enumerate(table.rows) if row in table.twin_tensor}
    for q, t in table.graph_inputs.items():
        twin_of.setdefault(q, t)
    return twin_of


def _layers_of_ops(
    ops: OpMeasurer, table: OpTable, int8: LiteModel, records: list[LayerRecord],
    row_of: dict[int, int], qps: dict[int, metrics.QuantParams | None],
    twin_of: dict[int, int],
) -> dict[int, int]:
    """Per op (its record index in ``ops``), the measured layer that is its tensor: the same
    int8 tensor read with the same quantization against the same float twin tensor, so that
    the op's arrays are the layer's, element for element."""
    out: dict[int, int] = {}
    for i, row in row_of.items():
        k = ops.record_of.get(row)
        if k is None or k in out:
            continue
        r = records[i]
        if (table.rows[row].tensor_index == r.tensor_index
                and table.twin_tensor.get(row) == twin_of[r.tensor_index]
                and table.qparams(int8, row) == qps[i]):
            out[k] = i
    return out


class LoopClock:
    """Where the loop's time goes (``qdebug trace --profile``): the interpreters, run a batch
    ahead in a worker thread, and the main thread's waits for them; the rest of the loop is
    the statistics and the writes."""

    def __init__(self) -> None:
        self.interpreters = 0.0
        self.waiting_for = 0.0

    def timed(self, run: Callable[[T], R]) -> Callable[[T], R]:
        """``run`` (the sides of one batch, in the worker thread), its seconds added up."""

        def timed_run(batch: T) -> R:
            start = time.perf_counter()
            try:
                return run(batch)
            finally:
                self.interpreters += time.perf_counter() - start

        return timed_run

    def waiting(self, ahead: Iterator[R]) -> Iterator[R]:
        """The batches of ``ahead``, the main thread's wait for each added up."""
        while True:
            start = time.perf_counter()
            try:
                item = next(ahead)
            except StopIteration:
                return
            finally:
                self.waiting_for += time.perf_counter() - start
            yield item

    @contextlib.contextmanager
    def into(self, phases: Phases) -> Iterator[None]:
        """Record the loop's split in ``phases`` when it ends."""
        start = time.perf_counter()
        try:
            yield
        finally:
            total = time.perf_counter() - start
            phases.record("trace: interpreters (worker thread)", self.interpreters)
            phases.record("trace: waiting for them", self.waiting_for)
            phases.record("trace: statistics and writes", max(0.0, total - self.waiting_for))


def batches(source: SampleSource, size: int) -> Iterator[list[list[np.ndarray]]]:
    """The samples of ``source`` in lists of ``size`` (the last one shorter)."""
    batch: list[list[np.ndarray]] = []
    for sample in source:
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _warm_up(
    runner: SegmentRunner | None, sources: dict[str, int], records: list[LayerRecord],
    twin_of: dict[int, int], twin: LiteModel, size: int,
) -> None:
    """Start tracing the segment re-run for the shapes it will be fed in batches of ``size``:
    each source layer's twin tensor without its batch of 1, in the layer's shape (as
    ``Measurer`` builds them)."""
    if runner is None:
        return
    shapes = {}
    for name in runner.feeds:
        rec = records[sources[name]]
        per_sample = twin.tensors[twin_of[rec.tensor_index]].shape
        if per_sample[:1] == (1,):
            per_sample = per_sample[1:]
        shapes[name] = shaped(np.empty((size, *per_sample), np.float32), rec).shape
    runner.warm_up(shapes)


def shaped(values: np.ndarray, rec: LayerRecord) -> np.ndarray:
    """A batch of a row's tensor in the Keras layer's shape when that is static (the TFLite
    tensor may be laid out otherwise, e.g. UpSampling2D's 5-D intermediate): the Keras re-run
    of the next layer is fed these values."""
    dims = rec.output_shape[1:]
    if dims and all(isinstance(d, int) for d in dims):
        shape = (values.shape[0], *[int(d) for d in dims if d is not None])
        if int(np.prod(shape)) == values.size and shape != values.shape:
            return values.reshape(shape)
    return values


def op_local_layers(
    records: list[LayerRecord], local: LocalRefs | None, table: OpTable | None = None
) -> set[str]:
    """Layers whose local error is their op's, from the numeric-verify model: matched layers
    made of one op that has a local error — besides ops computing integers (an Embedding's
    index wrap-around: LESS, ADD, SELECT before its GATHER), which are exact — and whose
    tensor that op produces."""
    if local is None:
        return set()
    out: set[str] = set()
    for r in records:
        if r.status != STATUS_MATCHED:
            continue
        ops = [o for o in r.ops if table is None or table.rows[o].status != OP_INTEGER]
        if len(ops) != 1 or ops[0] not in local.float_tensor:
            continue
        if table is not None and table.rows[ops[0]].tensor_index != r.tensor_index:
            continue
        out.add(r.name)
    return out
