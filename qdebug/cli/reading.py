"""The commands that read traces (no TensorFlow): ``report``, ``view``, ``diff``, ``export``,
``explore`` and ``plot``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from qdebug.cli.app import (
    cli,
    debug_option,
    is_terminal,
    print_result,
    say,
    show,
    summary_text,
    write,
)
from qdebug.cli.params import FiniteFloat
from qdebug.cli.signals import Stopped, leaving_on_signals
from qdebug.output.fmt import printable_lines


@cli.command()
@click.argument("trace_path", metavar="TRACE", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json", "csv"]),
              default="text", show_default=True,
              help="text for people, markdown for a GitHub issue, json for scripts, csv with "
              "TFLite QuantizationDebugger's columns first.")
@click.option("--chart", metavar="CHART.png|svg", type=click.Path(path_type=Path),
              help="markdown: draw qdebug plot's picture into CHART and link it under the "
              "headline.")
@click.option("--force", is_flag=True, help="With --chart: replace an existing picture.")
@debug_option
def report(trace_path: Path, fmt: str, chart: Path | None, force: bool) -> None:
    """Print what a trace says: model, output numbers, the five worst layers and the culprits
    (text); every layer with --format markdown, json or csv.

    \b
    Examples:
      qdebug report traces/run1.h5
      qdebug report traces/run1.h5 --format markdown > issue.md   # paste into a bug report
      qdebug report traces/run1.h5 --format markdown --chart chart.png > issue.md
      qdebug report traces/run1.h5 --format json | jq '.layers[] | select(.sqnr_db < 20)'
      qdebug report traces/run1.h5 --format csv > layers.csv
    """
    if chart is not None and fmt != "markdown":
        from qdebug.errors import QdebugError

        raise QdebugError(f"--chart goes with --format markdown (a {fmt} report links no "
                          "picture)", f"draw it alone: qdebug plot TRACE --out {chart}")
    if fmt in ("text", "json"):
        print_result(trace_path, fmt, quiet=False)
        return
    from qdebug.output.report_csv import report_csv
    from qdebug.output.report_markdown import report_markdown
    from qdebug.store.reader import open_trace

    with open_trace(trace_path) as tr:
        if fmt == "markdown":
            if chart is not None:  # drawn first: a picture that cannot be made, no report
                from qdebug.output.plot import plot_trace

                plot_trace(tr, chart, force=force)
            say(report_markdown(tr, None if chart is None else str(chart)).rstrip("\n"))
        else:  # CSV keeps names exact for scripts, but not for a terminal
            text = report_csv(tr)
            write(printable_lines(text) if is_terminal(sys.stdout) else text, nl=False)


@cli.command()
@click.argument("trace_path", metavar="TRACE", type=click.Path(path_type=Path))
@click.argument("other_path", metavar="[OTHER]", required=False, type=click.Path(path_type=Path))
@debug_option
def view(trace_path: Path, other_path: Path | None) -> None:
    """Explore a trace in the terminal; with OTHER, compare two traces layer by layer.

    When the standard output is not a terminal (a pipe, a file, CI), the summary of each trace
    is printed instead, as `qdebug report` prints it.

    \b
    Press ? inside for every key. Examples:
      qdebug view traces/run1.h5
      qdebug view traces/before.h5 traces/after.h5
    """
    from qdebug.tui.app import create_app

    app = create_app(trace_path, other_path)  # opens the traces: bad files fail here, one line
    if not (is_terminal(sys.stdout) and is_terminal(sys.stdin)):  # full screen would wait
        try:
            texts = [summary_text(t) for t in (app.trace, app.other) if t is not None]
        finally:
            app.trace.close()
            if app.other is not None:
                app.other.close()
        show("\n".join(texts), nl=False)
        return
    from qdebug.output.glyphs import cell_fallbacks

    with cell_fallbacks(sys.__stderr__), leaving_on_signals(app.exit) as signals:
        app.run()  # cell_fallbacks: where Textual draws; ASCII look-alikes under LC_ALL=C
    if signals:
        raise Stopped(signals[0])


@cli.command()
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--max-output-drop", type=FiniteFloat(min=0), default=1.0, show_default=True,
              metavar="DB", help="Largest allowed drop of an output's SQNR (dB).")
@click.option("--max-layer-drop", type=FiniteFloat(min=0), default=3.0, show_default=True,
              metavar="DB", help="Largest allowed drop of a layer's accumulated SQNR (dB).")
@click.option("--max-top1-drop", type=FiniteFloat(min=0, max=1), default=0.01,
              show_default=True, metavar="F",
              help="Largest allowed drop of top-1 agreement (fraction of samples).")
@click.option("--max-accuracy-drop", type=FiniteFloat(min=0, max=1), default=0.01,
              show_default=True, metavar="F",
              help="Largest allowed drop of INT8 task accuracy against labels (fraction of "
              "samples; when both traces have labels).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json", "github"]),
              default="text", show_default=True,
              help="text for the terminal, markdown for a PR, json for scripts, github for "
              "GitHub Actions (an ::error annotation per regression; the markdown diff "
              "appended to $GITHUB_STEP_SUMMARY when it is set).")
@debug_option
def diff(
    base: Path, new: Path, max_output_drop: float, max_layer_drop: float, max_top1_drop: float,
    max_accuracy_drop: float, fmt: str,
) -> None:
    """Compare two traces of one model: did quantization get worse from BASE to NEW?

    Reads only the summary tables of both traces (fast, no TensorFlow). Exit code 0 when NEW
    is within the thresholds, 1 on a regression, 2 on bad input (a missing, corrupt or
    unknown-schema trace, or traces of different models). Rules: docs/diff.md.

    \b
    Examples:
      qdebug diff traces/before.h5 traces/after.h5
      qdebug diff base.h5 new.h5 --max-layer-drop 6 --format markdown >> $GITHUB_STEP_SUMMARY
      qdebug diff base.h5 new.h5 --format github      # in a GitHub Actions step
    """
    from qdebug.analysis.trace_diff import Thresholds, diff_paths
    from qdebug.output.diff_render import RENDERERS

    result = diff_paths(
        base, new,
        Thresholds(max_output_drop, max_layer_drop, max_top1_drop, max_accuracy_drop),
    )
    if fmt == "github":
        from qdebug.output.diff_github import diff_github

        write(diff_github(result))
        _job_summary(RENDERERS["markdown"](result))
    else:
        (write if fmt == "json" else say)(RENDERERS[fmt](result).rstrip("\n"))
    sys.exit(1 if result.regressed else 0)


def _job_summary(markdown: str) -> None:
    """Append the markdown diff to the job summary file GitHub Actions names in
    ``$GITHUB_STEP_SUMMARY`` (nothing without it); a file that cannot be written is a warning
    annotation, not a failed diff."""
    import os

    from qdebug.output.diff_github import command

    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(markdown.rstrip("\n") + "\n\n")
    except OSError as exc:
        write(command("warning", f"could not append to $GITHUB_STEP_SUMMARY ({exc.strerror})"))


@cli.command()
@click.argument("trace_path", metavar="TRACE", type=click.Path(path_type=Path))
@click.option("--tflite", type=click.Path(path_type=Path), metavar="OUT.tflite",
              help="Write the exact INT8 model the trace was made from.")
@click.option("--inputs", type=click.Path(path_type=Path), metavar="OUT.npz",
              help="Write the inputs the trace keeps (stored samples and each layer's worst "
              "samples), keyed by input name.")
@click.option("--model-explorer", "explorer", type=click.Path(path_type=Path),
              metavar="OUT.json",
              help="Write Model Explorer node data: OUT.json (accumulated SQNR), "
              "OUT.local_sqnr.json and OUT.gain.json, keyed by the INT8 model's tensor names "
              "(open them with the .tflite from --tflite).")
@click.option("--slim", type=click.Path(path_type=Path), metavar="OUT.h5",
              help="Write the trace without its stored activations: every metric, table, the "
              "model and the kept inputs, a few MB to attach to a bug report.")
@click.option("--no-model", is_flag=True,
              help="With --slim: leave out the INT8 model's bytes too (its sha256 and the "
              "converter settings stay), for traces of large models; --tflite then needs the "
              "full trace.")
@click.option("--force", is_flag=True, help="Replace existing files.")
@debug_option
def export(
    trace_path: Path, tflite: Path | None, inputs: Path | None, explorer: Path | None,
    slim: Path | None, no_model: bool, force: bool,
) -> None:
    """Write back the INT8 .tflite model and the stored inputs of a trace.

    Files are written atomically and never overwritten without --force. The inputs file can
    be given back to `qdebug trace --data`.

    \b
    Examples:
      qdebug export traces/run1.h5 --tflite model_int8.tflite --inputs inputs.npz
      qdebug export traces/run1.h5 --model-explorer run1.json --tflite run1.tflite
      qdebug export traces/run1.h5 --slim run1-slim.h5       # small enough to attach
      qdebug export traces/resnet.h5 --slim small.h5 --no-model   # a large model's trace
    """
    from qdebug.output.export import export_trace
    from qdebug.store.reader import open_trace

    if no_model and slim is None:
        raise click.UsageError("--no-model goes with --slim OUT.h5 (the copy without the model)")
    with open_trace(trace_path) as tr:
        if slim is not None:
            from qdebug.output.export_slim import slim_copy

            slim_copy(tr, slim, force=force, no_model=no_model)
            size = slim.stat().st_size
            what = "stored activations and INT8 model" if no_model else "stored activations"
            say(f"wrote {slim} ({size / 2**20:.1f} MB: the trace without its {what})")
            if tflite is None and inputs is None and explorer is None:
                return
        if explorer is not None:
            from qdebug.output.model_explorer import write_node_data

            for p in write_node_data(tr, explorer, force=force):
                click.echo(f"wrote {p} (Model Explorer node data)")
            if tflite is None and inputs is None:
                return
        done = export_trace(tr, tflite, inputs, force=force)
    if done.tflite is not None:
        say(f"wrote {done.tflite} (the INT8 model)")
    if done.recipe is not None:
        say(f"wrote {done.recipe} (the ai-edge-quantizer recipe that made it: qdebug trace "
            f"FLOAT.tflite --recipe {done.recipe} makes it again)")
    if done.inputs is not None:
        say(f"wrote {done.inputs} (inputs of samples {list(done.samples)})")


@cli.command()
@click.argument("trace_path", metavar="TRACE", type=click.Path(path_type=Path))
@click.option("--host", default="localhost", show_default=True,
              help="Address to listen on. Anything but localhost, 127.0.0.1 or ::1 (e.g. "
              "0.0.0.0) is reachable from other machines: a warning says so.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port to listen on (default: the first free one from 8080 to 8099).")
@click.option("--no-browser", is_flag=True, help="Print the URL; do not open a browser.")
@click.option("--dir", "folder", type=click.Path(path_type=Path), metavar="FOLDER",
              help="Keep the .tflite and the node data in FOLDER, named after the model "
              "(default: a temporary folder, removed when the server stops).")
@click.option("--force", is_flag=True, help="Replace existing files in --dir.")
@debug_option
def explore(
    trace_path: Path, host: str, port: int | None, no_browser: bool, folder: Path | None,
    force: bool,
) -> None:
    """Open the trace's INT8 model in Google's Model Explorer, coloured by qdebug's numbers.

    Node-data overlays: accumulated SQNR, local SQNR and error gain of every op (pick one in
    Model Explorer's node data panel). Needs the explorer extra: pip install 'qdebug[explorer]'.

    The server is qdebug's own and serves the trace's model and node data, nothing else (no
    other file, no upload). It answers only requests for localhost, 127.0.0.1, [::1] (or
    --host) on its port that carry the random token of the URL it prints (a cookie after the
    first page), so other web pages cannot use it. Files in --dir are named after the model
    (cleaned: no path separators, no leading dot, at most 200 bytes) and never replace a file
    without --force. Ctrl-C stops it. Details: docs/robustness.md.

    \b
    Examples:
      qdebug explore traces/run1.h5
      qdebug explore traces/run1.h5 --port 8090 --no-browser
      qdebug explore traces/run1.h5 --dir me/ --no-browser   # keep the files
    """
    from qdebug.cli.app import say_err
    from qdebug.cli.signals import Stopped
    from qdebug.output.explore import Served
    from qdebug.output.explore import explore as run_explorer

    ready: list[Served] = []

    def on_ready(served: Served) -> None:
        if served.warning:
            say_err(f"qdebug: warning: {served.warning}")
        say(f"Model Explorer on {trace_path.name}'s INT8 model, with qdebug's overlays:")
        write(served.url)
        say("Press Ctrl+C to stop.")
        ready.append(served)

    def left(served: Served) -> str:
        if served.temporary:
            return "its temporary files are removed"
        return "kept " + ", ".join(str(p) for p in served.files)

    try:
        run_explorer(trace_path, host=host, port=port, open_browser=not no_browser,
                     folder=folder, force=force, on_ready=on_ready)
    except Stopped as exc:
        if not ready:
            raise
        say_err(f"qdebug: explore stopped by {exc.name}; {left(ready[0])}")
        sys.exit(exc.exit_code)
    if ready:
        say_err(f"qdebug: explore stopped; {left(ready[0])}")


@cli.command()
@click.argument("trace_path", metavar="TRACE", type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              metavar="CHART.svg|png", help="The picture to write.")
@click.option("--layer", metavar="LAYER", help="Histograms of this layer (default: the first "
              "culprit).")
@click.option("--force", is_flag=True, help="Replace an existing picture.")
@debug_option
def plot(trace_path: Path, out: Path, layer: str | None, force: bool) -> None:
    """Draw error by depth (accumulated and local SQNR per layer, the culprits circled and
    named) and, over every stored sample, one layer's float and int8 values with its
    calibrated range and its error. Needs matplotlib.

    The picture is written atomically and never over an existing file without --force; it is
    at most 1600 pixels wide (a long model's names are thinned, the culprits always named).

    \b
    Examples:
      qdebug plot traces/run1.h5 --out chart.svg
      qdebug report traces/run1.h5 --format markdown --chart chart.png > issue.md
    """
    from qdebug.output.plot import plot_trace
    from qdebug.store.reader import open_trace

    with open_trace(trace_path) as tr:
        say(f"wrote {plot_trace(tr, out, layer, force=force)}")
