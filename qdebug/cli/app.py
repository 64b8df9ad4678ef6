"""The ``qdebug`` command group: one-line errors and exit codes, output that survives a full
disk or a closed pipe, and ``--debug``. The commands live in ``tracing``, ``reading`` and
``tools`` beside this module."""

from __future__ import annotations

import contextlib
import errno
import gc
import io
import os
import sys
import traceback
import warnings
from typing import Any, NoReturn

import click

from qdebug.cli.signals import Stopped, stopping_signals
from qdebug.errors import QdebugError
from qdebug.output.fmt import printable, printable_lines
from qdebug.version import __version__

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
    from qdebug.output.glyphs import fit, stream_encoding

    with contextlib.suppress(OSError, ValueError):  # a closed terminal (SIGHUP) takes stderr
        click.echo(fit(line, stream_encoding(sys.stderr)), err=True)


def _out_of_memory(exc: BaseException, command: str | None) -> str | None:
    """The one line for a MemoryError outside a trace's own reads (which say which part of
    the trace is too big): the machine's memory ran out, not a bug to report."""
    if not isinstance(exc, MemoryError):
        return None
    what = " ".join(str(exc).split())[:200]
    what = f" ({what})" if what else ""
    fix = ("give data that fits in memory, trace in smaller batches (--batch-size 1), keep "
           "fewer activations (--store-samples 0), or use a machine with more memory"
           ) if command == "trace" else "close other programs, or use a machine with more memory"
    where = f"qdebug {command}" if command else "qdebug"
    return f"out of memory in {where}{what}: {fix}"


def _too_many_files(exc: BaseException) -> str | None:
    """The one line for an error caused by the open-files limit (``ulimit -n``), wherever it
    struck (opening a trace, a model, a module): the file is not at fault, so "check
    permissions" or "damaged" would send the user the wrong way."""
    seen: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(seen) < 8 and cause not in seen:
        seen.append(cause)
        if isinstance(cause, OSError) and cause.errno in (errno.EMFILE, errno.ENFILE):
            name = f" opening {os.fsdecode(cause.filename)}" if cause.filename else ""
            if cause.errno == errno.ENFILE:
                return (f"too many open files in the system{name}: close programs that hold "
                        "many files, or raise the system's limit (fs.file-max)")
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            limit = "" if soft == resource.RLIM_INFINITY else f" (this shell allows {soft})"
            return (f"too many open files{name}{limit}. Raise the limit, e.g. `ulimit -n 4096`, "
                    "and run again")
        cause = cause.__cause__ or cause.__context__
    return None


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
    show(printable_lines(text))


def show(text: str, nl: bool = True) -> None:
    """Print ``text`` for people (already made printable, e.g. by Rich) on stdout: characters
    its encoding lacks (a latin-1 or ASCII stdout) as ASCII look-alikes (``output.glyphs``)."""
    from qdebug.output.glyphs import fit, stream_encoding

    write(fit(text, stream_encoding(sys.stdout)), nl=nl)


