"""The short summary printed after ``qdebug trace`` (and by ``make demo``)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qdebug.printable import printable
from qdebug.report import worst_layers
from qdebug.store.reader import Trace
from qdebug.store.schema import STATUS_UNMATCHED, STATUS_UNVERIFIED


def _safe(text: str) -> str:
    """Trace text for the terminal: control characters visible, Rich markup inert."""
    return escape(printable(str(text)))


def _db(v: float) -> str:
    return "∞" if math.isinf(v) and v > 0 else ("—" if math.isnan(v) else f"{v:.1f} dB")


def print_summary(trace: Trace, console: Console) -> None:
    """Output SQNR, top-1 agreement, the five worst layers, and the trace path."""
    om = trace.output_metrics()
    console.print(
        f"[bold]{_safe(trace.model_name)}[/]  {trace.n_samples} samples, "
        f"{len(trace.layers)} layers ({_safe(str(trace.meta.get('keras_flavour')))})"
    )
    for j, o in enumerate(trace.outputs):
        line = f"  output {_safe(o.name)}: SQNR {_db(om['sqnr_db'][j])}"
        if not math.isnan(om["top1_agreement"][j]):
            line += f", top-1 agreement {om['top1_agreement'][j] * 100:.1f}%"
        console.print(line)
    statuses = [r.status for r in trace.layers]
    flagged = statuses.count(STATUS_UNVERIFIED) + statuses.count(STATUS_UNMATCHED)
    islands = len(trace.float_islands)
    if flagged or islands:
        console.print(
            f"  [yellow]{flagged} layer(s) unverified or unmatched, {islands} float island op(s)[/]"
        )
    mism = int(trace.meta.get("instrumentation_mismatched_samples", 0) or 0)
    if mism:
        console.print(
            f"  [red]instrumentation changed the output of {mism} sample(s) "
            f"(max {trace.meta.get('instrumentation_max_abs_diff')})[/]"
        )
    for w in trace.meta.get("warnings", []) or []:
        console.print(f"  [yellow]warning:[/] {_safe(str(w))}", soft_wrap=True)
    table = Table(title="worst layers (accumulated SQNR)", title_justify="left", box=None)
    for col in ("layer", "class", "op", "SQNR", "RMSE (LSB)", "saturation"):
        table.add_column(
            col, justify="right" if col in ("SQNR", "RMSE (LSB)", "saturation") else "left"
        )
    lm = trace.layer_metrics()
    for i, sq in worst_layers(trace):
        r = trace.layers[i]
        rmse = lm["rmse_lsb"][i]
        table.add_row(
            _safe(r.name),
            _safe(r.class_name),
            _safe(r.op_type),
            _db(sq),
            "—" if math.isnan(rmse) else f"{rmse:.2f}",
            f"{lm['saturation'][i] * 100:.1f}%",
        )
    console.print(table)
    culprits = trace.culprits()[:5]
    if culprits:
        console.print("culprits (rise in noise-to-signal at the layer, relative to the output's):")
        for c in culprits:
            console.print(
                f"  {_safe(c.layer):<24} {c.score:5.2f}  {_safe(c.reason)}", soft_wrap=True
            )
    console.print(f"trace: {_safe(str(trace.path))}")
