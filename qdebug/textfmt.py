"""How qdebug writes a value for people: dB, fractions, plain numbers and LSB, and text from
traces made safe for a terminal. Pure Python, below every package that writes for people, so
analysis (culprits' reasons, diff verdicts), output and the viewer write one value one way.

Names come from strangers' files: an ``ESC]52;c;…BEL`` in a layer name would write the user's
clipboard, ``ESC]0;`` the window title, a bidi override reorder what is shown. Every output for
people goes through ``printable`` (one field or one line) or ``printable_lines`` (a text whose
own line breaks are kept); JSON and CSV for scripts keep names exact.

A stranger's string may also be a million characters long: ``shown`` caps a name or a reason
before any renderer sees it (Rich's highlighter is quadratic in a string's length) and says
how long it was.
"""

from __future__ import annotations

import math
import unicodedata

#: What is shown where a value does not exist (a layer without a tensor, a trace without it).
MISSING = "—"


def db(value: float, signed: bool = False) -> str:
    """A dB value for people: ``∞`` for no error at all, ``—`` when there is no value."""
    if math.isnan(value):
        return MISSING
    if math.isinf(value):
        return ("+∞" if signed else "∞") if value > 0 else "−∞"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def db_unit(value: float) -> str:
    """``db`` with its unit where it is a number: ``31.2 dB``, ``∞``, ``—``."""
    text = db(value)
    return f"{text} dB" if math.isfinite(value) else text


def pct(value: float, signed: bool = False, digits: int = 1) -> str:
    """A fraction as a percentage (``digits`` decimals), ``—`` when there is no value."""
    if math.isnan(value):
        return MISSING
    return f"{value * 100:{'+' if signed else ''}.{digits}f}%"


def pct_fine(value: float) -> str:
    """A fraction as a percentage to two decimals, for the viewer's columns, where a few
    saturated values in a million must not read as 0: ``0``, ``<0.01%``, ``12.30%``."""
    if math.isnan(value):
        return MISSING
    if value == 0:
        return "0"
    return "<0.01%" if abs(value) < 1e-4 else f"{value * 100:.2f}%"


def plain(value: float, digits: int = 2) -> str:
    """A plain number, ``—`` when there is no value."""
    return MISSING if math.isnan(value) else f"{value:.{digits}f}"


def num(value: float) -> str:
    """A number of any size with a few significant digits, ``—`` when there is none."""
    if math.isnan(value):
        return MISSING
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def lsb(value: float) -> str:
    """An error in LSB, ``—`` when there is none."""
    return MISSING if math.isnan(value) else f"{value:.2f}"


def printable(s: str) -> str:
    """Trace text made safe for a terminal: control and bidi characters become visible
    escapes (``\\x1b``) instead of reaching the terminal."""
    if s.isprintable():
        return s
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")
        else ch
        for ch in s
    )


def printable_lines(text: str) -> str:
    """``printable`` on each line of ``text``, keeping its ``\\n`` line breaks."""
    return "\n".join(printable(line) for line in text.split("\n"))


#: Characters of a name (layer, class, op, tensor, output, model) shown to people: a fused
#: op's TFLite tensor name runs to a few hundred.
NAME_LIMIT = 1000
#: Characters of a free text from a trace (a culprit's reason, a warning, a data source).
TEXT_LIMIT = 4000


def shown(s: object, limit: int = NAME_LIMIT) -> str:
    """Trace text for people: safe for a terminal (``printable``) and at most ``limit``
    characters of it (escapes included), then how long the text was."""
    text = str(s)
    safe = printable(text[:limit])
    if len(text) <= limit and len(safe) <= limit:
        return safe
    return f"{safe[:limit]}… ({len(text):,} characters in all)"
