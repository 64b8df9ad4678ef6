"""The trace's tables and its ``/analysis`` group as h5py datasets: dataclass rows one dataset
per column, ranges, per-channel sums, worst samples, weight statistics and culprits.

Pure writes into an open file; ``TraceWriter`` decides when (``docs/trace-format.md``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import h5py
import numpy as np

from qdebug.store.schema import AnalysisArrays, Culprit

UTF8_STR = h5py.string_dtype("utf-8")
"""The dtype of every string dataset a trace holds."""


def write_table(group: h5py.Group, rows: Sequence[Any], columns: Mapping[str, str]) -> None:
    """Write dataclass rows as one 1-D dataset per column (readable by plain h5py/h5dump)."""
    group.attrs["columns"] = json.dumps(list(columns))
    as_dicts = [asdict(r) for r in rows]  # once per row, not once per row and column
    for col, kind in columns.items():
        values = [d[col] for d in as_dicts]
        if kind == "s":
            group.create_dataset(col, data=np.array(values, dtype=object), dtype=UTF8_STR)
        elif kind == "j":
            enc = [json.dumps(v) for v in values]
            group.create_dataset(col, data=np.array(enc, dtype=object), dtype=UTF8_STR)
        elif kind == "i":
            group.create_dataset(col, data=np.array(values, dtype=np.int64).reshape(len(rows)))
        elif kind == "f":
            group.create_dataset(col, data=np.array(values, dtype=np.float64).reshape(len(rows)))
        elif kind == "b":
            group.create_dataset(col, data=np.array(values, dtype=bool).reshape(len(rows)))
        else:  # pragma: no cover - schema constant
            raise ValueError(kind)


def write_analysis(
    f: h5py.File, rec: AnalysisArrays, weights: Sequence[Any], input_names: Sequence[str]
) -> None:
    """``/analysis`` (ranges, segment check, channels, weights) and ``/samples/worst``."""
    a = f.require_group("analysis")
    r = a.create_group("ranges")
    for key, values in (("float_min", rec.float_min), ("float_max", rec.float_max),
                        ("int8_min", rec.quantized_min), ("int8_max", rec.quantized_max)):
        r.create_dataset(key, data=np.asarray(values, dtype=np.float64))
    a.create_dataset("segment_check", data=np.asarray(rec.segment_check, dtype=np.float64))
    ch = a.create_group("channels")
    for idx, sums in rec.channels.items():
        g = ch.create_group(f"{idx:05d}")
        for key in ("sum_f2", "sum_e2", "clipped", "saturated"):
            if getattr(sums, key, None) is not None:
                g.create_dataset(key, data=np.asarray(getattr(sums, key), dtype=np.float64))
    worst = f["samples"].create_group("worst")
    worst.create_dataset("index", data=np.asarray(rec.worst_index, dtype=np.int64))
    wi = worst.create_group("inputs")
    for i, name in enumerate(input_names):
        rows = [inp[i] for inp in rec.worst_inputs]
        if rows:
            ds = wi.create_dataset(str(i), data=np.stack(rows), compression="lzf")
            ds.attrs["name"] = name
    _write_weights(a.create_group("weights"), weights)


def _write_weights(w: h5py.Group, weights: Sequence[Any]) -> None:
    cols = {
        "layer": np.array([x.layer for x in weights], dtype=np.int64),
        "tensor_name": np.array([x.tensor_name for x in weights], dtype=object),
        "channel_axis": np.array([x.channel_axis for x in weights], dtype=np.int64),
        "sqnr_db": np.array([x.sqnr_db for x in weights], dtype=np.float64),
        "max_abs_error": np.array([x.max_abs_error for x in weights], dtype=np.float64),
        "outlier_channels": np.array(
            [json.dumps(x.outlier_channels) for x in weights], dtype=object
        ),
    }
    for key, values in cols.items():
        w.create_dataset(key, data=values, dtype=UTF8_STR if values.dtype == object else None)
    wc = w.create_group("channels")
    for x in weights:
        g = wc.create_group(f"{x.layer:05d}")
        g.create_dataset("sqnr_db", data=x.channel_sqnr_db)
        g.create_dataset("range", data=x.channel_range)


def write_culprits(f: h5py.File, culprits: Sequence[Culprit]) -> None:
    """``/analysis/culprits``: one dataset per field, one row per culprit."""
    g = f.require_group("analysis").create_group("culprits")
    for key, values in (
        ("layer", np.array([c.layer for c in culprits], dtype=object)),
        ("index", np.array([c.index for c in culprits], dtype=np.int64)),
        ("kind", np.array([str(c.kind) for c in culprits], dtype=object)),
        ("score", np.array([c.score for c in culprits], dtype=np.float64)),
        ("output", np.array([c.output for c in culprits], dtype=object)),
        ("reason", np.array([c.reason for c in culprits], dtype=object)),
    ):
        g.create_dataset(key, data=values, dtype=UTF8_STR if values.dtype == object else None)
