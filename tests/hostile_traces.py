"""Traces that refer outside themselves, built with h5py's own features: a dataset whose bytes
live in another file (external storage), a link into another file (external link), a virtual
dataset mapping another file, a filter HDF5 would load from a plugin library."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

Mutation = Callable[[Path], None]


def _replace(p: Path, key: str, make: Callable[[h5py.File, str, tuple[int, ...], np.dtype], None]
             ) -> None:
    with h5py.File(p, "a") as f:
        old = f[key]
        shape, dtype = (old.shape, old.dtype) if isinstance(old, h5py.Dataset) else ((), None)
        del f[key]
        make(f, key, shape, dtype)  # type: ignore[arg-type]


def external_storage(key: str, target: Path, size: int | None = None) -> Mutation:
    """``key`` keeps its bytes in ``target`` (``size`` bytes; default: what ``key`` needs)."""

    def mutate(p: Path) -> None:
        def make(f: h5py.File, k: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
            if dtype is None or dtype.kind not in "biuf":
                shape, dtype = (64,), np.dtype(np.uint8)
            nbytes = int(np.prod(shape)) * dtype.itemsize
            f.create_dataset(k, shape=shape, dtype=dtype,
                             external=[(str(target), 0, size or max(nbytes, 1))])

        _replace(p, key, make)

    return mutate


def external_link(key: str, target: Path, target_key: str) -> Mutation:
    """``key`` is a link to ``target_key`` in the file ``target``."""

    def mutate(p: Path) -> None:
        _replace(p, key, lambda f, k, s, d: f.__setitem__(k, h5py.ExternalLink(str(target),
                                                                               target_key)))

    return mutate


def soft_to_external(key: str, target: Path, target_key: str) -> Mutation:
    """``key`` is a soft link to an external link elsewhere in the file."""

    def mutate(p: Path) -> None:
        with h5py.File(p, "a") as f:
            f["elsewhere"] = h5py.ExternalLink(str(target), target_key)
        _replace(p, key, lambda f, k, s, d: f.__setitem__(k, h5py.SoftLink("/elsewhere")))

    return mutate


def virtual(key: str, target: Path, target_key: str) -> Mutation:
    """``key`` is a virtual dataset mapping ``target_key`` of the file ``target``."""

    def mutate(p: Path) -> None:
        with h5py.File(target, "r") as t:
            shape, dtype = t[target_key].shape, t[target_key].dtype

        def make(f: h5py.File, k: str, s: tuple[int, ...], d: np.dtype) -> None:
            layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
            layout[...] = h5py.VirtualSource(str(target), target_key, shape=shape)
            f.create_virtual_dataset(k, layout)

        _replace(p, key, make)

    return mutate


def plugin_filter(key: str, filter_id: int = 32008) -> Mutation:
    """``key`` is compressed with a filter HDF5 does not build in (bitshuffle's id)."""

    def mutate(p: Path) -> None:
        def make(f: h5py.File, k: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
            if dtype is None or dtype.kind not in "biuf":
                shape, dtype = (64,), np.dtype(np.uint8)
            ds = f.create_dataset(k, shape=shape, dtype=dtype, chunks=shape or None,
                                  compression=filter_id, allow_unknown_filter=True)
            if shape and all(shape):
                ds.id.write_direct_chunk((0,) * len(shape), b"\0" * 16)

        _replace(p, key, make)

    return mutate


def secret_h5(path: Path, secret: bytes) -> Path:
    """An HDF5 file holding ``secret`` as bytes (``/raw``) and as strings (``/names``)."""
    with h5py.File(path, "w") as f:
        f["raw"] = np.frombuffer(secret, dtype=np.uint8)
        f["names"] = np.array([secret.decode()] * 4, dtype=object).astype(h5py.string_dtype())
    return path
