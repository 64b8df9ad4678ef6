"""Fixture-trace variants for the viewer tests, made by editing a copy of digits.h5 with h5py."""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "digits.h5"

#: Layer names that must render literally: Rich markup, and terminal control characters.
MARKUP_NAME = "[bold red]x[/]"
CONTROL_NAME = "evil\x1b[31m\x07name"


def copy_trace(dest: Path, *, names: Mapping[int, str] | None = None,
               sqnr_shift: Mapping[int, float] | None = None) -> Path:
    """A copy of the fixture with some layers renamed and some pooled SQNRs shifted (dB)."""
    shutil.copy(FIXTURE, dest)
    with h5py.File(dest, "r+") as f:
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


def sync(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in its own event loop (the suite has no async plugin)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return run
