"""The short summary printed after ``qdebug trace`` (and by ``make demo``)."""

from __future__ import annotations

import math
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qdebug.analysis.accuracy import accuracy
from qdebug.analysis.culprits import (
    COARSE_DB,
    HEALTHY_OUTPUT_DB,
    HEALTHY_TOP1,
    int16_remedy,
    is_healthy,
    no_culprits_reason,
    outputs_healthy,
    scores_total,
)
from qdebug.analysis.kernels import kernels_comparison
from qdebug.output.fmt import NAME_LIMIT, TEXT_LIMIT, db_unit, lsb, num, pct, shown
from qdebug.output.report_json import worst_layers
from qdebug.store.meta import QUANTIZER_AEQ
from qdebug.store.reader import Trace
from qdebug.store.schema import STATUS_UNMATCHED, STATUS_UNVERIFIED, VIEW_OPS

#: Rows of the worst-layers table in the text summary (the other formats list every layer).
SHOWN_LAYERS = 5
#: Warnings printed in the text summary (the JSON report keeps every one).
SHOWN_WARNINGS = 20


def _safe(text: object, limit: int = NAME_LIMIT) -> str:
    """Trace text for the terminal: capped, control characters visible, Rich markup inert."""
    return escape(shown(text, limit))


def print_summary(trace: Trace, console: Console) -> None:
    """Output SQNR, top-1 agreement, the five worst layers, and the trace path."""

    def say(*objects: object, soft_wrap: bool | None = None) -> None:
        # Rich's highlighter is quadratic in a string's length, and has nothing to say about
        # a stranger's names: off for every line.
        console.print(*objects, soft_wrap=soft_wrap, highlight=False)

    _say_head(trace, say)
    _say_flags(trace, say)
    say(_worst_table(trace))
    every = "op" if trace.view == VIEW_OPS else "layer"
    say(f"every {every}: qdebug report TRACE --format json, markdown or csv")
    _say_culprits(trace, say, every)
    say(f"trace: {_safe(trace.path, TEXT_LIMIT)} ({size_note(trace)})")


Say = Callable[..., None]


def _say_head(trace: Trace, say: Say) -> None:
    """The model, what was deployed, each output's numbers and task accuracy."""
    om = trace.output_metrics()
    meta = trace.meta
    rows = (
        f"{len(trace.layers)} ops (no Keras layer graph: rows are the model's ops)"
        if trace.view == VIEW_OPS
        else f"{len(trace.layers)} layers, {len(trace.ops)} ops"
        if trace.ops
        else f"{len(trace.layers)} layers"
    )
    say(
        f"[bold]{_safe(trace.model_name)}[/]  {trace.n_samples} samples, {rows} "
        f"({_safe(meta.keras_flavour)})"
    )
    if meta.deployed:
        say(f"  deployed model: {_safe(meta.deployed, TEXT_LIMIT)}")
    if meta.quantizer.name == QUANTIZER_AEQ:
        repaired = "; ".join(meta.quantizer.repairs)
        say(f"  quantized by {_safe(meta.quantizer.describe(), TEXT_LIMIT)}"
            + (f" (float .tflite repaired: {_safe(repaired, TEXT_LIMIT)})"
               if repaired else ""))
    for j, o in enumerate(trace.outputs):
        sq = float(om["sqnr_db"][j])
        line = f"  output {_safe(o.name)}: SQNR {db_unit(sq)}"
        if not math.isnan(om["top1_agreement"][j]):
            line += f", top-1 agreement {om['top1_agreement'][j] * 100:.1f}%"
        if sq < COARSE_DB:
            line += " [red](broken: the int8 output has lost the signal)[/]"
        say(line)
    acc = accuracy(trace)
    if acc is not None:
        say(
            f"  accuracy ({_safe(acc.source, TEXT_LIMIT)}): float "
            f"{acc.float_accuracy * 100:.1f}%, int8 {acc.int8_accuracy * 100:.1f}%; flipped "
            f"{len(acc.right_to_wrong)} right→wrong, {len(acc.wrong_to_right)} wrong→right"
        )
    for m in trace.custom_metrics("model").values():  # --output-metric
        how = "over all samples" if m.kind == "whole_set" else "mean over samples"
        value = "failed" if m.error else num(float(m.values[0]))
        unit = f" {_safe(m.unit)}" if m.unit and not m.error else ""
        say(f"  {_safe(m.name)}: {value}{unit} ({how})")


