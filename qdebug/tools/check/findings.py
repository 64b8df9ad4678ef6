"""A finding of ``qdebug check`` and how it is printed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

ERROR = "error"
WARNING = "warning"
INFO = "info"
_ORDER = {ERROR: 0, WARNING: 1, INFO: 2}


@dataclass(frozen=True)
class Finding:
    """One problem (or note) about a model or its data."""

    severity: str
    """``error`` (quantization will fail or be badly wrong), ``warning`` or ``info``."""
    check: str
    """Which check found it: ``ops``, ``tfmot``, ``dtypes``, ``calibration``, ``architecture``."""
    layer: str
    """The Keras layer (or input) concerned; empty for the whole model or data."""
    message: str
    """What is wrong, one sentence."""
    fix: str
    """What to do about it."""


def sort_findings(findings: Sequence[Finding]) -> list[Finding]:
    """Errors first, then warnings, then notes; stable within a severity."""
    return sorted(findings, key=lambda f: _ORDER.get(f.severity, 3))


def render_text(model: str, findings: Sequence[Finding]) -> str:
    """Findings for the terminal: one block per finding and a closing count."""
    lines = [f"qdebug check {model}"]
    for f in sort_findings(findings):
        where = f" [{f.layer}]" if f.layer else ""
        lines.append(f"{f.severity:<7} {f.check}{where}: {f.message}")
        if f.fix:
            lines.append(f"        fix: {f.fix}")
    counts = {s: sum(f.severity == s for f in findings) for s in (ERROR, WARNING, INFO)}
    lines.append(
        f"{counts[ERROR]} error(s), {counts[WARNING]} warning(s), {counts[INFO]} note(s)"
        if findings
        else "no problems found"
    )
    return "\n".join(lines)


def render_json(model: str, findings: Sequence[Finding]) -> str:
    """Findings as JSON: ``{"model", "findings": [...], "errors", "warnings"}``."""
    doc = {
        "model": model,
        "findings": [asdict(f) for f in sort_findings(findings)],
        "errors": sum(f.severity == ERROR for f in findings),
        "warnings": sum(f.severity == WARNING for f in findings),
    }
    return json.dumps(doc, indent=2)
