"""Output for a stream that cannot encode every character qdebug writes (``LC_ALL=C`` without
UTF-8 mode, ``PYTHONIOENCODING=latin-1``, an ASCII serial console).

qdebug's text uses a few non-ASCII glyphs (``—`` for no value, ``∞``, ``→``, ``·``, bars of
``█``, box lines) and shows names from traces as they are. Where the stream's encoding lacks a
character it is written as an ASCII look-alike instead of failing (``UnicodeEncodeError``) or
appearing as a ``\\u2588`` escape that breaks the layout:

- ``"qdebug-text"`` (the summary, reports and diffs for people): a look-alike of any length
  (``∞`` → ``inf``, ``→`` → ``->``), else the character's escape (``\\u4e2d``), so that a name
  stays recognisable;
- ``"qdebug-cells"`` (the full-screen viewer): exactly as many terminal cells as the character
  takes (``█`` → ``#``, ``╭`` → ``+``, a wide character → ``??``), so columns stay aligned.

Both are codec error handlers, registered on import: ``text.encode(encoding, "qdebug-text")``.
"""

from __future__ import annotations

import codecs
import contextlib
import unicodedata
from collections.abc import Iterator
from typing import Any

#: One-cell ASCII look-alikes of the glyphs qdebug, Rich and Textual draw.
CELLS: dict[str, str] = {
    **dict.fromkeys("─━┄┅┈┉╌╍═╴╶╸╺", "-"),
    **dict.fromkeys("│┃┆┇┊┋╎╏║╵╷╹╻▏▕", "|"),
    **dict.fromkeys("┌┍┎┏┐┑┒┓└┕┖┗┘┙┚┛├┝┞┟┠┡┢┣┤┥┦┧┨┩┪┫┬┭┮┯┰┱┲┳┴┵┶┷┸┹┺┻┼┽┾┿╀╁╂╃╄╅╆╇╈╉╊╋"
                    "╒╓╔╕╖╗╘╙╚╛╜╝╞╟╠╡╢╣╤╥╦╧╨╩╪╫╬╭╮╯╰", "+"),
    **dict.fromkeys("█▉▊▋▌▍▎▇▆▅▄▓", "#"),
    **dict.fromkeys("▀▃▂", "="),
    **dict.fromkeys("▁", "_"),
    "▒": ":", "░": ".", "▐": "|",
    **dict.fromkeys("—–‒−‐‑", "-"),
    **dict.fromkeys("·•∙⋅", "."),
    **dict.fromkeys("‘’‚′", "'"),
    **dict.fromkeys("“”„″", '"'),
    "…": ".", "×": "x", "≈": "~", "∞": "~", "Δ": "d", "µ": "u", "±": "+",
    **dict.fromkeys("▲▴△↑", "^"),
    **dict.fromkeys("▼▾▽↓", "v"),
    **dict.fromkeys("◀◂◁←⟵", "<"),
    **dict.fromkeys("▶▸▷→⟶", ">"),
    "≤": "<", "≥": ">", "≠": "!", "✓": "v", "✔": "v", "✗": "x", "✘": "x", "●": "*",
    "○": "o", "◆": "*", "◇": "o", "⏎": "<", "⌫": "<",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ",
}

#: Longer look-alikes where a text may grow (not the viewer's fixed columns).
WORDS: dict[str, str] = {
    "∞": "inf", "→": "->", "←": "<-", "⟶": "->", "⟵": "<-", "…": "...", "≤": "<=", "≥": ">=",
    "≠": "!=", "±": "+/-", "≈": "~", "Δ": "delta ", "µ": "u", "✓": "ok", "✗": "x",
}


def _cells(ch: str) -> int:
    """Terminal cells ``ch`` takes: 2 for wide (CJK) characters, 0 for combining marks."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _escape(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte of a file name (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else (
        f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def _text_handler(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    part = exc.object[exc.start:exc.end]
    return "".join(WORDS.get(ch) or CELLS.get(ch) or _escape(ch) for ch in part), exc.end


def _cells_handler(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    part = exc.object[exc.start:exc.end]
    return "".join(CELLS.get(ch) or "?" * _cells(ch) for ch in part), exc.end


codecs.register_error("qdebug-text", _text_handler)
codecs.register_error("qdebug-cells", _cells_handler)


def stream_encoding(stream: Any) -> str:
    """The encoding of ``stream`` (``utf-8`` when it says none, as a StringIO)."""
    return getattr(stream, "encoding", None) or "utf-8"


def fit(text: str, encoding: str) -> str:
    """``text`` as ``encoding`` can write it: unchanged when it can, else with ASCII
    look-alikes or escapes for the characters it lacks (``"qdebug-text"``)."""
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, "qdebug-text").decode(encoding)
    except LookupError:  # an encoding Python does not know: ASCII is safe
        return text.encode("ascii", "qdebug-text").decode("ascii")
    return text


@contextlib.contextmanager
def cell_fallbacks(stream: Any) -> Iterator[None]:
    """While inside, characters ``stream``'s encoding lacks are written as one-cell ASCII
    look-alikes (``"qdebug-cells"``); nothing changes on a UTF-8 stream or one that cannot be
    reconfigured."""
    reconfigure = getattr(stream, "reconfigure", None)
    encoding = stream_encoding(stream)
    try:
        needed = reconfigure is not None and codecs.lookup(encoding).name != "utf-8"
    except LookupError:
        needed = False
    if not needed:
        yield
        return
    errors = stream.errors
    stream.reconfigure(errors="qdebug-cells")
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):
            stream.reconfigure(errors=errors)
