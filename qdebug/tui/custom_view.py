"""The detail screen's line of user metrics (``qdebug trace --metric``), read from the trace."""

from __future__ import annotations

import math

from rich.text import Text

from qdebug.store.reader import Trace
from qdebug.tui.layer_rows import fmt_num, shown


def custom_numbers(trace: Trace, layer: int) -> Text:
    """``custom <name> <value> <unit>`` for each user metric of the trace (empty without)."""
    text = Text()
    found = trace.custom_metrics()
    if not found:
        return text
    text.append("\ncustom ", style="dim")
    for name, m in found.items():
        v = float(m.values[layer])
        text.append(f"{shown(name)} ", style="dim")
        text.append(fmt_num(v) + (f" {shown(m.unit)}" if m.unit and not math.isnan(v)
                                  else ""), style="bold")
        if m.error:
            text.append(" (failed while tracing)", style="red")
        text.append("  ")
    return text
