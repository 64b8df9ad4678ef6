"""``qdebug diff --format github``: GitHub Actions workflow commands for a diff.

One ``::error`` line per threshold exceeded, a ``::notice`` for the verdict when NEW is within
the thresholds and one per note. The runner reads every line of a step's output that starts
with ``::`` as a command, so text from the traces (layer, model and output names, paths) must
never start a line of its own: values are escaped as the runner's toolkit escapes them (``%``,
CR and LF in messages; also ``:`` and ``,`` in properties), and control characters are shown as
escapes first. The job summary (``$GITHUB_STEP_SUMMARY``) gets the markdown diff.
"""

from __future__ import annotations

from qdebug.analysis.trace_diff import DiffResult
from qdebug.output.fmt import printable

TITLE = "qdebug diff"
#: Characters of a message kept (GitHub shows annotations of a few hundred characters).
MESSAGE_LIMIT = 1000


def _safe(text: str) -> str:
    """Trace text made printable (control characters as escapes), at most MESSAGE_LIMIT long."""
    text = printable(text)
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "…"


def escape_data(text: str) -> str:
    """A workflow command's message: ``%``, CR and LF escaped (one line, whatever the text)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value (``title=…``): also ``:`` and ``,`` escaped."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, title: str = TITLE) -> str:
    """``::kind title=…::message``, with the trace's text made safe and escaped."""
    return f"::{kind} title={escape_property(_safe(title))}::{escape_data(_safe(message))}"


def diff_github(result: DiffResult) -> str:
    """The diff as workflow commands, one per line: an ``::error`` per regression reason, a
    ``::notice`` per note, and the verdict."""
    where = f"{result.model_name}: {result.base} → {result.new}"
    lines = [command("error", f"{where}: {reason}", f"{TITLE}: regression")
             for reason in result.reasons]
    lines += [command("notice", note) for note in result.notes]
    if result.regressed:
        lines.append(command("error", f"{where}: {len(result.reasons)} threshold(s) exceeded",
                             f"{TITLE}: regression"))
    else:
        lines.append(command("notice", f"{where}: no regression (within every threshold)",
                             f"{TITLE}: ok"))
    return "\n".join(lines)
