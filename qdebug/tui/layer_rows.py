"""The layer table as plain data: columns, rows, formatting and severity. No Textual."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from rich.text import Text

from qdebug import metrics
from qdebug.analysis.ranking import lowest
from qdebug.output.fmt import db as fmt_db
from qdebug.output.fmt import lsb as fmt_lsb
from qdebug.output.fmt import num as fmt_num
from qdebug.output.fmt import pct_fine as fmt_pct

# The viewer's names for the shared formatters (one spelling everywhere: ``qdebug.output.fmt``).
from qdebug.output.fmt import printable as printable
from qdebug.output.fmt import shown
from qdebug.store.reader import Trace
from qdebug.store.schema import (
    STATUS_FOLDED,
    STATUS_FUSED,
    STATUS_UNMATCHED,
    STATUS_UNVERIFIED,
    LayerRecord,
)

#: Metrics written by the propagation analysis; shown when a trace has them, "—" otherwise.
PROPAGATION_METRICS = ("local_sqnr_db", "local_mse", "gain", "weight_sqnr_db")


#: The viewer's colour of each of ``metrics.SQNR_BANDS``, worst first.
BAND_STYLES = ("bold red", "red", "yellow", "green", "green")


def sqnr_style(v: float) -> str:
    """Severity colour of an SQNR in dB (``metrics.SQNR_BANDS``: < 10 dB is badly hurt)."""
    band = metrics.sqnr_band(v)
    return "dim" if band is None else BAND_STYLES[band]


def colour_legend() -> str:
    """The viewer's SQNR colours in words, from the bands (its help screen shows this)."""
    floors = [-math.inf] + [c for c, _ in metrics.SQNR_BANDS]  # band i spans floors[i:i+2]
    styles = list(dict.fromkeys(BAND_STYLES))  # each colour once, worst first
    parts = []
    for style in styles:
        lo = floors[BAND_STYLES.index(style)]
        hi = floors[len(BAND_STYLES) - BAND_STYLES[::-1].index(style)]
        parts.append(f"< {hi:g} {style}" if lo == -math.inf else f"≥ {lo:g} {style}"
                     if hi == math.inf else f"{lo:g}–{hi:g} {style}")
    return "SQNR (dB): " + ", ".join(parts)


def status_text(rec: LayerRecord) -> str:
    """The status as shown: ``fused → relu1``, ``float island`` etc."""
    if rec.status in (STATUS_FUSED, STATUS_FOLDED):
        return f"{rec.status} → {shown(rec.related)}"
    if rec.float_island:
        return f"{rec.status} · float island"
    return rec.status


def status_style(rec: LayerRecord) -> str:
    """Colour of a status cell."""
    if rec.status == STATUS_UNMATCHED:
        return "bold red"
    if rec.status == STATUS_UNVERIFIED or rec.float_island:
        return "yellow"
    if rec.status in (STATUS_FUSED, STATUS_FOLDED):
        return "dim"
    return ""


def shape_text(shape: Sequence[int | None]) -> str:
    """``(·, 8, 8, 16)``: the batch dimension as a dot."""
    return "(" + ", ".join("·" if d is None else str(d) for d in shape) + ")"


@dataclass(frozen=True)
class LayerRow:
    """One layer as the table shows it."""

    index: int
    record: LayerRecord
    values: dict[str, float] = field(default_factory=dict)
    """Pooled metrics of the layer; a metric the trace lacks is NaN."""
    precision: str = ""
    """What the op computing the layer's tensor computes in (``int8``, ``int16``, ``float``,
    ``dynamic``; schema 1.4, empty before)."""

    @property
    def measured(self) -> bool:
        """Whether the layer has metrics of its own."""
        return self.record.measured


@dataclass(frozen=True)
class Column:
    """A column of the layer table."""

    key: str
    label: str
    numeric: bool
    cell: Callable[[LayerRow], Text]
    sort_value: Callable[[LayerRow], float | str]


def _metric_column(key: str, label: str, fmt: Callable[[float], str], severity: bool) -> Column:
    def cell(row: LayerRow) -> Text:
        v = row.values.get(key, math.nan)
        return Text(fmt(v), style=sqnr_style(v) if severity else "", justify="right")

    return Column(key, label, True, cell, lambda row: row.values.get(key, math.nan))


def _text_column(key: str, label: str, get: Callable[[LayerRow], str],
                 style: Callable[[LayerRow], str] = lambda _: "") -> Column:
    return Column(key, label, False, lambda r: Text(get(r), style=style(r)),
                  lambda r: get(r).lower())


#: Widest a name or a class is shown in the table (the detail screen shows it whole).
NAME_CELL = 28
CLASS_CELL = 18


