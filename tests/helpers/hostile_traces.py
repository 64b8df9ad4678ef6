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


# -- bombs: more declared than the file holds, or deeper than any trace ----------------------------


def deep_groups(depth: int, under: str = "deep") -> Mutation:
    """``depth`` groups nested one in another under ``/under`` (a trace has 5 levels)."""

    def mutate(p: Path) -> None:
        with h5py.File(p, "a") as f:
            g = f.create_group(under)
            for _ in range(depth):
                g = g.create_group("g")

    return mutate


def compressed_strings(key: str, width: int, fill: bytes = b"A") -> Mutation:
    """``key`` (a string column) becomes gzip-compressed fixed-length strings of ``width``
    bytes each, every one filled with ``fill``: a thousandfold smaller in the file than in
    memory. Its rows stay as they were (the table still adds up)."""

    def mutate(p: Path) -> None:
        with h5py.File(p, "a") as f:
            rows = f[key].shape[0]
            del f[key]
            ds = f.create_dataset(key, shape=(rows,), dtype=f"S{width}", chunks=(1,),
                                  maxshape=(None,), compression="gzip", compression_opts=9)
            for i in range(rows):
                ds[i] = (fill * width)[:width]

    return mutate


def unwritten_chunks(key: str, shape: tuple[int, ...], dtype: str = "float32") -> Mutation:
    """``key`` declares ``shape`` as a compressed, chunked dataset none of whose chunks is ever
    written (HDF5 reads fill values for them: no bytes in the file, gigabytes on read)."""

    def mutate(p: Path) -> None:
        with h5py.File(p, "a") as f:
            if key in f:
                del f[key]
            f.create_dataset(key, shape=shape, dtype=dtype, chunks=True, compression="gzip")

    return mutate


def npz_bomb(path: Path, key: str, shape: tuple[int, ...], dtype: str = "float32") -> Path:
    """An ``.npz`` whose member ``key`` is an array of ``shape`` zeros, deflated: a few MB on
    disk for gigabytes in memory. Written in pieces, so making it needs no such memory."""
    import zipfile

    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": shape}
    total = int(np.prod(shape)) * np.dtype(dtype).itemsize
    piece = bytes(1 << 24)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, \
            z.open(key + ".npy", "w", force_zip64=True) as out:
        np.lib.format.write_array_header_1_0(out, header)
        for start in range(0, total, len(piece)):
            out.write(piece[: min(len(piece), total - start)])
    return path


# -- strings a stranger chose: formulas, markup, megabytes -----------------------------------------


def strings(key: str, values: dict[int, str]) -> Mutation:
    """Rows of the string column ``key`` replaced (``{row: text}``), the other rows kept."""

    def mutate(p: Path) -> None:
        with h5py.File(p, "a") as f:
            rows = [v.decode() if isinstance(v, bytes) else str(v) for v in f[key][()]]
            for i, text in values.items():
                rows[i] = text
            del f[key]
            f[key] = np.array(rows, dtype=object).astype(h5py.string_dtype())

    return mutate


def root_attrs(**values: object) -> Mutation:
    """Attributes of the trace's root replaced (lists and dicts as the JSON the writer keeps)."""

    def mutate(p: Path) -> None:
        import json

        with h5py.File(p, "a") as f:
            for name, value in values.items():
                f.attrs[name] = json.dumps(value) if isinstance(value, list | dict) else value

    return mutate
