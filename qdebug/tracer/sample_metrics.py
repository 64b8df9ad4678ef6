"""User functions of arrays, run while tracing: per-sample metrics (``--metric`` with ``kind =
"per_sample"``) on every measured layer, op and output, and output metrics
(``--output-metric``) on the model's outputs. Each is averaged over the samples as they stream
by: what is kept per metric and tensor is a sum and a count, never the samples (a whole-set
output metric keeps the outputs, up to ``WHOLE_SET_BYTES``). See docs/metrics.md, "Custom
metrics"."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from qdebug import metrics
from qdebug.store.schema import LayerRecord, OutputRecord
from qdebug.tracer.litert import LiteModel
from qdebug.tracer.oprows import OpTable
from qdebug.tracer.sides import BatchValues
from qdebug.user_metrics import WHOLE_SET, ArrayMetric, StoredMetric, UserMetrics, as_number

#: The outputs a whole-set output metric may hold (float and quantized, all samples).
WHOLE_SET_BYTES = 1 << 30
#: One tensor of a batch: (column, float values (n, ...), the quantized model's values (n, ...),
#: their quantization (None: float values)).
Tensor = tuple[int, np.ndarray, np.ndarray, "metrics.QuantParams | None"]


@dataclass
class _Mean:
    """Sums and counts of one metric over one part's tensors."""

    names: Sequence[str]
    total: np.ndarray = field(init=False)
    count: np.ndarray = field(init=False)
    failed: set[int] = field(default_factory=set)
    error: str = ""

    def __post_init__(self) -> None:
        self.total = np.zeros(len(self.names))
        self.count = np.zeros(len(self.names), dtype=np.int64)

    def add(self, col: int, fn: Callable[..., Any], *args: Any) -> None:
        """``fn(*args)`` as the value of one sample at ``col``; NaN is left out of the mean, an
        exception makes the column NaN for good (its first one kept as the error)."""
        if col in self.failed:
            return
        try:
            v = as_number(fn(*args))
        except Exception as exc:
            self.failed.add(col)
            if not self.error:
                self.error = f"{self.names[col]}: {type(exc).__name__}: {exc}"[:300]
            return
        if not np.isnan(v):
            self.total[col] += v
            self.count[col] += 1

    def stored(self, m: ArrayMetric) -> StoredMetric:
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(self.count > 0, self.total / np.maximum(self.count, 1), np.nan)
        for col in self.failed:
            values[col] = np.nan
        return StoredMetric(m.name, m.unit, m.definition, m.source, values, self.error, m.kind,
                            self.count.copy())


class SampleMetrics:
    """Runs the user's array metrics on each batch (``add_*``) and gives their means
    (``stored``), per part: ``layers``, ``ops``, ``outputs``, ``model``.

    Args:
        user: the loaded user metrics.
        names: per part (``layers``, ``ops``, ``outputs``), each column's name (for errors).
    """

    def __init__(self, user: UserMetrics, names: dict[str, Sequence[str]]) -> None:
        self.user = user
        self.means = {part: {m.name: _Mean(cols) for m in user.per_sample}
                      for part, cols in names.items()}
        self.model = {m.name: _Mean(["the outputs"]) for m in user.outputs}
        self.held: tuple[list[list[np.ndarray]], list[list[np.ndarray]]] = ([], [])
        self.held_bytes = 0
        self.too_many = ""
        self.samples = 0

    def add_tensors(self, part: str, tensors: Iterable[Tensor]) -> None:
        """Each per-sample metric on each sample of each tensor of one batch: arrays of shape
        (1, ...), float32 (the quantized ones dequantized), as the QuantizationDebugger hands
        them."""
        if not self.user.per_sample:
            return
        means = self.means[part]
        for col, f, raw, qp in tensors:
            f32 = read_only(np.asarray(f, dtype=np.float32))
            q = read_only(metrics.dequantize(np.asarray(raw), qp).reshape(f.shape))
            for m in self.user.per_sample:
                for b in range(f32.shape[0]):
                    means[m.name].add(col, m.fn, f32[b : b + 1], q[b : b + 1])

    def add_outputs(self, floats: Sequence[np.ndarray], quantized: Sequence[np.ndarray]) -> None:
        """The output metrics on one batch: per sample, the lists of every output (1, ...);
        whole-set ones are held for ``stored``."""
        n = floats[0].shape[0] if floats else 0
        self.samples += n
        for m in self.user.outputs:
            if m.kind == WHOLE_SET:
                continue
            for b in range(n):
                self.model[m.name].add(0, m.fn, [f[b : b + 1] for f in floats],
                                       [q[b : b + 1] for q in quantized])
        if any(m.kind == WHOLE_SET for m in self.user.outputs) and not self.too_many:
            size = sum(a.nbytes for a in (*floats, *quantized))
            if self.held_bytes + size > WHOLE_SET_BYTES:
                self.held = ([], [])
                self.too_many = (f"the outputs of {self.samples} samples exceed the "
                                 f"{WHOLE_SET_BYTES / 2**20:.4g} MiB a whole-set metric may "
                                 "hold: trace fewer samples (-n) or average per sample")
            else:
                self.held_bytes += size
                self.held[0].append([np.array(f) for f in floats])
                self.held[1].append([np.array(q) for q in quantized])

    def stored(self) -> dict[str, list[StoredMetric]]:
        """Per part, each metric's mean over the samples (and how many), or its error."""
        out = {part: [means[m.name].stored(m) for m in self.user.per_sample]
               for part, means in self.means.items()}
        out["model"] = [self._model(m) for m in self.user.outputs]
        return out

    def _model(self, m: ArrayMetric) -> StoredMetric:
        if m.kind != WHOLE_SET:
            return self.model[m.name].stored(m)
        value, error = np.nan, self.too_many
        if not error and self.held[0]:
            floats, quantized = (
                [np.concatenate([batch[j] for batch in held]) for j in range(len(held[0]))]
                for held in self.held
            )
            try:
                value = as_number(m.fn(floats, quantized))
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
        return StoredMetric(m.name, m.unit, m.definition, m.source, np.array([value]), error,
                            m.kind, np.array([self.samples]))


