"""The layer-detail screen: numbers, histograms, per-channel SQNR, per-sample picker."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from qdebug.analysis.accuracy import Accuracy, accuracy, sample_order
from qdebug.errors import TraceFileError
from qdebug.store.reader import Trace
from qdebug.store.schema import VIEW_OPS, LayerRecord
from qdebug.tui.channel_view import pooled_channels
from qdebug.tui.custom_view import custom_numbers
from qdebug.tui.input_view import input_text
from qdebug.tui.layer_rows import (
    LayerRow,
    fmt_db,
    fmt_lsb,
    fmt_num,
    fmt_pct,
    shape_text,
    shown,
    sqnr_style,
    status_text,
)
from qdebug.tui.loaders import (
    ActivationLoaded,
    LoadFailed,
    SampleMetricsLoaded,
    load_activation,
    load_sample_sqnr,
)
from qdebug.tui.ops_view import op_line, ops_folded, ops_summary
from qdebug.tui.widgets.histogram import channel_bars, error_histogram, value_histogram

WORST_SAMPLES = 8

#: How a flipped sample is marked in the worst-samples list.
FLIP_STYLE = {"right→wrong": "bold red", "wrong→right": "green"}


def _numbers(row: LayerRow) -> Text:
    v = row.values
    text = Text()
    for label, key, fmt, sev in (
        ("accumulated", "sqnr_db", fmt_db, True),
        ("local", "local_sqnr_db", fmt_db, True),
        ("gain", "gain", fmt_num, False),
        ("weights", "weight_sqnr_db", fmt_db, True),
        ("RMSE LSB", "rmse_lsb", fmt_lsb, False),
        ("clip share", "clip_share", fmt_pct, False),
        ("clipped", "clip_fraction", fmt_pct, False),
        ("saturation", "saturation", fmt_pct, False),
        ("cosine", "cosine", fmt_num, False),
        ("max |e|", "max_abs_error", fmt_num, False),
        ("bias", "mean_error", fmt_num, False),
    ):
        x = v.get(key, math.nan)
        text.append(f"{label} ", style="dim")
        text.append(fmt(x) + (" dB" if fmt is fmt_db and not math.isnan(x) else ""),
                    style=sqnr_style(x) if sev else "bold")
        text.append("  ")
    return text


def ops_text(trace: Trace, rec: LayerRecord) -> Text:
    """The ops a layer lowered to, each with its accumulated and local SQNR (schema 1.2)."""
    text = Text()
    if len(rec.ops) < 2 and trace.view == VIEW_OPS:
        return text
    om = trace.op_metrics()
    for i in rec.ops:
        text.append_text(op_line(trace, i, om))
        text.append("\n")
    return text


def detail_head(rows: list[LayerRow], index: int, ops: Text | None = None) -> Text:
    """Identity, tensor, quantization, fused layers, the ops inside and pooled numbers of one
    layer."""
    row = rows[index]
    rec = row.record
    text = Text()
    text.append(shown(rec.name), style="bold")
    text.append(f"  {shown(rec.class_name)} · {shown(rec.op_type) or 'no op'} · "
                f"{shape_text(rec.output_shape)} · ")
    text.append(status_text(rec) + "\n", style="yellow" if not rec.measured else "")
    if rec.measured:
        text.append("tensor ", style="dim")
        text.append(f"{shown(rec.tensor_name)} (#{rec.tensor_index})\n")
        text.append("quant  ", style="dim")
        if math.isnan(rec.scale):
            text.append(f"{shown(rec.dtype)} (float tensor)\n")
        else:
            text.append(f"{shown(rec.dtype)} scale {rec.scale:.6g} zero point "
                        f"{rec.zero_point}\n")
    else:
        text.append(f"no tensor of its own: its value lives in {shown(rec.related) or '?'}'s "
                    "tensor; open that layer for numbers\n", style="dim")
    fused = [shown(r.record.name) for r in rows if r.record.related == rec.name]
    if fused:
        text.append("fused/folded into it ", style="dim")
        text.append(", ".join(fused) + "\n")
    if ops is not None and ops.plain:
        text.append_text(ops)
    text.append_text(_numbers(row))
    return text


class LayerDetailScreen(Screen[None]):
    """One layer in depth; heavy reads happen in thread workers."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("left_square_bracket", "sample(-1)", "Prev sample"),
        Binding("right_square_bracket", "sample(1)", "Next sample"),
        # One key, two meanings: the footer shows the one that applies (traces with --labels).
        Binding("f", "sort_worst('flipped')", "Flipped first"),
        Binding("f", "sort_worst('sqnr')", "Worst by SQNR"),
        Binding("o", "all_ops", "All ops"),
    ]

    def __init__(self, trace: Trace, rows: list[LayerRow], layer: int) -> None:
        super().__init__()
        self.trace = trace
        self.rows = rows
        self.layer_index = layer
        self.samples = [int(s) for s in trace.stored_samples]
        self.sample_sqnr: np.ndarray | None = None
        self.shown_sample: int | None = None
        try:
            self.accuracy: Accuracy | None = accuracy(trace)
        except TraceFileError:
            self.accuracy = None
        #: Order of the worst-samples list: ``sqnr`` or ``flipped`` (``qdebug.analysis.accuracy``).
        self.sort_by = "sqnr"
        #: Whether every op of a layer with many is listed (``o``).
        self.ops_shown = False

    def compose(self) -> ComposeResult:
        rec = self.rows[self.layer_index].record
        ops = ops_summary(self.trace, rec) if ops_folded(rec) else ops_text(self.trace, rec)
        head = detail_head(self.rows, self.layer_index, ops)
        yield Static(head + custom_numbers(self.trace, self.layer_index), id="detail-head")
        with Horizontal(id="detail-body"):
            with Vertical(id="sample-pane"):
                picker = OptionList(*self._sample_options(), id="samples")
                picker.border_title = "stored samples"
                yield picker
                worst = OptionList(id="worst-samples")
                worst.border_title = "worst samples"
                yield worst
            with VerticalScroll(id="plots"):
                yield Static("", id="hist")
                yield Static("", id="err-hist")
                yield Static("", id="channels")
                yield Static(self._pooled_channels(), id="channel-pooled")
                yield Static("", id="ops-all")
        yield Footer()

    def _pooled_channels(self) -> Text:
        """Per-channel numbers over all samples, and the weights' per channel."""
        if not self.measured:
            return Text()
        try:
            return pooled_channels(self.trace, self.layer_index)
        except TraceFileError as exc:
            return Text(exc.one_line(), style="red")

    @property
    def measured(self) -> bool:
        """Whether the layer has numbers of its own."""
        return self.rows[self.layer_index].measured

    def on_mount(self) -> None:
        # The app keeps the order, so the next layer opened lists its samples the same way.
        from qdebug.tui.app import QdebugApp  # the app imports this screen

        if isinstance(self.app, QdebugApp):
            self.sort_by = self.app.worst_sort
        self._title_worst()
        self.query_one("#hist", Static).update(self._placeholder())
        if not self.measured:
            self.query_one("#worst-samples", OptionList).add_option(Option("—", disabled=True))
            return
        self._load_samples()
        if self.samples and self.trace.has_activations(self.layer_index):
            self.query_one("#samples", OptionList).highlighted = 0
            self.show_sample(self.samples[0])
        self.query_one("#samples", OptionList).focus()

    def _placeholder(self) -> Text:
        if not self.measured:
            return Text("no activations: the layer has no tensor of its own", style="dim")
        if not self.samples or not self.trace.has_activations(self.layer_index):
            return Text("no stored activations for this layer (trace with --store-samples)",
                        style="dim")
        return Text("loading…", style="dim")

    def _sample_options(self) -> list[Option]:
        out = []
        for pos, s in enumerate(self.samples):
            label = Text(f"sample {s:>5}")
            if self.sample_sqnr is not None and s < len(self.sample_sqnr):
                v = float(self.sample_sqnr[s])
                label.append(f" {fmt_db(v):>6} dB", style=sqnr_style(v))
            out.append(Option(label, id=str(pos)))
        return out

    def show_sample(self, sample: int) -> None:
        """Load and show one stored sample (in a worker)."""
        if not self.trace.has_activations(self.layer_index):
            return
        self.shown_sample = sample
        self.query_one("#hist", Static).update(Text(f"loading sample {sample}…", style="dim"))
        self._load_activation(sample)

    def action_sample(self, step: int) -> None:
        picker = self.query_one("#samples", OptionList)
        if not self.samples:
            return
        pos = 0 if picker.highlighted is None else (picker.highlighted + step) % len(self.samples)
        picker.highlighted = pos
        self.show_sample(self.samples[pos])

    @on(OptionList.OptionSelected, "#samples")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        if event.option_id is not None:
            self.show_sample(self.samples[int(event.option_id)])

    @work(thread=True, exclusive=True, group="samples", exit_on_error=False)
    def _load_samples(self) -> None:
        self.post_message(load_sample_sqnr(self.trace, self.layer_index))

    @work(thread=True, exclusive=True, group="activation", exit_on_error=False)
    def _load_activation(self, sample: int) -> None:
        self.post_message(load_activation(self.trace, self.layer_index, sample))

    def on_sample_metrics_loaded(self, msg: SampleMetricsLoaded) -> None:
        if msg.layer != self.layer_index:
            return
        self.sample_sqnr = msg.sqnr_db
        picker = self.query_one("#samples", OptionList)
        keep = picker.highlighted
        picker.clear_options()
        picker.add_options(self._sample_options())
        picker.highlighted = keep
        self._fill_worst()

    def _fill_worst(self) -> None:
        """The worst-samples list in the current order: lowest SQNR at this layer first, or
        (``flipped``) the samples whose answer quantization flipped first."""
        if self.sample_sqnr is None:
            return
        sq = self.sample_sqnr
        stored = set(self.samples)
        try:
            kept = set(int(x) for x in self.trace.input_samples())
        except TraceFileError:
            kept = set()
        options = []
        for s in sample_order(sq, self.accuracy, self.sort_by)[:WORST_SAMPLES]:
            v = float(sq[s])
            label = Text(f"#{int(s):<6}")
            label.append(f"{fmt_db(v):>6} dB", style=sqnr_style(v))
            label.append(" stored" if int(s) in stored else " kept" if self._kept_activation(
                int(s)) else " input" if int(s) in kept else "", style="dim")
            flip = self.accuracy.flip_of(int(s)) if self.accuracy is not None else ""
            if flip:
                label.append(f"\n  {flip}", style=FLIP_STYLE[flip])
            options.append(Option(label, id=str(int(s))))
        worst = self.query_one("#worst-samples", OptionList)
        worst.clear_options()
        worst.add_options(options)

    def _title_worst(self) -> None:
        worst = self.query_one("#worst-samples", OptionList)
        acc = self.accuracy
        flipped_first = self.sort_by == "flipped" and acc is not None
        worst.border_title = "worst: flipped first" if flipped_first else "worst samples"
        worst.border_subtitle = (f"flipped {len(acc.right_to_wrong)} r→w "
                                 f"{len(acc.wrong_to_right)} w→r" if acc is not None else "")

    def action_all_ops(self) -> None:
        """List every op of a layer with many (folded in the head), below the histograms;
        again to fold them."""
        box = self.query_one("#ops-all", Static)
        rec = self.rows[self.layer_index].record
        self.ops_shown = not self.ops_shown
        box.update(Text(f"every op of {shown(rec.name)} ({len(rec.ops)})\n", style="bold")
                   + ops_text(self.trace, rec) if self.ops_shown else "")
        if self.ops_shown:  # once laid out with its new height
            self.call_after_refresh(box.scroll_visible, animate=False, top=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "all_ops":
            return ops_folded(self.rows[self.layer_index].record)
        if action == "sort_worst":
            # Only with labels, and only the order not already shown (the footer shows one).
            return self.accuracy is not None and parameters != (self.sort_by,)
        return True

    def action_sort_worst(self, by: str) -> None:
        """List the worst samples by ``sqnr`` or ``flipped`` first (traces with --labels)."""
        if self.accuracy is None or by == self.sort_by:
            return
        from qdebug.tui.app import QdebugApp  # the app imports this screen

        self.sort_by = by
        if isinstance(self.app, QdebugApp):
            self.app.worst_sort = by
        self._title_worst()
        self._fill_worst()
        self.refresh_bindings()

    @on(OptionList.OptionSelected, "#worst-samples")
    def _picked_worst(self, event: OptionList.OptionSelected) -> None:
        """Open a worst sample: its activations when stored, else its input when kept."""
        if event.option_id is not None:
            self.open_worst(int(event.option_id))

    def _kept_activation(self, sample: int) -> bool:
        """Whether the trace keeps this layer's activation of a sample it does not store (one
        of the layer's worst)."""
        try:
            return self.trace.has_activation(self.layer_index, sample)
        except TraceFileError:
            return False

    def open_worst(self, sample: int) -> None:
        """Show one of the layer's worst samples: its activations (stored, or kept as the
        layer's worst), else the input the trace kept."""
        if sample in self.samples and self.trace.has_activations(self.layer_index):
            picker = self.query_one("#samples", OptionList)
            picker.highlighted = self.samples.index(sample)
            self.show_sample(sample)
            return
        if self._kept_activation(sample):
            self.shown_sample = sample
            self.query_one("#hist", Static).update(Text(f"loading sample {sample}…", style="dim"))
            self._load_activation(sample)
            return
        self.shown_sample = None
        try:
            kept = sample in set(int(x) for x in self.trace.input_samples())
            shown = input_text(sample, self.trace.inputs(sample)) if kept else Text(
                f"sample {sample}: neither its activations nor its input are in this trace "
                "(it keeps the inputs of each layer's few worst samples)", style="dim")
        except TraceFileError as exc:
            shown = Text(exc.one_line(), style="red")
        self.query_one("#hist", Static).update(shown)
        self.query_one("#err-hist", Static).update("")
        self.query_one("#channels", Static).update("")

    def on_activation_loaded(self, msg: ActivationLoaded) -> None:
        if msg.layer != self.layer_index or msg.view.sample != self.shown_sample:
            return
        view = msg.view
        head = Text.assemble(
            ("sample ", "dim"), str(view.sample), ("  SQNR ", "dim"),
            (f"{fmt_db(view.sqnr_db)} dB", sqnr_style(view.sqnr_db)),
            ("  calibrated range ", "dim"),
            f"[{view.low:.4g}, {view.high:.4g}]" if not math.isnan(view.low) else "float",
            ("  data spans ", "dim"), fmt_pct(view.range_used), (" of it", "dim"),
            ("  clipped ", "dim"), f"{view.clipped}/{view.size}\n\n",
            ("float vs int8 values\n", "bold"),
        )
        hist = self.query_one("#hist", Static)
        # bars as wide as the panel leaves after the labels (40 at most): at 80×24 the marks
        # ("◀ range high, clipped") wrapped onto a line of their own
        hist.update(head + value_histogram(view, _bars(hist.size.width, 10 + 24)))
        err = self.query_one("#err-hist", Static)
        err.update(Text("error q − f\n", style="bold")
                   + error_histogram(view, _bars(err.size.width, 12 + 8)))
        channels = Text(f"per-channel activation SQNR (sample {view.sample}, last axis)\n",
                        style="bold")
        box = self.query_one("#channels", Static)
        box.update(channels + channel_bars(view.channel_sqnr_db, _bars(box.size.width, 24)))

    def on_load_failed(self, msg: LoadFailed) -> None:
        if msg.layer == self.layer_index:
            self.query_one("#hist", Static).update(Text(msg.text, style="red"))


def _bars(width: int, labels: int) -> int:
    """Bar width for a text histogram in a widget ``width`` columns wide whose lines also
    hold ``labels`` columns of text: at most 40, at least 8 (0: not laid out yet, 40)."""
    if width <= 0:
        return 40
    return max(8, min(40, width - labels))