def _say_kernels(trace: Trace, say: Say) -> None:
    """With ``--xnnpack``: each output and the accuracy as XNNPACK computed them, beside the
    reference kernels' (which every other number of the trace comes from)."""
    k = kernels_comparison(trace)
    if k is None:
        return
    say(f"  kernels: XNNPACK took {k.delegated_ops} of {k.ops} ops; its outputs differ from "
        f"the reference kernels' on {k.mismatched_samples} of {k.samples} sample(s) (every "
        "other number here is the reference kernels')")
    for o in k.outputs:
        line = (f"    output {_safe(o.name)}: XNNPACK SQNR {db_unit(o.deployment_sqnr_db)}, "
                f"reference {db_unit(o.reference_sqnr_db)}")
        if not math.isnan(o.deployment_top1):
            line += (f"; top-1 agreement XNNPACK {pct(o.deployment_top1)}, reference "
                     f"{pct(o.reference_top1)}")
        say(line + "; they differ by at most " + (
            f"{lsb(o.max_diff_lsb)} LSB" if not math.isnan(o.max_diff_lsb) else num(o.max_diff)))
    if not math.isnan(k.deployment_accuracy):
        say(f"    accuracy: XNNPACK {pct(k.deployment_accuracy)}, reference "
            f"{pct(k.reference_accuracy)}, float {pct(k.float_accuracy)}")


def _say_flags(trace: Trace, say: Say) -> None:
    """Unverified layers, float islands, the deployment kernels, instrumentation, warnings."""
    meta = trace.meta
    statuses = [r.status for r in trace.layers]
    flagged = statuses.count(STATUS_UNVERIFIED) + statuses.count(STATUS_UNMATCHED)
    islands = len(trace.float_islands)
    if flagged or islands:
        parts = [f"{flagged} layer(s) unverified or unmatched"] if flagged else []
        parts += [f"{islands} float island op(s)"] if islands else []
        say(f"  [yellow]{', '.join(parts)}[/]")
    _say_kernels(trace, say)
    mism = meta.instrumentation_mismatched_samples
    if mism:
        say(
            f"  [red]instrumentation changed the output of {mism} of "
            f"{meta.instrumentation_checked_samples} checked sample(s) "
            f"(max {meta.instrumentation_max_abs_diff:g})[/]"
        )
    warnings = meta.warnings
    for w in warnings[:SHOWN_WARNINGS]:
        say(f"  [yellow]warning:[/] {_safe(w, TEXT_LIMIT)}", soft_wrap=True)
    if len(warnings) > SHOWN_WARNINGS:
        say(f"  … and {len(warnings) - SHOWN_WARNINGS:,} more warnings: qdebug report TRACE "
            "--format json lists them all")