def write(text: str, nl: bool = True) -> None:
    """Print ``text`` as it is (JSON, CSV for scripts) on stdout; characters its encoding lacks
    are written as backslash escapes (``prepare_streams``)."""
    try:
        click.echo(text, nl=nl)
    except OSError as exc:
        raise _stdout_failed(exc) from exc


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an open terminal (``sys.stdin`` is None when started with
    ``<&-``)."""
    try:
        return stream is not None and bool(stream.isatty())
    except (OSError, ValueError):
        return False


def prepare_streams() -> None:
    """Set up the standard streams before any command runs.

    - A closed standard stream (``>&-``) gets ``/dev/null`` on its descriptor, so that no file
      qdebug opens later takes number 0, 1 or 2 (where a library's own prints would land in
      the trace). A closed stdout is then refused: the command's output has nowhere to go.
    - stdout writes the characters its encoding lacks (``PYTHONIOENCODING=latin-1``, a file
      name that is not UTF-8) as backslash escapes instead of failing; text for people is
      given ASCII look-alikes first (``show``). stderr (progress, messages) gets look-alikes.
    """
    import qdebug.output.glyphs  # noqa: F401  (registers the "qdebug-text" error handler)

    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
            with contextlib.suppress(OSError):
                null = os.open(os.devnull, os.O_RDWR)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
    if 1 in closed:
        _say_err("qdebug: error: the standard output is closed (>&-). Send it to a file or "
                 "to /dev/null instead (> out.txt).")
        sys.exit(EXIT_BAD_INPUT)
    out = sys.stdout
    if isinstance(out, io.TextIOWrapper) and out.errors == "strict":
        with contextlib.suppress(ValueError, OSError):
            out.reconfigure(errors="backslashreplace")
    err = sys.stderr  # progress and messages, for people: look-alikes ('✓' -> 'ok')
    if isinstance(err, io.TextIOWrapper) and not _is_utf(err.encoding):
        with contextlib.suppress(ValueError, OSError):
            err.reconfigure(errors="qdebug-text")


def _is_utf(encoding: str) -> bool:
    import codecs

    try:
        return codecs.lookup(encoding).name.startswith("utf")
    except LookupError:
        return False


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
            _fail(_too_many_files(exc) or exc.one_line(), debug)
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
                _too_many_files(exc)
                or _out_of_memory(exc, ctx.invoked_subcommand)
                or f"unexpected {type(exc).__name__}: {text} (run with --debug for the "
                "traceback, and please report it)",
                debug,
            )


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qdebug")
@click.option("--debug", is_flag=True, expose_value=False,
              help="Show tracebacks instead of one-line errors.")
def cli() -> None:
    """Find where quantization error is born and where it grows, layer by layer.

    \b
    Typical session:
      qdebug trace model.keras --data samples.npy --out traces/run.h5
      qdebug view traces/run.h5                   # explore it in the terminal
      qdebug report traces/run.h5 --format json   # numbers for scripts
    """


#: ``--debug`` after a command's name as well (``qdebug trace ... --debug``). The group reads it
#: from the command line before parsing (``_debug_wanted``), so commands never see its value.
debug_option = click.option("--debug", is_flag=True, hidden=True, expose_value=False)


def say_err(line: str) -> None:
    """One line for people on stderr (control characters escaped)."""
    _say_err(printable(line))


#: Width of the text summary when stdout is not a terminal.
PIPE_WIDTH = 200
#: The narrowest summary: below it Rich drops whole columns (the layer names) or, at
#: ``COLUMNS=0``, prints nothing; a narrower terminal wraps the longer lines itself.
MIN_WIDTH = 60


def summary_text(tr: Any) -> str:
    """The summary as the terminal would show it (the text is printed by ``write``, so that a
    full disk or a closed pipe is one line, not a traceback from Rich)."""
    from rich.console import Console

    from qdebug.output.summary import print_summary

    screen = Console()  # what the real stdout is: width, terminal or not, colours
    # Piped or redirected (no terminal, no COLUMNS): lines as long as their content, not
    # folded at Rich's default of 80 columns in the middle of a layer name.
    width = screen.width if screen.is_terminal or "COLUMNS" in os.environ else PIPE_WIDTH
    width = max(width, MIN_WIDTH)
    buffer = io.StringIO()
    print_summary(tr, Console(file=buffer, width=width, force_terminal=screen.is_terminal,
                              color_system=screen.color_system))  # type: ignore[arg-type]
    return buffer.getvalue()


def print_result(path: Any, fmt: str, quiet: bool) -> None:
    """The summary (``text``) or the JSON report of the trace at ``path``."""
    from qdebug.store.reader import open_trace

    with open_trace(path) as tr:
        if fmt == "json":
            from qdebug.output.report_json import report_json

            write(report_json(tr))
        elif not quiet:
            show(summary_text(tr), nl=False)


def main() -> None:
    """Console-script entry point."""
    prepare_streams()
    try:
        cli(prog_name="qdebug")
    finally:
        # The process ends here. Python's last collections would walk every object alive,
        # which after a trace is TensorFlow's ~400,000: 0.8 s of every `qdebug trace`.
        # Frozen, they are not walked; files, atexit handlers and the streams close as usual.
        gc.freeze()

