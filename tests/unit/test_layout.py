"""The code's own shape: facts with one home stay in it (docs/architecture.md)."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "qdebug"


def test_sqnr_in_db_is_computed_in_metrics_only() -> None:
    """10·log10(Σf²/Σe²) has one home, ``metrics.sqnr_from_sums``: a second copy would drift
    (float32 against float64, another answer for no noise)."""
    homes = [
        f"{p.relative_to(PACKAGE)}:{n}"
        for p in sorted(PACKAGE.rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\blog10\(", line) and p.name != "metrics.py"
    ]
    assert homes == [], homes


def test_no_function_is_over_100_lines() -> None:
    """A function a reader can hold in view (issue 23): the trace run is phases, reports are
    built from parts."""
    import ast

    long = [
        f"{p.relative_to(PACKAGE)}:{n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for p in sorted(PACKAGE.rglob("*.py"))
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        and (n.end_lineno or n.lineno) - n.lineno + 1 > 100
    ]
    assert long == [], long


def test_no_module_is_over_450_lines() -> None:
    """One concept a module (issue 23): a module past 450 lines holds two."""
    big = [f"{p.relative_to(PACKAGE)} ({n} lines)" for p in sorted(PACKAGE.rglob("*.py"))
           if (n := len(p.read_text().splitlines())) > 450]
    assert big == [], big


def test_every_module_has_a_row_in_the_architecture_table() -> None:
    """docs/architecture.md names every module (issue 23): a newcomer finds where a thing lives;
    a package whose modules are one concept (``tools/check/``, ``tui/screens/``) has one row."""
    table = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"`([\w/]+(?:\.py|/))`", table))
    unlisted = [
        str(rel) for p in sorted(PACKAGE.rglob("*.py"))
        if p.name not in ("__init__.py", "__main__.py")
        and str(rel := p.relative_to(PACKAGE)) not in listed
        and not any(f"{parent}/" in listed for parent in rel.parents if str(parent) != ".")
    ]
    assert unlisted == [], unlisted
