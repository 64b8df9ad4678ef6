"""The ``qdebug`` command line. Heavy imports (TensorFlow, Textual) happen inside the command
that needs them, so ``qdebug report`` and ``qdebug diff`` start fast without TensorFlow."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, NoReturn

import click

from qdebug import __version__
from qdebug.errors import QdebugError
from qdebug.filekind import refuse_special
from qdebug.printable import printable, printable_lines
from qdebug.signals import Stopped, stopping_signals

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _debug_wanted(argv: list[str]) -> bool:
    value = os.environ.get("QDEBUG_DEBUG", "").strip().lower()
    return "--debug" in argv or value in ("1", "true", "yes", "on")


def _quiet_exit(code: int) -> NoReturn:
    """Exit with ``code``, skipping teardown that would crash (HDF5 after a failed write) or
    take seconds (TensorFlow's); every file qdebug wrote is closed by then."""
    writer = sys.modules.get("qdebug.store.writer")
    if "tensorflow" in sys.modules or (writer is not None and writer.failed_writes()):
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _say_err(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # a closed terminal (SIGHUP) takes stderr
        click.echo(line, err=True)


def _fail(message: str, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exc()
    _say_err(f"qdebug: error: {printable(message)}")
    writer = sys.modules.get("qdebug.store.writer")
    if writer is not None and writer.failed_writes():  # HDF5 would crash at exit
        _quiet_exit(EXIT_BAD_INPUT)
    sys.exit(EXIT_BAD_INPUT)


def _usage_error(exc: click.UsageError) -> NoReturn:
    """click's usage errors as qdebug's one line (click prints three, without the prefix)."""
    ctx = exc.ctx
    where = ctx.command_path if ctx is not None else "qdebug"
    message = " ".join(exc.format_message().split()).rstrip(".")
    _say_err(f"qdebug: error: {printable(message)}. Try '{where} --help'.")
    sys.exit(EXIT_BAD_INPUT)


def _stdout_failed(exc: OSError) -> QdebugError:
    # Later writes (Python's own flush at exit) would fail again and print a traceback.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return QdebugError(
        f"cannot write to the standard output: {exc.strerror or exc}",
        "redirect it to a file on a disk with space, or to a reader that stays open",
    )


def say(text: str) -> None:
    """Print ``text`` for people on stdout: control characters from traces and models shown
    as escapes, a full disk or a closed pipe answered with one line."""
    write(printable_lines(text))


def write(text: str, nl: bool = True) -> None:
    """Print ``text`` as it is (JSON, CSV for scripts) on stdout."""
    try:
        click.echo(text, nl=nl)
    except OSError as exc:
        raise _stdout_failed(exc) from exc


class _Group(click.Group):
    """Turns qdebug's own errors into one line on stderr and exit code 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["qdebug.argv"] = list(args)  # the command line, recorded in traces
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            _usage_error(exc)

    def invoke(self, ctx: click.Context) -> Any:
        argv = ctx.meta.get("qdebug.argv", [])
        debug = _debug_wanted(argv)
        try:
            with warnings.catch_warnings(), stopping_signals():
                if not debug:  # numpy's "invalid value encountered" is not the user's business
                    warnings.simplefilter("ignore", RuntimeWarning)
                return super().invoke(ctx)
        except QdebugError as exc:
            _fail(exc.one_line(), debug)
        except click.UsageError as exc:
            _usage_error(exc)
        except KeyboardInterrupt:
            _say_err("qdebug: interrupted; nothing was written")
            _quiet_exit(EXIT_INTERRUPTED)
        except Stopped as exc:
            if debug:
                traceback.print_exc()
            _say_err(f"qdebug: stopped by {exc.name}; nothing was written")
            _quiet_exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:
            text = " ".join(str(exc).split())[:300]
            _fail(
                f"unexpected {type(exc).__name__}: {text} (run with --debug for the traceback, "
                "and please report it)",
                debug,
            )


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qdebug")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """Find where quantization error is born and where it grows, layer by layer.

    \b
    Typical session:
      qdebug trace model.keras --data samples.npy     # writes traces/<model>-<time>.h5
      qdebug view traces/model-*.h5                   # explore it in the terminal
      qdebug report traces/model-*.h5 --format json   # numbers for scripts
    """


@cli.command()
@click.argument("model")
@click.option(
    "--data", "data", required=True, metavar="DATA",
    help="Samples: .npy (one input), .npz keyed by input name, a folder of images, or "
    "module:function / file.py:function returning an iterable or a tf.data.Dataset.",
)
@click.option("--calib", metavar="DATA", help="Calibration data (default: DATA). Same forms.")
@click.option("--tflite", type=click.Path(path_type=Path), metavar="INT8.tflite",
              help="Trace this deployed INT8 model instead of converting MODEL.")
@click.option("--out", "-o", type=click.Path(path_type=Path), metavar="PATH",
              help="Trace file (default: traces/<model>-<timestamp>.h5). An existing trace "
              "there is replaced once the new one is complete; any other file is refused.")
@click.option("--samples", "-n", type=click.IntRange(min=1), metavar="N",
              help="Trace the first N samples (default: all; at most 10000 from a data "
              "function whose length is unknown).")
@click.option("--store-samples", type=click.IntRange(min=0), default=None, metavar="K",
              help="Keep full activations and inputs of the first K samples (default: as many "
              "of the first 16 as fit in --store-budget).")
@click.option("--store-budget", "store_budget", type=click.FloatRange(min=0), default=None,
              metavar="MB",
              help="Size of the stored activations when --store-samples is not given (default: "
              "what is left of 20 MB after the model, so the trace can be attached to a bug "
              "report).")
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True,
              metavar="N", help="Samples of the calibration data used by the converter.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Samples per Keras call (memory grows with it, not with N).")
@click.option("--xnnpack", is_flag=True,
              help="Also run LiteRT's default delegates (XNNPACK, the deployment kernels) and "
              "compare their outputs with the builtin kernels, which give every op's values.")
@click.option("--int8-io", is_flag=True,
              help="Convert with int8 inputs and outputs (default: float, with QUANTIZE and "
              "DEQUANTIZE at the edges).")
@click.option("--image-range", type=click.Choice(["0-1", "0-255", "-1-1"]), default="0-1",
              show_default=True, help="Pixel range for a folder of images.")
@click.option("--trust-model-code", is_flag=True,
              help="Allow Lambda layers in a model file (runs code stored in the file).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="The summary printed at the end.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or summary.")
@click.option("--keep-float", "keep_float", metavar="LAYER[,LAYER...]", default="",
              help="Leave these Keras layers in float (selective quantization; recorded in the "
              "trace).")
@click.option("--scheme", type=click.Choice(["int8", "int16x8"]), default="int8",
              show_default=True,
              help="int16x8: 16-bit activations and 8-bit weights (diff against an int8 trace "
              "to see which layers recover with more bits).")
@click.option("--shard", metavar="K/N",
              help="Trace only the K-th of N contiguous slices of DATA (whole batches; same "
              "conversion and calibration as a whole run). Merge the N traces with `qdebug "
              "merge`: a job array runs one shard per task.")
@click.option("--workers", default="1", show_default=True, metavar="N|auto",
              help="Run N shards in parallel local processes and merge them into one trace "
              "(auto: one per core this process may use; at most one per batch).")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="Run the shards as Ray tasks (pip install 'qdebug[ray]'): auto joins the "
              "running cluster, local starts one here, or ray://HOST:10001. --workers N sets "
              "the number of shards (auto: the cluster's CPUs).")
@click.option("--labels", metavar="LABELS",
              help="Class labels of DATA for task accuracy: labels.npy, file.npz[:key], or "
              "'data' for the (x, y) pairs a data function or tf.data dataset yields.")
@click.option("--metric", "metric", multiple=True, metavar="MODULE:FUNCTION",
              help="Also compute this metric of the sufficient statistics (module:function, "
              "file.py:function, or the name of a 'qdebug.metrics' entry point; repeatable). "
              "Its values and definition are stored in the trace: docs/metrics.md.")
@click.option("--debug", is_flag=True, hidden=True)
def trace(
    model: str, data: str, calib: str | None, tflite: Path | None, out: Path | None,
    samples: int | None, store_samples: int | None, store_budget: float | None,
    calib_samples: int,
    batch_size: int,
    xnnpack: bool, int8_io: bool, image_range: str, trust_model_code: bool, fmt: str,
    quiet: bool, keep_float: str, scheme: str, shard: str | None, workers: str,
    ray_address: str | None, labels: str | None, metric: tuple[str, ...],
    debug: bool,
) -> None:
    """Run MODEL in float Keras and INT8 LiteRT side by side and write a trace.

    MODEL is a Keras 3 .keras file, an .h5 of either Keras flavour, a tf_keras SavedModel
    folder, or a factory file.py:function / package.module:function returning a model (use
    one for custom layers). The model is converted to full-INT8 TFLite (calibrated on --calib,
    else DATA) unless --tflite gives the deployed model. Every Keras layer is mapped to the
    TFLite tensor holding its output, verified against a float twin, and measured.

    \b
    Examples:
      qdebug trace model.keras --data x.npy
      qdebug trace model.h5 --data val.npz --calib calib.npz --out traces/run1.h5
      qdebug trace model.keras --data x.npy --tflite deployed_int8.tflite
      qdebug trace examples/digits_cnn.py:build --data examples/out/digits.npy
      qdebug trace model.keras --data val.npy --workers auto   # every core, one trace
      qdebug trace model.keras --data val.npy --shard 2/8 --out s2.h5   # one job of an array
    """
    if tflite is not None:
        _precheck_file(tflite, "--tflite", "give the deployed INT8 .tflite model")
    if tflite is not None and _read_head(tflite)[4:8] != b"TFL3":
        raise QdebugError(
            f"{tflite} is not a .tflite model (no TFL3 identifier)",
            "give the deployed INT8 .tflite model",
        )
    if out is not None:
        from qdebug.store.writer import check_target

        check_target(out)
    kept = _layer_list(keep_float)
    if tflite is not None and (kept or scheme != "int8"):
        raise QdebugError(
            "--keep-float and --scheme change the conversion, and --tflite skips it",
            "drop --tflite to convert MODEL with them",
        )
    _precheck_path(model, "model", "give a .keras, .h5, SavedModel folder, or file.py:function")
    for spec in (data, calib):
        _precheck_path(spec, "data", "give .npy, .npz, an image folder, or module:function")
    if labels != "data":
        _precheck_path(labels, "labels", "give labels.npy, file.npz[:key], or 'data'")
    from qdebug.sharding import parse_shard
    from qdebug.tracer.shards import run_sharded

    shard_spec = parse_shard(shard) if shard is not None else None
    sharded = run_sharded(click.get_current_context(), workers, ray_address, shard_spec, quiet)
    if sharded is not None:
        _print_result(sharded, fmt, quiet)
        return
    from qdebug.store.outfile import claim
    from qdebug.tracer.tfenv import import_tf

    # Claimed before TensorFlow loads: a second run to the same --out is refused at once.
    with claim(out) if out is not None else contextlib.nullcontext():
        import_tf()
        from qdebug.tracer.loading import load_model, require_convertible
        from qdebug.tracer.pipeline import TraceOptions

        loaded = load_model(model, trust_code=trust_model_code)
        require_convertible(loaded)
        _trace_run(loaded, data, out, fmt, quiet, TraceOptions(
            out=out, samples=samples, store_samples=store_samples, store_budget_mb=store_budget,
            calib=calib, calib_samples=calib_samples, batch_size=batch_size, tflite=tflite,
            xnnpack=xnnpack, int8_io=int8_io, image_range=image_range,
            trust_model_code=trust_model_code, quiet=quiet or fmt == "json", keep_float=kept,
            scheme=scheme, shard=shard_spec, labels=labels, metrics=metric,
            command_line="qdebug " + " ".join(
                shlex.quote(a) for a in click.get_current_context().meta.get("qdebug.argv", [])
            ),
        ))


def _trace_run(loaded: Any, data: str, out: Path | None, fmt: str, quiet: bool,
               options: Any) -> None:
    from qdebug.tracer.pipeline import Tracer

    path = Tracer(loaded, data, options).run()
    _print_result(path, fmt, quiet)


@cli.command()
@click.argument("shards", metavar="SHARD.h5...", nargs=-1, required=True,
                type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), metavar="PATH",
              help="The merged trace (written atomically).")
@click.option("--store-samples", type=click.IntRange(min=0), metavar="K",
              help="Keep activations of the first K samples (default: the shards' "
              "--store-samples).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="The summary printed at the end.")
@click.option("--quiet", "-q", is_flag=True, help="No summary.")
@click.option("--debug", is_flag=True, hidden=True)
def merge(
    shards: tuple[Path, ...], out: Path, store_samples: int | None, fmt: str, quiet: bool,
    debug: bool,
) -> None:
    """Merge the shard traces of `qdebug trace --shard K/N` into the trace of one whole run.

    Per-sample statistics are concatenated in sample order; pooled metrics, worst samples and
    culprits are computed again from the summed statistics, as one run would. Refused (exit 2,
    nothing written): shards of different models or conversions (.tflite bytes, layer/op
    tables, outputs, schema, data), overlapping slices, missing slices, non-shard traces.

    \b
    Examples:
      qdebug merge shards/s*.h5 --out traces/run.h5
      qdebug merge s1.h5 s2.h5 s3.h5 --out run.h5 --format json
    """
    from qdebug.store.merge import merge_traces

    command = "qdebug " + " ".join(
        shlex.quote(a) for a in click.get_current_context().meta.get("qdebug.argv", [])
    )
    path = merge_traces(shards, out, store_samples=store_samples, command_line=command)
    _print_result(path, fmt, quiet)


def _read_head(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(8)
    except OSError as exc:
        raise QdebugError(f"{path}: cannot read ({exc.strerror})", "check permissions") from exc


def _precheck_path(spec: str | None, what: str, hint: str) -> None:
    """Fail fast, before TensorFlow loads, on a path that does not exist or is a pipe or a
    device (which would block or never end when read)."""
    if spec is None:
        return
    path = Path(spec)
    suffix = path.suffix.lower()
    looks_like_factory = ":" in spec and suffix not in (".npy", ".npz", ".keras", ".h5")
    if not path.exists() and not looks_like_factory:
        raise QdebugError(f"{spec}: no such file or folder ({what})", hint)
    refuse_special(path, what, hint)
    if looks_like_factory and not path.exists():
        refuse_special(spec.rpartition(":")[0], "Python", hint)


def _precheck_file(path: Path, option: str, hint: str) -> None:
    """A file an option names: it exists, and is a regular file (not a folder or a pipe)."""
    if not path.exists():
        raise QdebugError(f"{path}: no such file ({option})", hint)
    if path.is_dir():
        raise QdebugError(f"{path} is a folder, not a file ({option})", hint)
    refuse_special(path, option, hint)


def _print_result(path: Path, fmt: str, quiet: bool) -> None:
    from qdebug.store.reader import open_trace

    with open_trace(path) as tr:
        if fmt == "json":
            from qdebug.report import report_json

            write(report_json(tr))
        elif not quiet:
            write(_summary(tr), nl=False)


def _summary(tr: Any) -> str:
    """The summary as the terminal would show it (the text is printed by ``write``, so that a
    full disk or a closed pipe is one line, not a traceback from Rich)."""
    from rich.console import Console

    from qdebug.summary import print_summary

    screen = Console()  # what the real stdout is: width, terminal or not, colours
    buffer = io.StringIO()
    print_summary(tr, Console(file=buffer, width=screen.width, force_terminal=screen.is_terminal,
                              color_system=screen.color_system))  # type: ignore[arg-type]
    return buffer.getvalue()


@cli.command()
@click.argument("trace_path", metavar="TRACE", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json", "csv"]),
              default="text", show_default=True,
              help="text for people, markdown for a GitHub issue, json for scripts, csv with "
              "TFLite QuantizationDebugger's columns first.")
@click.option("--chart", metavar="CHART.png",
              help="markdown: link this picture (made by qdebug plot) under the headline.")
@click.option("--debug", is_flag=True, hidden=True)
def report(trace_path: Path, fmt: str, chart: str | None, debug: bool) -> None:
    """Print what a trace says: model, output numbers, the five worst layers and the culprits
    (text); every layer with --format markdown, json or csv.

    \b
    Examples:
      qdebug report traces/run1.h5
      qdebug report traces/run1.h5 --format markdown > issue.md   # paste into a bug report
      qdebug report traces/run1.h5 --format json | jq '.layers[] | select(.sqnr_db < 20)'
      qdebug report traces/run1.h5 --format csv > layers.csv
    """
    if fmt in ("text", "json"):
        _print_result(trace_path, fmt, quiet=False)
        return
    from qdebug.report_csv import report_csv
    from qdebug.report_markdown import report_markdown
    from qdebug.store.reader import open_trace

    with open_trace(trace_path) as tr:
        if fmt == "markdown":
            text = report_markdown(tr).rstrip("\n")
            if chart:  # the picture under the headline, so a bug report shows it first
                head, _, rest = text.partition("\n\n")
                text = f"{head}\n\n![error by depth]({chart})\n\n{rest}"
            say(text)
        else:  # CSV keeps names exact for scripts, but not for a terminal
            text = report_csv(tr)
            write(printable_lines(text) if sys.stdout.isatty() else text, nl=False)


@cli.command()
@click.argument("trace_path", metavar="TRACE", type=click.Path(path_type=Path))
@click.argument("other_path", metavar="[OTHER]", required=False, type=click.Path(path_type=Path))
@click.option("--debug", is_flag=True, hidden=True)
def view(trace_path: Path, other_path: Path | None, debug: bool) -> None:
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
    if not (sys.stdout.isatty() and sys.stdin.isatty()):  # full screen would wait for keys
        try:
            texts = [_summary(t) for t in (app.trace, app.other) if t is not None]
        finally:
            app.trace.close()
            if app.other is not None:
                app.other.close()
        write("\n".join(texts), nl=False)
        return
    app.run()


@cli.command()
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--max-output-drop", type=click.FloatRange(min=0), default=1.0, show_default=True,
              metavar="DB", help="Largest allowed drop of an output's SQNR (dB).")
@click.option("--max-layer-drop", type=click.FloatRange(min=0), default=3.0, show_default=True,
              metavar="DB", help="Largest allowed drop of a layer's accumulated SQNR (dB).")
@click.option("--max-top1-drop", type=click.FloatRange(min=0, max=1), default=0.01,
              show_default=True, metavar="F",
              help="Largest allowed drop of top-1 agreement (fraction of samples).")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0, max=1), default=0.01,
              show_default=True, metavar="F",
              help="Largest allowed drop of INT8 task accuracy against labels (fraction of "
              "samples; when both traces have labels).")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text",
              show_default=True, help="text for the terminal, markdown for a PR, json for CI.")
@click.option("--debug", is_flag=True, hidden=True)
def diff(
    base: Path, new: Path, max_output_drop: float, max_layer_drop: float, max_top1_drop: float,
    max_accuracy_drop: float, fmt: str, debug: bool,
) -> None:
    """Compare two traces of one model: did quantization get worse from BASE to NEW?

    Reads only the summary tables of both traces (fast, no TensorFlow). Exit code 0 when NEW
    is within the thresholds, 1 on a regression, 2 on bad input (a missing, corrupt or
    unknown-schema trace, or traces of different models). Rules: docs/diff.md.

    \b
    Examples:
      qdebug diff traces/before.h5 traces/after.h5
      qdebug diff base.h5 new.h5 --max-layer-drop 6 --format markdown >> $GITHUB_STEP_SUMMARY
    """
    from qdebug.diff_render import RENDERERS
    from qdebug.trace_diff import Thresholds, diff_paths

    result = diff_paths(
        base, new,
        Thresholds(max_output_drop, max_layer_drop, max_top1_drop, max_accuracy_drop),
    )
    (write if fmt == "json" else say)(RENDERERS[fmt](result).rstrip("\n"))
    sys.exit(1 if result.regressed else 0)


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
@click.option("--force", is_flag=True, help="Replace existing files.")
@click.option("--debug", is_flag=True, hidden=True)
def export(
    trace_path: Path, tflite: Path | None, inputs: Path | None, explorer: Path | None,
    slim: Path | None, force: bool, debug: bool,
) -> None:
    """Write back the INT8 .tflite model and the stored inputs of a trace.

    Files are written atomically and never overwritten without --force. The inputs file can
    be given back to `qdebug trace --data`.

    \b
    Examples:
      qdebug export traces/run1.h5 --tflite model_int8.tflite --inputs inputs.npz
      qdebug export traces/run1.h5 --model-explorer run1.json --tflite run1.tflite
      qdebug export traces/run1.h5 --slim run1-slim.h5       # small enough to attach
    """
    from qdebug.export import export_trace
    from qdebug.store.reader import open_trace

    with open_trace(trace_path) as tr:
        if slim is not None:
            from qdebug.export_slim import slim_copy

            slim_copy(tr, slim, force=force)
            size = slim.stat().st_size
            say(f"wrote {slim} ({size / 2**20:.1f} MB: the trace without stored activations)")
            if tflite is None and inputs is None and explorer is None:
                return
        if explorer is not None:
            from qdebug.model_explorer_data import write_node_data

            for p in write_node_data(tr, explorer, force=force):
                click.echo(f"wrote {p} (Model Explorer node data)")
            if tflite is None and inputs is None:
                return
        done = export_trace(tr, tflite, inputs, force=force)
    if done.tflite is not None:
        say(f"wrote {done.tflite} (the INT8 model)")
    if done.inputs is not None:
        say(f"wrote {done.inputs} (inputs of samples {list(done.samples)})")


@cli.command()
@click.argument("trace_path", metavar="TRACE", type=click.Path(path_type=Path))
@click.option("--host", default="localhost", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--no-browser", is_flag=True, help="Print the URL; do not open a browser.")
@click.option("--dir", "folder", type=click.Path(path_type=Path), metavar="FOLDER",
              help="Where to write the .tflite and the node data (default: a temporary folder).")
@click.option("--debug", is_flag=True, hidden=True)
def explore(
    trace_path: Path, host: str, port: int, no_browser: bool, folder: Path | None, debug: bool
) -> None:
    """Open the trace's INT8 model in Google's Model Explorer, coloured by qdebug's numbers.

    Node-data overlays: accumulated SQNR, local SQNR and error gain of every op (pick one in
    Model Explorer's node data panel). Needs the explorer extra: pip install 'qdebug[explorer]'.

    \b
    Examples:
      qdebug explore traces/run1.h5
      qdebug explore traces/run1.h5 --port 8090 --no-browser
    """
    from qdebug.explore import explore as run_explorer

    run_explorer(trace_path, host=host, port=port, open_browser=not no_browser, folder=folder)


@cli.command()
@click.argument("trace_path", metavar="TRACE", type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              metavar="CHART.svg|png", help="The picture to write.")
@click.option("--layer", metavar="LAYER", help="Histogram of this layer (default: the top "
              "culprit).")
@click.option("--debug", is_flag=True, hidden=True)
def plot(trace_path: Path, out: Path, layer: str | None, debug: bool) -> None:
    """Draw error by depth (accumulated and local SQNR per layer, culprits circled) and one
    layer's error histogram. Needs matplotlib.

    \b
    Examples:
      qdebug plot traces/run1.h5 --out chart.svg
      qdebug report traces/run1.h5 --format markdown --chart chart.png > issue.md
    """
    from qdebug.plot import plot_trace
    from qdebug.store.reader import open_trace

    with open_trace(trace_path) as tr:
        click.echo(f"wrote {plot_trace(tr, out, layer)}")


def _layer_list(text: str) -> tuple[str, ...]:
    """``a,b, c`` → ``("a", "b", "c")``."""
    return tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))


@cli.command()
@click.argument("model")
@click.option("--data", metavar="DATA", help="Evaluation data (same forms as qdebug trace).")
@click.option("--calib", metavar="DATA", help="Calibration data; with --data, coverage of the "
              "evaluation data by the calibrated ranges is checked.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--trust-model-code", is_flag=True,
              help="Allow Lambda layers in a model file (runs code stored in the file).")
@click.option("--debug", is_flag=True, hidden=True)
def check(
    model: str, data: str | None, calib: str | None, fmt: str, trust_model_code: bool,
    debug: bool,
) -> None:
    """Pre-flight: why MODEL may not quantize well, before or without a full trace.

    Tries the float and INT8 conversions, tfmot's quantize_model (tf_keras models), the dtypes,
    the data (sample count, duplicates, constant/NaN inputs, calibrated-range coverage) and the
    architecture (residual depth, unbalanced merges, softmax heads, outliers). Each finding
    names the layer and the fix. Exit 1 when there is an error, 0 otherwise, 2 on bad input.
    Findings: docs/check-and-fix.md.

    \b
    Examples:
      qdebug check examples/erf_gelu.py:build
      qdebug check model.keras --data val.npy --calib calib.npy --format json
    """
    _precheck_path(model, "model", "give a .keras, .h5, SavedModel folder, or file.py:function")
    for spec in (data, calib):
        _precheck_path(spec, "data", "give .npy, .npz, an image folder, or module:function")
    from qdebug.check import ERROR, render_json, render_text, run_checks
    from qdebug.tracer.tfenv import import_tf

    import_tf()
    findings = run_checks(model, data, calib, trust_model_code=trust_model_code)
    if fmt == "json":
        write(render_json(model, findings))
    else:
        say(render_text(model, findings))
    sys.exit(1 if any(f.severity == ERROR for f in findings) else 0)


def _search_options(calib: str | None, samples: int | None, trust: bool) -> dict[str, Any]:
    opts: dict[str, Any] = {"trust_model_code": trust}
    if calib is not None:
        opts["calib"] = calib
    if samples is not None:
        opts["samples"] = samples
    return opts


@cli.command()
@click.argument("model")
@click.option("--data", required=True, metavar="DATA", help="Evaluation data.")
@click.option("--calib", metavar="DATA", help="Calibration data (default: DATA).")
@click.option("--target-output-sqnr", type=float, metavar="DB",
              help="Reach at least this output SQNR (dB).")
@click.option("--target-top1", type=click.FloatRange(0, 1), metavar="F",
              help="Reach at least this top-1 agreement (fraction of samples).")
@click.option("--max-float-layers", type=click.IntRange(min=1), default=4, show_default=True,
              metavar="N", help="Keep at most N layers in float.")
@click.option("--time-budget", type=click.FloatRange(min=1), default=600, show_default=True,
              metavar="S", help="Stop trying new candidates after S seconds.")
@click.option("--samples", "-n", type=click.IntRange(min=1), metavar="N",
              help="Trace the first N samples of DATA per candidate.")
@click.option("--out", "-o", type=click.Path(path_type=Path), metavar="PATH",
              help="The final trace (default: traces/<model>-fixed-<timestamp>.h5).")
@click.option("--trust-model-code", is_flag=True, help="Allow Lambda layers in a model file.")
@click.option("--debug", is_flag=True, hidden=True)
def fix(
    model: str, data: str, calib: str | None, target_output_sqnr: float | None,
    target_top1: float | None, max_float_layers: int, time_budget: float, samples: int | None,
    out: Path | None, trust_model_code: bool, debug: bool,
) -> None:
    """Find a small set of layers to keep in float so the INT8 model reaches a target.

    Greedy, guided by the culprits of the current trace, every candidate verified by re-tracing.
    Prints the set, the numbers before and after, and the qdebug trace command that reproduces
    the final trace. Exit 0 when the target is reached, 1 when the budget ran out first.

    \b
    Examples:
      qdebug fix model.keras --data x.npy --target-output-sqnr 35
      qdebug fix model.keras --data x.npy --target-top1 0.99 --max-float-layers 3
    """
    if target_output_sqnr is None and target_top1 is None:
        raise QdebugError("no target given", "give --target-output-sqnr DB or --target-top1 F")
    _precheck_path(model, "model", "give a .keras, .h5, SavedModel folder, or file.py:function")
    for spec in (data, calib):
        _precheck_path(spec, "data", "give .npy, .npz, an image folder, or module:function")
    if out is not None:
        from qdebug.store.writer import check_target

        check_target(out)
    from qdebug.tracer.tfenv import import_tf

    import_tf()
    from qdebug.fix_search import Target, search_fix
    from qdebug.tracer.pipeline import default_trace_path

    prefix = f"qdebug trace {shlex.quote(model)} --data {shlex.quote(data)}"
    if calib:
        prefix += f" --calib {shlex.quote(calib)}"
    if samples:
        prefix += f" --samples {samples}"
    final = out or default_trace_path(Path(model.split(":")[0]).stem + "-fixed")
    result = search_fix(
        model, data, Target(target_output_sqnr, target_top1),
        max_float_layers=max_float_layers, time_budget_s=time_budget, out=final,
        command_prefix=prefix + f" --out {shlex.quote(str(final))}",
        progress=lambda line: _say_err(printable(line)),
        **_search_options(calib, samples, trust_model_code),
    )
    b, f = result.baseline, result.final
    lines = [f"keep in float: {', '.join(f.keep_float) or '(nothing)'}",
             f"output SQNR: {b.output_sqnr_db:.1f} dB -> {f.output_sqnr_db:.1f} dB"]
    if b.top1 == b.top1:
        lines.append(f"top-1 agreement: {b.top1:.3f} -> {f.top1:.3f}")
    verdict = "target reached" if result.reached else f"target not reached ({result.stopped})"
    lines += [f"{verdict}; {len(result.tried)} candidate(s) traced", f"trace: {f.trace}",
              f"reproduce: {result.command}"]
    say("\n".join(lines))
    sys.exit(0 if result.reached else 1)


@cli.command()
@click.argument("model")
@click.option("--data", required=True, metavar="DATA", help="Evaluation data.")
@click.option("--calib", metavar="DATA", help="Calibration data (default: DATA).")
@click.option("--layers", type=click.IntRange(min=1), default=8, show_default=True, metavar="N",
              help="Try the N best-ranked candidate layers (each costs one trace).")
@click.option("--samples", "-n", type=click.IntRange(min=1), metavar="N",
              help="Trace the first N samples of DATA per candidate.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--trust-model-code", is_flag=True, help="Allow Lambda layers in a model file.")
@click.option("--debug", is_flag=True, hidden=True)
def sensitivity(
    model: str, data: str, calib: str | None, layers: int, samples: int | None, fmt: str,
    trust_model_code: bool, debug: bool,
) -> None:
    """Keep each candidate layer alone in float; rank layers by the output SQNR it buys.

    \b
    Examples:
      qdebug sensitivity model.keras --data x.npy --layers 5
    """
    _precheck_path(model, "model", "give a .keras, .h5, SavedModel folder, or file.py:function")
    for spec in (data, calib):
        _precheck_path(spec, "data", "give .npy, .npz, an image folder, or module:function")
    import json

    from qdebug.tracer.tfenv import import_tf

    import_tf()
    from qdebug.fix_search import one_at_a_time

    base, ranked = one_at_a_time(
        model, data, layers=layers,
        progress=None if fmt == "json" else (lambda line: _say_err(printable(line))),
        **_search_options(calib, samples, trust_model_code),
    )
    if fmt == "json":
        write(json.dumps({
            "baseline_output_sqnr_db": base.output_sqnr_db,
            "layers": [
                {"layer": s.layer, "output_sqnr_db": s.output_sqnr_db, "delta_db": s.delta_db}
                for s in ranked
            ],
        }, indent=2))
        return
    lines = [f"baseline output SQNR {base.output_sqnr_db:.1f} dB; each layer alone in float:"]
    lines += [f"  {printable(s.layer):<32} {s.output_sqnr_db:6.1f} dB  ({s.delta_db:+.1f})"
              for s in ranked]
    say("\n".join(lines))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="qdebug")


if __name__ == "__main__":  # pragma: no cover
    main()
