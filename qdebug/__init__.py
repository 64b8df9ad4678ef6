"""qdebug: per-layer error-propagation debugger for quantized TensorFlow models.

The package root imports nothing heavy: ``qdebug.open`` needs only h5py and numpy, while
``qdebug.trace`` imports TensorFlow when it is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qdebug.version import __version__ as __version__

if TYPE_CHECKING:
    from pathlib import Path

    from qdebug.analysis.trace_diff import DiffResult
    from qdebug.store.reader import Trace


def open(path: str | Path) -> Trace:  # mirrors h5py.File / builtins.open naming
    """Open a trace file for reading (no TensorFlow needed)."""
    from qdebug.store.reader import open_trace

    return open_trace(path)


def trace(model: Any, data: Any, **options: Any) -> Any:
    """Trace a live Keras model (either flavour) on ``data``.

    See ``qdebug.tracer.pipeline.trace_model``.
    """
    from qdebug.tracer.pipeline import trace_model

    return trace_model(model, data, **options)


def diff(
    base: str | Path | Trace,
    new: str | Path | Trace,
    *,
    max_output_drop_db: float | None = None,
    max_layer_drop_db: float | None = None,
    max_top1_drop: float | None = None,
    max_accuracy_drop: float | None = None,
) -> DiffResult:
    """Compare two traces of one model (paths or open traces), BASE first.

    Thresholds left out keep their defaults (``qdebug.analysis.trace_diff.Thresholds``: 1 dB at an
    output, 3 dB at a layer, 0.01 of top-1 agreement, 0.01 of INT8 accuracy against labels when
    both traces have them). Returns a ``DiffResult`` with ``verdict``,
    ``regressed``, ``reasons``, per-layer ``layers`` and ``most_changed``. Raises
    ``TraceFileError`` for a missing or corrupt trace or traces of different models.
    """
    from qdebug.analysis.trace_diff import Thresholds, diff_paths

    given = {
        "max_output_drop_db": max_output_drop_db,
        "max_layer_drop_db": max_layer_drop_db,
        "max_top1_drop": max_top1_drop,
        "max_accuracy_drop": max_accuracy_drop,
    }
    thresholds = Thresholds(**{k: v for k, v in given.items() if v is not None})
    return diff_paths(base, new, thresholds)


def assert_no_regression(
    base: str | Path | Trace, new: str | Path | Trace, **thresholds: float
) -> DiffResult:
    """``diff`` for a test suite: raise ``AssertionError`` naming every threshold exceeded and
    the layers that got worse; return the result when NEW is within the thresholds.

    Takes the thresholds of ``diff`` (``max_output_drop_db``, ``max_layer_drop_db``,
    ``max_top1_drop``) as keywords.
    """
    result = diff(base, new, **thresholds)
    if result.regressed:
        from qdebug.output.diff_render import regression_message

        raise AssertionError(regression_message(result))
    return result
