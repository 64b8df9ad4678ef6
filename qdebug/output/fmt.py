"""How qdebug writes for people and scripts. Every output — summary, reports, diff, the
viewer — formats through here, so one value is written one way everywhere: the numbers and the
terminal-safe names are ``qdebug.textfmt``'s (low enough for ``qdebug.analysis`` to use too),
re-exported here; the JSON-safe number is output's own.
"""

from __future__ import annotations

import math
from typing import Any

from qdebug.textfmt import (
    MISSING,
    NAME_LIMIT,
    TEXT_LIMIT,
    db,
    db_unit,
    lsb,
    num,
    pct,
    pct_fine,
    plain,
    printable,
    printable_lines,
    shown,
)

__all__ = [
    "MISSING", "NAME_LIMIT", "TEXT_LIMIT", "db", "db_unit", "json_num", "lsb", "num", "pct",
    "pct_fine", "plain", "printable", "printable_lines", "shown",
]


def json_num(value: Any) -> float | None:
    """A JSON-safe number: NaN and ±inf become None (see docs/metrics.md), -0.0 becomes 0.0."""
    if value is None:
        return None
    v = float(value)
    return v + 0.0 if math.isfinite(v) else None
