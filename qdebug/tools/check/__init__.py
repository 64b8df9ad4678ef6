"""``qdebug check``: pre-flight diagnosis of why a model will not quantize well.

Each check returns ``Finding`` objects (severity, layer, message, fix). TensorFlow is imported
only inside the functions that need it.
"""

from __future__ import annotations

from qdebug.tools.check.findings import ERROR, INFO, WARNING, Finding, render_json, render_text
from qdebug.tools.check.runner import run_checks

__all__ = ["ERROR", "INFO", "WARNING", "Finding", "render_json", "render_text", "run_checks"]
