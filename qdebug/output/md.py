"""Trace text in GitHub-flavoured markdown: bug reports, pull-request comments, job summaries.

A stranger's layer named ``<img src=https://…>`` would load a picture from their server when the
report is viewed (a beacon), ``</details><h1>…`` would break the report's layout, a backtick
would end the code span it is shown in, ``|`` would split a table row, ``$…$`` would be read as
mathematics. Every string from a trace goes through ``code`` (names: a code span whose fence is
longer than any run of backticks inside, where GitHub also makes no link, mention or issue
reference) or ``text`` (prose: ``<``, ``>`` and ``&`` as HTML entities, markdown's punctuation
escaped), after ``fmt.shown`` (capped, control characters and line breaks visible as escapes, so
a name never starts a new line).

``fold`` keeps a whole text under GitHub's limit of 65,536 characters for an issue or a comment
body: the longest lists lose their last rows, and a line says what was left out and where it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from qdebug.output.fmt import NAME_LIMIT, shown

#: GitHub's limit for an issue, pull request or comment body: 65,536 characters. ``fold``
#: counts UTF-8 bytes, which are never fewer.
BODY_LIMIT = 65_536


def size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (what ``fold`` keeps within ``BODY_LIMIT``)."""
    return len(text.encode("utf-8", "surrogatepass"))

# Punctuation that means something inside a line of GitHub's markdown: emphasis, links and
# images, code, table cells, strike-through, mathematics; `_` only where it may start or end
# emphasis (not inside a word: `conv2d_1`). `<`, `>` and `&` become entities instead. Trace text
# never starts a line, so list and heading marks need nothing.
_SPECIAL = re.compile(r"[\\`*\[\]|~$]|(?<![^\W_])_|_(?![^\W_])")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_HTML = re.compile(r"[&<>]")
# GitHub links `@name` to a user (and notifies them), and `#123`, `owner/repo#123` and
# `GH-123` to an issue, in text (not in code): an invisible word joiner after the `@`, `#` or
# `GH` leaves the characters as they are to a reader, and is no reference.
_REFERENCE = re.compile(r"(?<!\w)@(?=[A-Za-z0-9])|#(?=\d)|(?<!\w)GH(?=-\d)", re.ASCII)
WORD_JOINER = "\u2060"


def text(value: object, limit: int = NAME_LIMIT) -> str:
    """``value`` as literal markdown text: nothing in it is markup, HTML, a link or a new line.

    Valid in a table cell (``|`` is escaped) and inside HTML blocks (``<`` is an entity)."""
    escaped = _SPECIAL.sub(lambda m: "\\" + m.group(), shown(value, limit))
    escaped = _REFERENCE.sub(lambda m: m.group() + WORD_JOINER, escaped)
    return _HTML.sub(lambda m: _ENTITIES[m.group()], escaped)


def code(value: object, limit: int = NAME_LIMIT, *, in_table: bool = False) -> str:
    """``value`` as a code span: a fence of one more backtick than its longest run of them.

    In a table cell ``|`` is escaped as GitHub's tables require, even inside code."""
    body = shown(value, limit)
    if in_table:
        body = body.replace("|", "\\|")
    fence = "`" * (max((len(r) for r in re.findall(r"`+", body)), default=0) + 1)
    if body.startswith(("`", " ")) or body.endswith(("`", " ")):
        body = f" {body} "  # the renderer strips one space each side again
    return f"{fence}{body}{fence}"


def link(address: str) -> str:
    """A link's destination: as it is when plain, else in ``<…>`` with its specials escaped."""
    if re.fullmatch(r"[\w./:#?=%+-]+", address, flags=re.ASCII):
        return address
    return f"<{text(address, 1000)}>"


@dataclass
class Rows:
    """Lines that ``fold`` may shorten from the end (a table's rows, a list's items), after
    ``head`` lines it always keeps. ``what`` names the rows (``layers``), ``rest`` says where
    the ones left out are (``qdebug report TRACE --format csv``)."""

    head: list[str]
    rows: list[str]
    what: str
    rest: str
    keep: int = field(default=-1, repr=False)

    def lines(self) -> list[str]:
        """The head, the rows kept, and a line for the rows left out."""
        keep = len(self.rows) if self.keep < 0 else self.keep
        out = [*self.head, *self.rows[:keep]]
        if keep < len(self.rows):
            out += ["", self.omitted(len(self.rows) - keep)]
        return out

    def omitted(self, count: int) -> str:
        """The line saying what ``fold`` left out, and where it is."""
        return (f"*{count:,} more {self.what} not shown (GitHub takes {BODY_LIMIT:,} "
                f"characters): {self.rest}.*")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], what: str, rest: str) -> Rows:
    """A table whose cells are already markdown (``text``, ``code(in_table=True)``, numbers)."""
    head = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return Rows(head, ["| " + " | ".join(r) + " |" for r in rows], what, rest)


Block = Sequence["str | Rows"]


def render(blocks: Sequence[Block]) -> str:
    """The blocks (sections of lines and foldable rows) as one text, a blank line apart."""
    parts = []
    for block in blocks:
        if not block:  # a section with nothing to say
            continue
        lines: list[str] = []
        for item in block:
            lines += item.lines() if isinstance(item, Rows) else [item]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def fold(blocks: Sequence[Block], limit: int = BODY_LIMIT) -> str:
    """``render`` in at most ``limit`` bytes: the longest ``Rows`` lose their last rows
    first, until the text fits; each says how many it left out. A text that would still be too
    long (its fixed lines alone; callers cap them well below) is cut at a line, and says so."""
    out = render(blocks)
    foldable = sorted((r for b in blocks for r in b if isinstance(r, Rows)),
                      key=lambda r: -sum(map(len, r.rows)))
    for rows in foldable:
        if size(out) <= limit:
            break
        over = size(out) - limit + size(rows.omitted(len(rows.rows))) + 2
        keep = len(rows.rows)
        while keep > 0 and over > 0:
            keep -= 1
            over -= size(rows.rows[keep]) + 1
        rows.keep = keep
        out = render(blocks)
    if size(out) > limit:
        note = "\n\n*(cut here: the rest does not fit in GitHub's limit)*\n"
        head = out.encode("utf-8", "surrogatepass")[: limit - size(note)]
        text = head.decode("utf-8", "ignore")
        out = text[: max(text.rfind("\n"), 0)] + note
    return out