class MetricFeed:
    """Hands the trace loop's batches to ``SampleMetrics``: each measured layer's values, each
    measured op's and each model output's (the loop makes one only when the user gave an
    array metric, so a trace without one does no work here).

    Args:
        measured: (record index, record) of every measured layer.
        out_tensor: per output, the quantized model's tensor index carrying it.
        twin_out: per output, the float twin's tensor index carrying it.
        ops_view: the layer table is the measured ops (a model without Keras layers): each
            tensor is measured once, as an op, and the layers' values are the ops'.
    """

    def __init__(
        self, user: UserMetrics, int8: LiteModel, table: OpTable, records: Sequence[LayerRecord],
        outputs: Sequence[OutputRecord], measured: Sequence[tuple[int, LayerRecord]],
        out_tensor: Sequence[int], twin_out: Sequence[int], ops_view: bool = False,
    ) -> None:
        self.int8, self.table, self.measured = int8, table, list(measured)
        self.ops_view = ops_view
        self.out_qp = [int8.tensors[t].qp for t in out_tensor]
        self.twin_out = list(twin_out)
        self.op_rows = table.measured()
        self.metrics = SampleMetrics(user, {
            "layers": [r.name for r in records],
            "ops": [r.name for r in table.rows],
            "outputs": [o.name for o in outputs],
        })

    def add(self, got: BatchValues, refs: dict[str, np.ndarray],
            stacked: dict[int, np.ndarray]) -> None:
        """One batch: ``refs`` and ``stacked`` are the loop's float and raw values per layer."""
        sm, t, int8 = self.metrics, self.table, self.int8
        if not self.ops_view:
            sm.add_tensors("layers", ((i, refs[r.name], stacked[i],
                                       int8.tensors[r.tensor_index].qp) for i, r in self.measured))
        sm.add_tensors("ops", ((row, got.twin[t.twin_tensor[row]],
                                got.int8[t.rows[row].tensor_index], t.qparams(int8, row))
                               for row in self.op_rows))
        floats = [got.twin[k] for k in self.twin_out]
        sm.add_tensors("outputs", ((j, f, got.outputs[j], self.out_qp[j])
                                   for j, f in enumerate(floats)))
        if sm.user.outputs:
            sm.add_outputs(*output_values(floats, got.outputs, self.out_qp))

    def stored(self) -> dict[str, list[StoredMetric]]:
        """What ``TraceWriter.add_custom`` writes."""
        out = self.metrics.stored()
        if self.ops_view:  # layer k is the k-th measured op
            rows = np.array(self.op_rows, dtype=np.int64)
            out["layers"] = [replace(m, values=m.values[rows], samples=m.samples[rows])
                             if m.samples is not None else m for m in out["ops"]]
        return out


def output_values(
    floats: Sequence[np.ndarray], raws: Sequence[np.ndarray],
    qps: Sequence[metrics.QuantParams | None],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The model's outputs of a batch as output metrics take them: float32, the quantized ones
    dequantized, each in the float output's shape."""
    f32 = [read_only(np.asarray(f, dtype=np.float32)) for f in floats]
    q32 = [read_only(metrics.dequantize(np.asarray(r), qp).reshape(f.shape))
           for r, qp, f in zip(raws, qps, f32, strict=True)]
    return f32, q32


def read_only(values: np.ndarray) -> np.ndarray:
    """A view of ``values`` a user function cannot write to: the arrays it gets are the
    tracer's own (a float reference, a float island), which the statistics read after it."""
    view = values.view()
    view.flags.writeable = False
    return view
