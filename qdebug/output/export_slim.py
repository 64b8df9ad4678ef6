"""``qdebug export TRACE --slim OUT.h5``: a copy of a trace without its stored activations.

What stays: every attribute, table and metric (per-sample statistics included), the analysis,
the model, the labels and the kept inputs (stored samples, worst samples, each layer's worst).
What goes: ``/activations`` (the float, raw and f(x̂) tensors of the stored samples), which is
almost all of a trace's size. The copy opens in ``view``, ``report`` and ``diff`` like the
original; the viewer says a layer has no stored activations.

The source is opened with ``Trace`` first, so a trace that refers outside itself is refused
before anything is copied; the copy is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import h5py

from qdebug.errors import QdebugError
from qdebug.output.export import write_atomic
from qdebug.store.reader import Trace

#: Groups dropped by ``slim``.
DROPPED = ("activations",)


def slim_copy(trace: Trace, out: Path, force: bool = False) -> Path:
    """Write ``trace`` without its stored activations to ``out`` (atomically, as every export
    is); return ``out``."""
    if out.exists() and trace.path.exists() and os.path.samefile(out, trace.path):
        raise QdebugError(f"{out} is the trace being exported; not overwriting it",
                          "give another file name")

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
                src.copy(src[key], dst, name=key)
            dst.attrs["slim"] = True

    write_atomic(out, write, force)
    return out
