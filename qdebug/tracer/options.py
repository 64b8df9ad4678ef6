"""What ``qdebug trace`` can be told besides the model and the data, and where a trace goes."""

from __future__ import annotations

import datetime as _dt
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qdebug.shards.slicing import ShardSpec
from qdebug.version import __version__


@dataclass
class TraceOptions:
    """Everything ``qdebug trace`` can be told besides the model and the data."""

    out: Path | None = None
    samples: int | None = None
    store_samples: int | None = None
    """Samples whose activations are stored; None: as many of the first 16 as fit in
    ``store_budget_mb``."""
    store_budget_mb: float | None = None
    """None: what is left of 20 MB after the model, so that the whole trace stays under
    GitHub's 25 MB attachment limit where the model allows it."""
    """Size budget of the stored activations and inputs when ``store_samples`` is None, so
    that a default trace can be attached to a bug report (GitHub takes 25 MB)."""
    calib: Any = None
    calib_samples: int = 200
    batch_size: int = 16
    tflite: Path | None = None
    xnnpack: bool = False
    int8_io: bool = False
    verify_samples: int = 4
    image_range: str = "0-1"
    trust_model_code: bool = False
    quiet: bool = False
    command_line: str = ""
    warnings: list[str] = field(default_factory=list)
    keep_float: tuple[str, ...] = ()
    """Keras layers to leave in float (selective quantization)."""
    scheme: str = "int8"
    """``int8`` or ``int16x8`` (16-bit activations)."""
    shard: ShardSpec | None = None
    """Trace only the K-th of N contiguous slices of the data (``--shard K/N``)."""
    labels: Any = None
    """Class labels of the samples (``qdebug.tracer.labels.load_labels``): task accuracy."""
    metrics: tuple[Any, ...] = ()
    """User metrics (``--metric``): specs, ``Metric`` objects or functions (qdebug.user_metrics)."""
    output_metrics: tuple[Any, ...] = ()
    """Metrics of the model's outputs (``--output-metric``): specs or functions."""
    quantizer: str = "converter"
    """What quantizes the float model: ``converter`` (the TFLite converter) or ``aeq``
    (ai-edge-quantizer; always for a float ``.tflite`` given alone)."""
    recipe: Any = None
    """The AEQ recipe (``qdebug.tracer.aeq.RecipeSpec``; None: static int8)."""


#: What a default trace may take beside the model's own size (MB), leaving room for metrics.
AUTO_BUDGET_MB = 20.0


def default_trace_path(model_name: str, folder: Path = Path("traces")) -> Path:
    """``traces/<model>-<timestamp>.h5``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name) or "model"
    return folder / f"{safe}-{stamp}.h5"


def software_versions(flavour: str) -> dict[str, str]:
    """The versions of everything that shaped a trace (recorded in its attributes)."""
    import h5py
    import keras
    import tensorflow as tf

    out = {
        "qdebug_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "numpy_version": np.__version__,
        "h5py_version": h5py.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        from importlib.metadata import version

        out["litert_version"] = version("ai-edge-litert")
    except Exception:
        out["litert_version"] = "?"
    if flavour == "tf_keras":
        import tf_keras

        out["keras_version"] = tf_keras.__version__
    return out