def _worst_table(trace: Trace) -> Table:
    """The layers (or ops) with the lowest accumulated SQNR."""
    title = "worst ops" if trace.view == VIEW_OPS else "worst layers"
    worst = worst_layers(trace, SHOWN_LAYERS)
    table = Table(
        title=f"{title} (the {len(worst)} with the lowest accumulated SQNR)",
        title_justify="left", box=None,
    )
    ops_view = trace.view == VIEW_OPS
    mixed = trace.mixed_precision  # a precision column only where ops differ in it
    cols = ("op", *(("precision",) if mixed else ()), "SQNR", "RMSE (LSB)", "saturation")
    for col in (("name",) if ops_view else ("layer", "class")) + cols:
        table.add_column(
            col,
            justify="right" if col in cols[1:] and col != "precision" else "left",
            # layer names whole at any width (folded, never cut); a class or op squeezed is
            # cut with an ellipsis, so a row stays one line (folded, GlobalAveragePooling2D
            # and FULLY_CONNECTED broke mid-word onto a second line at 80 columns); only the
            # numbers never shrink (with only the names shrinkable, a long class and op
            # squeezed the layer names to nothing at 20 columns)
            overflow="ellipsis" if col in ("class", "op") else "fold",
            no_wrap=col not in ("layer", "name", "class", "op"),
            min_width=8 if col in ("layer", "name") else None,
        )
    lm = trace.typed_layer_metrics()
    for i, sq in worst:
        r = trace.layers[i]
        rmse = lm.rmse_lsb[i]
        table.add_row(
            _safe(r.name),
            *(() if ops_view else (_safe(r.class_name),)),
            _safe(r.op_type),
            *((trace.precision(i) or "—",) if mixed else ()),
            db_unit(sq),
            "—" if math.isnan(rmse) else f"{rmse:.2f}",
            # a float tensor has no int8 rails to sit on, as it has no LSB
            "—" if math.isnan(rmse) else f"{lm.saturation[i] * 100:.1f}%",
        )
    return table


def _say_culprits(trace: Trace, say: Say, every: str) -> None:
    """The culprits, or why there are none (healthy, or nothing measured says where)."""
    om = trace.output_metrics()
    lm = trace.typed_layer_metrics()
    culprits = trace.culprits()
    if not culprits and trace.outputs and outputs_healthy(om):
        say(f"[green]healthy[/]: every output at {HEALTHY_OUTPUT_DB:.0f} dB SQNR or more "
            f"(classifiers agreeing on {HEALTHY_TOP1:.0%} of the answers or more), so no "
            f"{every} is worth acting on (no culprits)")
        return
    several = len(trace.outputs) > 1
    for j, o in enumerate(trace.outputs):
        mine = [c for c in culprits if c.output == o.name][:5]
        about = f" of output {_safe(o.name)}" if several else ""
        whose = "its" if several else "the output's"
        if mine:
            say(f"culprits{about} (share of {whose} error born at the {every}):")
            for c in mine:
                say(f"  {_safe(c.layer):<24} {c.score:5.2f}  {_safe(c.reason, TEXT_LIMIT)}",
                    soft_wrap=True)
        elif not is_healthy(float(om["sqnr_db"][j]), float(om["top1_agreement"][j])):
            total = scores_total(trace.layers, lm, trace.layer_pooled_stats(),
                                 float(om["sqnr_db"][j]), o.layer)
            remedy = int16_remedy(trace.meta.quantizer.name)
            say(f"[yellow]no culprits{about}[/]: "
                f"{no_culprits_reason(trace.layers, lm, every, total, remedy)}", soft_wrap=True)
        else:
            say(f"output {_safe(o.name)}: [green]healthy[/] at "
                f"{db_unit(float(om['sqnr_db'][j]))}, no culprits")


#: The attachment limit of GitHub's issues (25 MB): a trace is meant to be attached.
ATTACH_LIMIT = 25_000_000


def size_note(trace: Trace) -> str:
    """The trace's size, and when it is too big to attach to an issue, why and what to do."""
    size = trace.path.stat().st_size
    text = f"{size / 1e6:.1f} MB"
    if size <= ATTACH_LIMIT:
        return text
    over = f"{text}: over the 25 MB an issue tracker takes"
    if len(trace.stored_samples):
        return (f"{over}; `qdebug export TRACE --slim OUT.h5` drops the stored activations, "
                "or trace with --store-samples 0")
    # Nothing optional left: the metrics, worst inputs and, mostly, the model itself.
    return f"{over}, {trace.model_stored_bytes() / 1e6:.1f} MB of it the INT8 model"
