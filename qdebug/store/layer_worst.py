"""``/samples/layer_worst`` (schema 1.2, optional): per layer, its worst samples by that layer's
per-sample SQNR, and the inputs of the worst few (docs/trace-format.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The group's path in a trace.
KEY = "samples/layer_worst"

#: One sample's values of one layer: float, raw (integers, or float for a float island) and
#: float_local (None without the decomposition).
Values = tuple[np.ndarray, np.ndarray, np.ndarray | None]


@dataclass
class LayerWorstSamples:
    """What the tracer keeps: ``layers`` (L, k) sample indices worst first (−1: none),
    ``sqnr_db`` (L, k) the layer's SQNR on each, ``index`` (S,) the samples whose inputs are
    kept, ``inputs`` their inputs (one array per model input each)."""

    layers: np.ndarray
    sqnr_db: np.ndarray
    index: np.ndarray
    inputs: list[list[np.ndarray]]
    cap: int = 0
    """How many samples' inputs the run could keep (attribute ``cap``; 0: not recorded): a
    merge of shards keeps as many as the whole run would."""
    keep: int = 0
    """How many of each layer's worst samples keep their activations (attribute ``keep``)."""
    activations: dict[int, list[Values]] = field(default_factory=dict)
    """Per layer, (float, raw, float_local or None) of its first worst samples, worst first
    (``activations/<layer>``): the activations the viewer opens for a sample not stored."""


def write(f: Any, worst: LayerWorstSamples, input_names: Sequence[str]) -> None:
    """Write ``worst`` under ``/samples/layer_worst`` of the open h5py file ``f``."""
    g = f.require_group(KEY)
    if worst.cap:
        g.attrs["cap"] = int(worst.cap)
    if worst.keep:
        g.attrs["keep"] = int(worst.keep)
    g.create_dataset("layers", data=np.asarray(worst.layers, dtype=np.int64))
    g.create_dataset("sqnr_db", data=np.asarray(worst.sqnr_db, dtype=np.float64))
    g.create_dataset("index", data=np.asarray(worst.index, dtype=np.int64))
    for j, kept in sorted(worst.activations.items()):
        if not kept:
            continue
        ga = g.create_group(f"activations/{j:05d}")
        ga.create_dataset("float", data=np.stack([np.asarray(r[0], np.float32) for r in kept]))
        ga.create_dataset("int8", data=np.stack([np.asarray(r[1]) for r in kept]))
        local = [r[2] for r in kept]
        if all(x is not None for x in local):
            ga.create_dataset("float_local", data=np.stack([np.asarray(x, np.float32)
                                                            for x in local]))
    gi = g.create_group("inputs")
    for i, name in enumerate(input_names):
        if worst.inputs:
            rows = np.stack([np.asarray(s[i]) for s in worst.inputs])
            ds = gi.create_dataset(str(i), data=rows, chunks=(1, *rows.shape[1:]) if rows.size
                                   else None, compression="lzf" if rows.size else None)
            ds.attrs["name"] = name
