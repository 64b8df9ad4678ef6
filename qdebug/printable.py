"""Text from a trace, a model or a file name made safe for a terminal.

Names come from strangers' files: an ``ESC]52;c;…BEL`` in a layer name would write the user's
clipboard, ``ESC]0;`` the window title, a bidi override reorder what is shown. Every output for
people goes through ``printable`` (one field or one line) or ``printable_lines`` (a text whose
own line breaks are kept); JSON and CSV for scripts keep names exact.
"""

from __future__ import annotations

import unicodedata


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