def cut_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, keeping its start and its end (a scoped name's
    last part tells layers apart): ``chars2vec_e…lstm_cell_23``."""
    if Text(text).cell_len <= width:
        return text
    head, tail = Text(text[: width]), Text(text[-width:])
    head.truncate(width // 2)
    while tail.cell_len > width - 1 - head.cell_len:
        tail = tail[1:]
    return head.plain + "…" + tail.plain


COLUMNS: tuple[Column, ...] = (
    # The numbers right after the name, so they stay visible in an 80-column terminal; then
    # op, then the longer words: at 120 columns everything up to the status fits whole.
    Column("index", "#", True, lambda r: Text(str(r.index), justify="right"),
           lambda r: float(r.index)),
    Column("name", "layer", False, lambda r: Text(cut_middle(shown(r.record.name), NAME_CELL)),
           lambda r: shown(r.record.name).lower()),
    _metric_column("sqnr_db", "SQNR dB", fmt_db, severity=True),
    _metric_column("local_sqnr_db", "local dB", fmt_db, severity=True),
    _metric_column("gain", "gain", fmt_num, severity=False),
    _metric_column("rmse_lsb", "RMSE LSB", fmt_lsb, severity=False),
    _metric_column("clip_share", "clip", fmt_pct, severity=False),
    _metric_column("saturation", "sat.", fmt_pct, severity=False),
    _text_column("op_type", "op", lambda r: shown(r.record.op_type)),
    _text_column("precision", "precision", lambda r: r.precision),
    _text_column("status", "status", lambda r: status_text(r.record),
                 lambda r: status_style(r.record)),
    Column("class_name", "class", False,
           lambda r: Text(cut_middle(shown(r.record.class_name), CLASS_CELL)),
           lambda r: shown(r.record.class_name).lower()),
    _text_column("output_shape", "shape", lambda r: shape_text(r.record.output_shape)),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)


def column(key: str) -> Column:
    """The column named ``key``."""
    return COLUMNS[COLUMN_KEYS.index(key)]


def build_rows(trace: Trace) -> list[LayerRow]:
    """One row per layer from the layer table and the pooled metrics (both small)."""
    lm = trace.layer_metrics()
    return [
        LayerRow(i, rec, {k: float(v[i]) for k, v in lm.items()},
                 trace.precision(i))
        for i, rec in trace.iter_layers()
    ]


def sort_rows(rows: Sequence[LayerRow], key: str, reverse: bool) -> list[LayerRow]:
    """Rows sorted by a column; NaN and empty values last in both directions."""
    col = column(key)
    present = [r for r in rows if not _missing(col.sort_value(r))]
    absent = [r for r in rows if _missing(col.sort_value(r))]
    present.sort(key=col.sort_value, reverse=reverse)
    return present + absent


def _missing(v: float | str) -> bool:
    return v == "" if isinstance(v, str) else math.isnan(v)


def filter_rows(rows: Sequence[LayerRow], query: str) -> list[LayerRow]:
    """Rows whose name or class contains ``query`` (case-insensitive)."""
    q = query.strip().lower()
    if not q:
        return list(rows)
    return [r for r in rows if q in r.record.name.lower() or q in r.record.class_name.lower()]


def ranking(rows: Sequence[LayerRow], key: str | None = None) -> list[int]:
    """Layer indices by ``key`` ascending (default: local SQNR when the trace has it, else
    accumulated SQNR). Unverified layers (untrusted numbers) are left out. Used for culprits
    when a trace has no recorded culprit list."""
    if key is None:
        key = "local_sqnr_db" if any(not math.isnan(r.values.get("local_sqnr_db", math.nan))
                                     for r in rows) else "sqnr_db"
    values = np.array([r.values.get(key, math.nan) if r.measured else math.nan for r in rows])
    return [rows[i].index for i in lowest([r.record for r in rows], values)]


def measured_sources(
    trace_layers: Sequence[LayerRecord], index: int, by_name: dict[str, int] | None = None
) -> list[int]:
    """The nearest measured layers upstream of ``index`` (through fused/folded layers)."""
    if by_name is None:
        by_name = {r.name: i for i, r in enumerate(trace_layers)}
    out: list[int] = []
    seen: set[int] = set()
    stack = [by_name[n] for n in trace_layers[index].inbound if n in by_name]
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        if trace_layers[i].measured:
            out.append(i)
        else:
            stack.extend(by_name[n] for n in trace_layers[i].inbound if n in by_name)
    return sorted(out)


def sqnr_drop(rows: Sequence[LayerRow]) -> np.ndarray:
    """Per layer, accumulated SQNR minus the lowest accumulated SQNR of its measured inputs:
    how much the curve moved at this layer (NaN where it cannot be said)."""
    records = [r.record for r in rows]
    by_name = {r.name: i for i, r in enumerate(records)}
    sq = np.array([r.values.get("sqnr_db", math.nan) for r in rows])
    out = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        if not r.measured:
            continue
        src = measured_sources(records, i, by_name)
        vals = [sq[j] for j in src if not math.isnan(sq[j])]
        if vals and not math.isnan(sq[i]):
            with np.errstate(invalid="ignore"):
                out[i] = sq[i] - min(vals)
    return out
