"""The model summary at the top of the main screen."""

from __future__ import annotations

import math

from rich.text import Text
from textual.widgets import Static

from qdebug.analysis.accuracy import accuracy
from qdebug.analysis.kernels import kernels_comparison
from qdebug.output.fmt import TEXT_LIMIT
from qdebug.store.meta import QUANTIZER_AEQ, ConverterSettings, DeployedKind
from qdebug.store.reader import Trace
from qdebug.store.schema import STATUS_UNMATCHED, STATUS_UNVERIFIED, VIEW_OPS
from qdebug.tui.layer_rows import fmt_db, shown, sqnr_style


def _converter(conv: ConverterSettings) -> str:
    if not conv.converted:
        return "given .tflite"
    parts = [conv.optimizations, conv.supported_ops,
             f"calib {conv.calib_samples if conv.calib_samples is not None else '?'}"]
    if conv.int8_io:
        parts.append("int8 io")
    return shown(", ".join(p for p in parts if p), TEXT_LIMIT)


def header_text(trace: Trace) -> Text:
    """Model, Keras flavour, conversion, samples, output SQNR, top-1, islands, flagged layers."""
    meta = trace.meta
    text = Text()
    text.append(shown(trace.model_name), style="bold")
    text.append(f"  {shown(meta.keras_flavour)}", style="cyan")
    text.append(f" · {shown(meta.kernels)}", style="dim")
    if meta.quantizer.name == QUANTIZER_AEQ:  # a float .tflite alone, --quantizer aeq
        text.append(f" · quantizer: {shown(meta.quantizer.describe(), TEXT_LIMIT)}", style="dim")
    else:
        text.append(f" · converter: {_converter(meta.converter)}", style="dim")
    if trace.view == VIEW_OPS:
        text.append(" · no Keras layer graph: rows are ops", style="yellow")
    if meta.deployed and meta.deployed_kind is not DeployedKind.FULL_INTEGER:
        text.append(f" · {shown(meta.deployed, TEXT_LIMIT)}", style="yellow")
    text.append("\n")
    text.append(f"{trace.n_samples} samples ({meta.n_stored} stored)")
    om = trace.output_metrics()
    for j, o in enumerate(trace.outputs):
        sq = float(om["sqnr_db"][j])
        text.append(" · output ")
        text.append(shown(o.name), style="bold")
        text.append(" SQNR ")
        text.append(f"{fmt_db(sq)} dB", style=sqnr_style(sq))
        top1 = float(om["top1_agreement"][j])
        if not math.isnan(top1):
            text.append(" · top-1 ")
            text.append(f"{top1 * 100:.1f}%", style="green" if top1 >= 0.99 else "yellow")
    acc = accuracy(trace)
    if acc is not None:
        text.append(" · accuracy ")
        text.append(f"{acc.float_accuracy * 100:.1f}% → {acc.int8_accuracy * 100:.1f}%",
                    style="green" if acc.drop <= 0.01 else "yellow")
        text.append(f" ({len(acc.right_to_wrong)} flipped wrong)", style="dim")
    islands = len(trace.float_islands)
    statuses = [r.status for r in trace.layers]
    flagged = statuses.count(STATUS_UNVERIFIED) + statuses.count(STATUS_UNMATCHED)
    text.append(" · float islands ")
    text.append(str(islands), style="yellow" if islands else "green")
    text.append(" · unverified/unmatched ")
    text.append(str(flagged), style="yellow" if flagged else "green")
    kernels = kernels_text(trace)
    if kernels.plain:
        text.append("\n")
        text.append_text(kernels)
    return text


def kernels_text(trace: Trace) -> Text:
    """``--xnnpack``: each output (and the accuracy) as XNNPACK computed them, beside the
    reference kernels' numbers, which the rest of the viewer shows. Empty without."""
    k = kernels_comparison(trace)
    text = Text()
    if k is None:
        return text
    text.append("XNNPACK (deployment kernels)", style="bold")
    text.append(f" took {k.delegated_ops}/{k.ops} ops, outputs differ on "
                f"{k.mismatched_samples}/{k.samples} samples", style="dim")
    for o in k.outputs:
        text.append(" · ")
        text.append(shown(o.name), style="bold")
        text.append(" SQNR ")
        text.append(f"{fmt_db(o.deployment_sqnr_db)} dB", style=sqnr_style(o.deployment_sqnr_db))
        text.append(f" (reference {fmt_db(o.reference_sqnr_db)})", style="dim")
        if not math.isnan(o.deployment_top1):
            text.append(f" top-1 {o.deployment_top1 * 100:.1f}%",
                        style="green" if o.deployment_top1 >= 0.99 else "yellow")
            text.append(f" (reference {o.reference_top1 * 100:.1f}%)", style="dim")
    if not math.isnan(k.deployment_accuracy):
        text.append(f" · accuracy {k.deployment_accuracy * 100:.1f}%")
        text.append(f" (reference {k.reference_accuracy * 100:.1f}%)", style="dim")
    return text


class HeaderPanel(Static):
    """One or two lines on the trace as a whole."""

    def __init__(self, trace: Trace, *, id: str | None = None) -> None:
        super().__init__(header_text(trace), id=id)
