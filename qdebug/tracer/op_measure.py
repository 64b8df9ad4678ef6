"""Statistics of every op row: accumulated error against the float twin's op, local error
against the numeric-verify model's f(x̂), and gain."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from qdebug import metrics, sums
from qdebug.store.schema import OutputRecord
from qdebug.tracer.litert import LiteModel
from qdebug.tracer.measure import Measurements, Measurer
from qdebug.tracer.oprows import OpTable, op_layer_records
from qdebug.tracer.sides import BatchValues


class OpMeasurer:
    """Measures the measured rows of an op table, batch by batch."""

    def __init__(
        self,
        table: OpTable,
        int8: LiteModel,
        outputs: list[OutputRecord],
        as_layers: bool = False,
    ) -> None:
        """``as_layers``: the ops are also the layer table (the op view), so they keep the
        per-channel sums, ranges and worst samples that layers have."""
        self.table = table
        self.records = op_layer_records(table, int8)
        self.rows = table.measured()
        """Op row of each record."""
        record_of = {row: k for k, row in enumerate(self.rows)}
        qps = {k: table.qparams(int8, row) for k, row in enumerate(self.rows)}
        local_inputs = {
            k: [record_of[j] for j in table.rows[row].inputs if j in record_of]
            for k, row in enumerate(self.rows)
        }
        self.measurer = Measurer(
            self.records, outputs, qps, None, {}, worst_k=8 if as_layers else 0,
            local_inputs=local_inputs,
        )
        self.measurer.keep_analysis = as_layers
        self.int8_tensors = {table.rows[row].tensor_index for row in self.rows}
        self.twin_tensors = {table.twin_tensor[row] for row in self.rows}
        self.record_of = record_of

    def measure(
        self,
        n: int,
        got: BatchValues,
        out_raws: list[tuple[np.ndarray, metrics.QuantParams | None]],
        out_refs: list[np.ndarray],
        on_arrays: Callable[[int, sums.ErrorArrays], None] | None = None,
    ) -> tuple[Measurements, dict[str, np.ndarray]]:
        """The measurements of the measured rows, and the per-sample statistics of every row
        of the table, (n, rows), NaN for rows without metrics. ``on_arrays`` is called with
        each measured row's ``ErrorArrays`` as they are made (by its index in ``records``)."""
        t = self.table
        refs = {
            self.records[k].name: got.twin[t.twin_tensor[row]] for k, row in enumerate(self.rows)
        }
        raws = {k: got.int8[t.rows[row].tensor_index] for k, row in enumerate(self.rows)}
        f_hats = {self.record_of[row]: v for row, v in got.local.items() if row in self.record_of}
        m = self.measurer.measure(n, refs, raws, out_raws, f_hats=f_hats, out_refs=out_refs,
                                  on_arrays=on_arrays)
        for row in [*got.local, *t.graph_input_rows]:
            t.rows[row].has_local = True
        width = len(t.rows)
        out: dict[str, np.ndarray] = {}
        for stat, values in m.layer_stats.items():
            full = np.full((n, width), np.nan)
            full[:, self.rows] = values
            out[stat] = full
        return m, out

    def record_stats(self, m: Measurements, row: int, local: bool) -> dict[str, np.ndarray]:
        """One row's statistics from ``measure``: accumulated ones, and local ones with
        ``local`` (else NaN, for the layer's own decomposition to fill in)."""
        k = self.record_of[row]
        return {
            stat: v[:, k] if local or stat in metrics.ACCUMULATED_STATS
            else np.full(v.shape[0], np.nan)
            for stat, v in m.layer_stats.items()
        }
