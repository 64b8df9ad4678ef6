"""``qdebug report --format csv``: TFLite QuantizationDebugger's columns first, then qdebug's.

One row per layer in topological order. The first ten columns have the names and meanings of
``QuantizationDebugger.layer_statistics_dump`` so notebooks written for that tool keep working;
how the numbers differ from that tool's is in docs/metrics.md ("CSV report").

Names come from strangers' models: a layer named ``=HYPERLINK("http://…"&A2)`` would be a
formula when the file is opened in a spreadsheet. A text cell starting with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return (or with ``'``, so the rule can be undone) gets a leading
``'`` (OWASP's advice); numbers, ``-3.5`` or ``-inf`` included, are written as they are.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from qdebug.analysis.accuracy import accuracy
from qdebug.errors import TraceFileError
from qdebug.store.reader import Trace

TFLITE_COLUMNS = (
    "op_name",
    "tensor_idx",
    "num_elements",
    "stddev",
    "mean_error",
    "max_abs_error",
    "mean_squared_error",
    "scale",
    "zero_point",
    "tensor_name",
)
QDEBUG_COLUMNS = (
    "layer",
    "class_name",
    "status",
    "related",
    "dtype",
    "float_island",
    "sqnr_db",
    "rmse_lsb",
    "cosine",
    "saturation",
    "clip_fraction",
    "clip_share",
)
#: Columns of a trace traced with labels (the model's numbers, repeated on every row).
ACCURACY_COLUMNS = ("float_accuracy", "int8_accuracy", "flipped_right_to_wrong",
                    "flipped_wrong_to_right")
#: qdebug metrics already in a TFLite column under TFLite's name.
_AS_TFLITE = ("mse", "max_abs_error", "mean_error")
_STATS = ("count", "sum_e", "sum_e2", "max_abs_e")


def pooled_layer_stats(trace: Trace) -> dict[str, np.ndarray]:
    """The pooled sufficient statistics ``count``, ``sum_e``, ``sum_e2``, ``max_abs_e`` of every
    layer, each of shape (layers,), read from ``/metrics/layers/pooled/stat_*``."""
    stats = trace.layer_pooled_stats()
    missing = [s for s in _STATS if s not in stats]
    if missing:
        raise TraceFileError(
            f"{trace.path} is a damaged trace: no pooled statistics {missing}",
            "re-create it with `qdebug trace`",
        )
    return {s: stats[s] for s in _STATS}


def error_moments(stats: dict[str, np.ndarray], n_samples: int) -> dict[str, np.ndarray]:
    """TFLite-named error statistics from pooled sums over all elements of all samples.

    ``num_elements`` is per sample (count / samples); ``stddev`` is the population standard
    deviation of e = q − f over all elements of all samples, √(Σe²/n − (Σe/n)²).
    """
    n = stats["count"]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = stats["sum_e"] / n
        mse = stats["sum_e2"] / n
        per_sample = n / n_samples if n_samples else np.full_like(n, np.nan)
    return {
        "num_elements": per_sample,
        "stddev": np.sqrt(np.maximum(mse - mean * mean, 0.0)),
        "mean_error": mean,
        "max_abs_error": stats["max_abs_e"],
        "mean_squared_error": mse,
    }


#: What a spreadsheet reads as the start of a formula (and ``'``, the mark of a quoted cell).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def inert(text: str) -> str:
    """A text cell no spreadsheet runs as a formula: ``'`` before one that starts like one.

    Removing one leading ``'`` from a cell that has it gives the text back exactly."""
    if text.startswith(_FORMULA_START) and not _is_number(text):
        return "'" + text
    return text


def _cell(value: Any) -> Any:
    """NaN becomes an empty cell (pandas reads it back as NaN); floats keep full precision;
    text is made inert for spreadsheets."""
    if isinstance(value, float | np.floating):
        v = float(value)
        return "" if math.isnan(v) else repr(v)
    if isinstance(value, str):
        return inert(value)
    return value


class _Writer:
    """RFC 4180 rows ending in ``\\n``: a cell with a comma, a quote, ``\\n`` or ``\\r`` is
    quoted (``csv.writer`` leaves a lone ``\\r`` bare, which breaks the row for readers)."""

    def __init__(self, out: io.StringIO) -> None:
        self.out = out

    def writerow(self, cells: list[Any]) -> None:
        self.out.write(",".join(_quoted("" if c is None else str(c)) for c in cells) + "\n")


def _quoted(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def custom_columns(trace: Trace, taken: Sequence[str]) -> tuple[list[str], list[Any]]:
    """The user metrics' columns (``--metric``, ``--output-metric``): per layer its values,
    and the output metrics' one value each (the model's, repeated on every row). A column is
    named after its metric, ``custom_<name>`` when that name is a column already."""
    layer = trace.custom_metrics()
    model = trace.custom_metrics("model")
    names = [*layer, *model]
    header = [f"custom_{n}" if n in taken else n for n in names]
    return header, [*(m.values for m in layer.values()), *(m.values[0] for m in model.values())]


def report_csv(trace: Trace) -> str:
    """The per-layer CSV (header and one row per layer)."""
    lm = trace.layer_metrics()
    moments = error_moments(pooled_layer_stats(trace), trace.n_samples)
    extra = [k for k in lm if k not in QDEBUG_COLUMNS and k not in _AS_TFLITE]
    own = [*TFLITE_COLUMNS, *QDEBUG_COLUMNS, *extra, *ACCURACY_COLUMNS]
    custom_header, custom = custom_columns(trace, own)
    acc = accuracy(trace)
    # Task accuracy is the model's: the same on every row, only in traces with labels.
    task = (
        [acc.float_accuracy, acc.int8_accuracy, len(acc.right_to_wrong),
         len(acc.wrong_to_right)]
        if acc
        else []
    )
    buf = io.StringIO()
    writer = _Writer(buf)
    header = [*TFLITE_COLUMNS, *QDEBUG_COLUMNS, *extra, *(ACCURACY_COLUMNS if acc else ()),
              *custom_header]
    writer.writerow([inert(h) for h in header])  # user metrics name columns
    for i, r in trace.iter_layers():
        n = moments["num_elements"][i]
        row: list[Any] = [
            r.op_type,
            r.tensor_index,
            int(n) if np.isfinite(n) and n == int(n) else n,
            *(moments[c][i] for c in TFLITE_COLUMNS[3:7]),
            r.scale,
            r.zero_point,
            r.tensor_name,
            r.name,
            r.class_name,
            r.status,
            r.related,
            r.dtype,
            r.float_island,
            *(lm[c][i] if c in lm else math.nan for c in QDEBUG_COLUMNS[6:]),
            *(lm[c][i] for c in extra),
            *task,
            *(float(v[i]) if isinstance(v, np.ndarray) else float(v) for v in custom),
        ]
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()
