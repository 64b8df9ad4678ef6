"""qdebug.textfmt: one way to write a value, the same as the format strings it replaced."""

from __future__ import annotations

import math

import numpy as np

from qdebug import textfmt
from qdebug.output import fmt


def test_percentages_read_as_pythons_percent_format_at_any_precision() -> None:
    values = [*np.random.default_rng(0).random(20_000).tolist(), 0.0, 0.005, 0.125, 0.995, 1.0]
    for v in values:
        assert textfmt.pct(v) == f"{v:.1%}"
        assert textfmt.pct(v, digits=0) == f"{v:.0%}"
        assert textfmt.pct(-v, signed=True) == f"{-v:+.1%}"


def test_no_value_and_no_error_are_written_one_way() -> None:
    assert textfmt.db(math.nan) == textfmt.pct(math.nan) == textfmt.plain(math.nan) == "—"
    assert textfmt.lsb(math.nan) == textfmt.num(math.nan) == textfmt.MISSING
    assert textfmt.db(math.inf) == "∞" and textfmt.db(-math.inf) == "−∞"
    assert textfmt.db_unit(31.25) == "31.2 dB" and textfmt.db_unit(math.inf) == "∞"


def test_output_formats_through_the_same_functions() -> None:
    for name in ("db", "db_unit", "pct", "pct_fine", "plain", "num", "lsb", "printable",
                 "printable_lines", "shown"):
        assert getattr(fmt, name) is getattr(textfmt, name)
    assert fmt.json_num(math.inf) is None and fmt.json_num(-0.0) == 0.0
