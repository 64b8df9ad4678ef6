"""JSON text for scripts: ±∞ written as the strings ``"inf"`` / ``"-inf"``, NaN as ``null``.

JSON has no infinity, and writing both NaN and ±∞ as ``null`` made an exact op (+∞ dB of SQNR)
and one that destroys its signal (−∞ dB) the same to a script (docs/metrics.md).
"""

from __future__ import annotations

import json
import math
from typing import Any

#: How +∞ and −∞ are written in JSON and CSV output.
POS_INF, NEG_INF = "inf", "-inf"


def utf8_text(s: str) -> str:
    """``s`` as valid UTF-8 text. A file name that is not UTF-8 reaches Python with each
    undecodable byte as a lone surrogate (U+DC80 … U+DCFF), which JSON can only write as an
    escape strict parsers refuse (``"\\udcff"``): each such byte is written ``\\xNN`` instead
    (``bad\\xff.h5``), any other lone surrogate as U+FFFD."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    s = s.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")  # join pairs
    return "".join(
        (f"\\x{ord(ch) - 0xDC00:02x}" if "\udc80" <= ch <= "\udcff" else "\ufffd")
        if "\ud800" <= ch <= "\udfff" else ch
        for ch in s
    )


def encode(value: Any) -> Any:
    """``value`` with every non-finite float replaced: ±∞ by ``"inf"``/``"-inf"``, NaN by None;
    every string valid UTF-8 (``utf8_text``)."""
    if isinstance(value, str):
        return utf8_text(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return POS_INF if value > 0 else NEG_INF
        return value
    if isinstance(value, dict):
        return {encode(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Indented JSON of ``value`` (see ``encode``); never writes ``Infinity`` or ``NaN``."""
    return json.dumps(encode(value), indent=2, allow_nan=False)


def num(value: Any) -> float | None:
    """A report's number: NaN becomes None, -0.0 becomes 0.0, ±inf stays (``dumps`` writes it
    as ``"inf"`` / ``"-inf"``)."""
    if value is None:
        return None
    v = float(value)
    return None if math.isnan(v) else v + 0.0
