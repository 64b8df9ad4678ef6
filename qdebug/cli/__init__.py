"""The ``qdebug`` command line. Heavy imports (TensorFlow, Textual) happen inside the command
that needs them, so ``qdebug report`` and ``qdebug diff`` start fast without TensorFlow.

``app`` holds the group and its error handling; the commands register on it from ``tracing``
(trace, merge), ``reading`` (report, view, diff, export, explore, plot) and ``tools`` (check,
fix, sensitivity).
"""

from __future__ import annotations

from qdebug.cli import reading, tools, tracing
from qdebug.cli.app import EXIT_BAD_INPUT, EXIT_INTERRUPTED, cli, main, say, write
from qdebug.cli.tracing import merge, trace

__all__ = [
    "EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "cli", "main", "merge", "reading", "say", "tools",
    "trace", "tracing", "write",
]
