"""A layer's ops in the detail screen, folded when there are many: an LSTM lowers to ~180 ops,
and one line each pushed its histograms off the screen. No Textual."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

from rich.text import Text

from qdebug.output.fmt import db as fmt_db
from qdebug.output.fmt import shown
from qdebug.store.reader import Trace
from qdebug.store.schema import LayerRecord
from qdebug.tui.layer_rows import sqnr_style

#: A layer with more ops than this shows a summary of them; ``o`` lists them all.
FOLD_OPS = 6
#: Ops named in the summary: the lowest local SQNR first (where the error is made).
WORST_OPS = 3


def ops_folded(rec: LayerRecord) -> bool:
    """Whether the detail screen folds the layer's op list."""
    return len(rec.ops) > FOLD_OPS


def op_line(trace: Trace, i: int, om: Mapping[str, Any]) -> Text:
    """``  op FULLY_CONNECTED    lstm/cell#2  acc 46.9 dB  local 49.7 dB``."""
    op = trace.ops[i]
    text = Text("  op ", style="dim")
    text.append(f"{shown(op.op_type):<18} {shown(op.name)}  ")
    if op.precision:
        text.append(f"{op.precision}  ", style="dim")
    for label, key in (("acc", "sqnr_db"), ("local", "local_sqnr_db")):
        x = _value(om, key, i)
        text.append(f"{label} ", style="dim")
        text.append(fmt_db(x) + (" dB" if not math.isnan(x) else "") + "  ", style=sqnr_style(x))
    return text


def ops_summary(trace: Trace, rec: LayerRecord) -> Text:
    """The ops of a layer with many, in a few lines: how many of each type, and the ones with
    the lowest local SQNR (else accumulated), each as a full op line."""
    om = trace.op_metrics()
    kinds = Counter(shown(trace.ops[i].op_type) for i in rec.ops)
    text = Text(f"{len(rec.ops)} ops: ", style="bold")
    text.append(", ".join(f"{n} {kind}" for kind, n in kinds.most_common(6)))
    if len(kinds) > 6:
        text.append(f", {len(kinds) - 6} other types")
    text.append("  (o: every op, under the histograms)\n", style="dim")
    key = "local_sqnr_db" if any(
        not math.isnan(_value(om, "local_sqnr_db", i)) for i in rec.ops) else "sqnr_db"
    ranked = sorted((i for i in rec.ops if not math.isnan(_value(om, key, i))),
                    key=lambda i: _value(om, key, i))
    if ranked:
        text.append(f"lowest {'local' if key == 'local_sqnr_db' else 'accumulated'} SQNR:\n",
                    style="dim")
        for i in ranked[:WORST_OPS]:
            text.append_text(op_line(trace, i, om))
            text.append("\n")
    return text


def _value(om: Mapping[str, Any], key: str, i: int) -> float:
    values = om.get(key)
    try:
        return float(values[i]) if values is not None else math.nan
    except (IndexError, TypeError, ValueError):
        return math.nan
