"""``qdebug export TRACE --slim OUT.h5``: a copy of a trace without its stored activations.

What stays: every attribute, table and metric (per-sample statistics included), the analysis,
the model, the labels and the kept inputs (stored samples, worst samples, each layer's worst).
What goes: ``/activations`` (the float, raw and f(x̂) tensors of the stored samples, and those
kept for each layer's worst samples), which is
almost all of a trace's size; with ``no_model`` (``--slim --no-model``) also the INT8 model's
bytes, which fill a trace of a large model (ResNet50: 23.8 MB of 27 MB): its sha256 stays in
``int8_tflite_sha256`` beside the converter settings, and ``export --tflite`` on the copy says
where to get the model. The copy opens in ``view``, ``report`` and ``diff`` like the
original; the viewer says a layer has no stored activations.

The source is opened with ``Trace`` first, so a trace that refers outside itself is refused
before anything is copied; the copy is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

import h5py

from qdebug.errors import QdebugError
from qdebug.output.export import write_atomic
from qdebug.store.layer_worst import KEY as LAYER_WORST
from qdebug.store.reader import Trace
from qdebug.store.schema import ATTR_NO_MODEL, ATTR_TFLITE_SHA256, SCHEMA_VERSION

#: Groups dropped by ``slim``.
DROPPED = ("activations",)


#: The dataset dropped by ``no_model``.
MODEL_DATASET = "int8_tflite"


def slim_copy(trace: Trace, out: Path, force: bool = False, no_model: bool = False) -> Path:
    """Write ``trace`` without its stored activations (and, with ``no_model``, without the INT8
    model's bytes) to ``out`` (atomically, as every export is); return ``out``."""
    if out.exists() and trace.path.exists() and os.path.samefile(out, trace.path):
        raise QdebugError(f"{out} is the trace being exported; not overwriting it",
                          "give another file name")

    sha = hashlib.sha256(trace.tflite_bytes()).hexdigest() if no_model and trace.has_model else ""

    def write(fh: BinaryIO) -> None:
        with h5py.File(trace.path, "r") as src, h5py.File(
            fh, "w", libver=("earliest", "v110")
        ) as dst:
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            for key in src:
                if key in DROPPED:
                    dst.create_group(key)  # present and empty: readers find no activations
                    continue
                if no_model and key == "model":
                    group = dst.create_group(key)
                    for name in src[key]:
                        if name != MODEL_DATASET:
                            src.copy(src[key][name], group, name=name)
                    continue
                src.copy(src[key], dst, name=key)
            # each layer's worst samples' kept activations go too (their inputs stay)
            worst = f"{LAYER_WORST}/activations"
            if worst in dst:
                del dst[worst]
            dst.attrs["slim"] = True
            if no_model:
                dst.attrs[ATTR_NO_MODEL] = True
                dst.attrs["schema_version"] = SCHEMA_VERSION  # the attribute is schema 1.3
                if sha:
                    dst.attrs[ATTR_TFLITE_SHA256] = sha

    write_atomic(out, write, force)
    return out
