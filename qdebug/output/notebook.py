"""Traces in notebooks: pandas DataFrames with the JSON report's columns, and the small HTML
table Jupyter shows for a ``Trace``. pandas is optional; nothing here reads activations."""

from __future__ import annotations

import html
import math
from typing import Any

from qdebug.errors import QdebugError
from qdebug.output.fmt import db
from qdebug.store.reader import Trace


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise QdebugError(
            "pandas is not installed: DataFrames need it",
            "install it with: pip install 'qdebug[notebook]' (or pip install pandas)",
        ) from None
    return pd


def layers_dataframe(trace: Trace) -> Any:
    """One row per layer, the columns of ``qdebug report --format json``'s ``layers``."""
    from qdebug.output.report_json import report_dict

    rows = report_dict(trace)["layers"]
    pd = _pandas()
    cols = list(rows[0]) if rows else []
    return pd.DataFrame(rows, columns=cols).set_index("index", drop=False)


def ops_dataframe(trace: Trace) -> Any:
    """One row per op of the deployed model, the columns of the JSON report's ``ops``."""
    from qdebug.output.report_json import op_rows

    rows = op_rows(trace)
    pd = _pandas()
    cols = list(rows[0]) if rows else []
    return pd.DataFrame(rows, columns=cols).set_index("index", drop=False)


def trace_html(trace: Trace, limit: int = 40) -> str:
    """A small table: model, outputs, and each layer's SQNR (pooled tables only)."""
    esc = html.escape
    om = trace.output_metrics()
    lm = trace.layer_metrics()
    head = (
        f"<b>{esc(trace.model_name)}</b> — {trace.n_samples} samples, "
        f"{len(trace.layers)} layers, {len(trace.ops)} ops "
        f"<small>({esc(str(trace.path))})</small><br>"
    )
    for j, o in enumerate(trace.outputs):
        head += f"output <code>{esc(o.name)}</code>: SQNR {db(float(om['sqnr_db'][j]))} dB"
        if not math.isnan(om["top1_agreement"][j]):
            head += f", top-1 agreement {om['top1_agreement'][j] * 100:.1f}%"
        head += "<br>"
    from qdebug.analysis.accuracy import accuracy

    acc = accuracy(trace)
    if acc is not None:
        head += (f"accuracy {acc.float_accuracy * 100:.1f}% float → "
                 f"{acc.int8_accuracy * 100:.1f}% int8<br>")
    local = lm.get("local_sqnr_db")
    cols = ["#", "layer", "class", "op", "SQNR dB"] + (["local SQNR dB"] if local is not None
                                                       else [])
    rows = []
    for i, r in enumerate(trace.layers[:limit]):
        cells = [str(i), esc(r.name), esc(r.class_name), esc(r.op_type),
                 db(float(lm["sqnr_db"][i]))]
        if local is not None:
            cells.append(db(float(local[i])))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    more = (f"<tr><td colspan={len(cols)}>… {len(trace.layers) - limit} more</td></tr>"
            if len(trace.layers) > limit else "")
    table = ("<table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"
             + "".join(rows) + more + "</table>")
    return f"<div>{head}{table}</div>"
