"""``qdebug explore``: Google's Model Explorer on a trace's INT8 model, with qdebug's per-op
overlays (accumulated SQNR, local SQNR, gain). Needs the ``explorer`` extra; never imports
TensorFlow itself (Model Explorer's TFLite adapter is its own business)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from qdebug.errors import QdebugError
from qdebug.store.reader import Trace

INSTALL_HINT = "install it with: pip install 'qdebug[explorer]'"


def import_model_explorer() -> Any:
    """``model_explorer``, or one line saying how to install it."""
    try:
        import model_explorer
    except ImportError:
        raise QdebugError(
            "Model Explorer (ai-edge-model-explorer) is not installed: qdebug explore needs it",
            INSTALL_HINT,
        ) from None
    return model_explorer


def prepare(trace: Trace, folder: Path) -> tuple[Path, list[Path]]:
    """Write the trace's INT8 ``.tflite`` and its node data into ``folder``."""
    from qdebug.output.export import export_trace
    from qdebug.output.model_explorer import write_node_data

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in trace.model_name) or "model"
    tflite = folder / f"{safe}_int8.tflite"
    export_trace(trace, tflite, None, force=True)
    return tflite, write_node_data(trace, folder / f"{safe}.json", force=True)


def explore(
    trace_path: Path, *, host: str = "localhost", port: int = 8080, open_browser: bool = True,
    folder: Path | None = None,
) -> None:
    """Start Model Explorer's server on the trace's INT8 model with the overlays; blocks until
    Ctrl+C. The trace is closed before the server starts."""
    from qdebug.store.reader import open_trace

    me = import_model_explorer()
    where = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="qdebug-explore-"))
    where.mkdir(parents=True, exist_ok=True)
    with open_trace(trace_path) as trace:
        tflite, overlays = prepare(trace, where)
    config = me.config().add_model_from_path(str(tflite))
    for p in overlays:
        config.add_node_data_from_path(str(p))
    me.visualize_from_config(
        config, host=host, port=port, no_open_in_browser=not open_browser
    )
