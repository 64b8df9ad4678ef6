"""Fixture-trace variants for the viewer tests, made by editing a copy of digits.h5 with h5py."""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "digits.h5"

#: Layer names that must render literally: Rich markup, and terminal control characters.
MARKUP_NAME = "[bold red]x[/]"
CONTROL_NAME = "evil\x1b[31m\x07name"


def copy_trace(dest: Path, *, names: Mapping[int, str] | None = None,
               sqnr_shift: Mapping[int, float] | None = None,
               culprits: Sequence[int] = ()) -> Path:
    """A copy of the fixture with some layers renamed, some pooled SQNRs shifted (dB), and
    ``culprits`` (layer indices, in rank order) as its culprit list (the fixture's model is
    healthy: it has none)."""
    shutil.copy(FIXTURE, dest)
    with h5py.File(dest, "r+") as f:
        if culprits:
            if "analysis/culprits" in f:
                del f["analysis/culprits"]
            g = f.require_group("analysis").create_group("culprits")
            text = h5py.string_dtype("utf-8")
            layer_names = [n.decode() if isinstance(n, bytes) else n
                           for n in f["layers/name"][()]]
            g["layer"] = np.array([layer_names[i] for i in culprits], dtype=object).astype(text)
            g["index"] = np.array(culprits, dtype=np.int64)
            g.create_dataset("kind", data=np.array(["injects"] * len(culprits), dtype=object),
                             dtype=text)
            g["score"] = np.linspace(0.6, 0.2, len(culprits))
            g.create_dataset("output", data=np.array(["probs"] * len(culprits), dtype=object),
                             dtype=text)
            g.create_dataset("reason", data=np.array(["made up"] * len(culprits), dtype=object),
                             dtype=text)
        if names:
            old = [n.decode() if isinstance(n, bytes) else n for n in f["layers/name"][()]]
            for i, name in names.items():
                old[i] = name
            del f["layers/name"]
            f["layers"].create_dataset("name", data=np.array(old, dtype=object),
                                       dtype=h5py.string_dtype("utf-8"))
        if sqnr_shift:
            ds = f["metrics/layers/pooled/sqnr_db"]
            values = ds[()]
            for i, d in sqnr_shift.items():
                values[i] += d
            ds[...] = values
    return dest


def as_int16(dest: Path) -> Path:
    """A copy of the fixture whose tensors are int16 with 1/256 of the scale (an int16x8
    trace's LSB) and the same float error."""
    copy_trace(dest)
    with h5py.File(dest, "r+") as f:
        dtypes = [d.decode() if isinstance(d, bytes) else d for d in f["layers/dtype"][()]]
        del f["layers/dtype"]
        f["layers"].create_dataset("dtype", data=np.array(
            ["int16" if d == "int8" else d for d in dtypes], dtype=object),
            dtype=h5py.string_dtype("utf-8"))
        f["layers/scale"][...] = f["layers/scale"][()] / 256
        lsb = f["metrics/layers/pooled/rmse_lsb"]
        lsb[...] = lsb[()] * 256
    return dest


def sync(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in its own event loop (the suite has no async plugin)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run
