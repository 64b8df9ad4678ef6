"""Samples from ``.npy`` and ``.npz`` files (``qdebug.tracer.data.load_data``): shapes checked
against the model's inputs, and an ``.npz`` member read from its header first, then only the
samples asked for; a member that would inflate far beyond its size in the zip is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qdebug.errors import DataError
from qdebug.store.schema import SAMPLE_INDEX
from qdebug.tracer.data import _NPY_ERRORS, InputSpec, SampleSource, _why

#: A member of an ``.npz`` may inflate to at most this many times the bytes it takes in the
#: zip (``np.savez_compressed`` of real data: 1 to 10 times) …
NPZ_INFLATE_RATIO = 100
#: … or to this much, whichever is more.
NPZ_INFLATE_FLOOR = 256 << 20


def _npz_member(path: Path, z: Any, key: str, limit: int | None = None
                ) -> tuple[np.ndarray, int]:
    """One array of an ``.npz`` and the samples it declares; only its first ``limit`` samples
    are read (read from its header first: shape and dtype). A member that is not an ``.npy``
    array, holds objects, is damaged, or would inflate to more than ``NPZ_INFLATE_RATIO``
    times its compressed size (at least ``NPZ_INFLATE_FLOOR``) is refused by name."""
    try:
        head = _npz_header(z, key)
        if head is not None and head[0]:
            rows, value = _npz_rows(path, z, key, head, limit)
            if value is not None:
                return value, rows
        value = z[key]
    except _NPY_ERRORS as exc:
        raise DataError(
            f"{path}[{key}] is not a readable array ({_why(exc)})",
            "save plain numeric arrays with np.savez",
        ) from exc
    if not isinstance(value, np.ndarray):
        raise DataError(
            f"{path}[{key}] is not a .npy array (another file in the zip)",
            "save the arrays with np.savez",
        )
    return value, len(value) if value.ndim else 0


def _npz_header(z: Any, key: str) -> tuple[tuple[int, ...], bool, np.dtype, int, Any] | None:
    """Shape, Fortran order, dtype, header length and zip entry of the member ``key``; None
    when it is not an ``.npy`` of a header version read here (np.load then says why)."""
    name = key + ".npy"
    if name not in z.zip.namelist():
        return None
    info = z.zip.getinfo(name)
    with z.zip.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            return None
        return tuple(shape), bool(fortran), dtype, fh.tell(), info


def _npz_rows(path: Path, z: Any, key: str, head: tuple[Any, ...], limit: int | None
              ) -> tuple[int, np.ndarray | None]:
    """The samples ``key`` declares, and its first ``limit`` of them when fewer than all can be
    read (else None: np.load reads the whole member, checking its CRC)."""
    shape, fortran, dtype, offset, info = head
    rows = int(shape[0])
    if dtype.hasobject:
        return rows, None  # np.load refuses it, naming pickles
    row_bytes = int(np.prod(shape[1:], dtype=np.float64)) * dtype.itemsize
    want = rows if limit is None or fortran else min(rows, limit)
    needed = offset + want * row_bytes
    if offset + rows * row_bytes > info.file_size:
        raise DataError(
            f"{path}[{key}] declares shape {shape} ({_bytes(rows * row_bytes)}) but holds "
            f"{_bytes(info.file_size)}: it is truncated or damaged",
            "save it again with np.savez",
        )
    bound = max(NPZ_INFLATE_FLOOR, NPZ_INFLATE_RATIO * info.compress_size)
    if needed > bound:
        raise DataError(
            f"{path}[{key}] would inflate from {_bytes(info.compress_size)} in the zip to "
            f"{_bytes(needed)} (shape {shape}), more than {NPZ_INFLATE_RATIO} times: refused "
            "as a zip bomb",
            "save it with np.savez (uncompressed), or read fewer samples with --samples N",
        )
    if want == rows:
        return rows, None
    with z.zip.open(info) as fh:
        fh.seek(offset)
        raw = fh.read(want * row_bytes)
    if len(raw) != want * row_bytes:
        raise EOFError(f"{len(raw)} bytes where {want} samples need {want * row_bytes}")
    return rows, np.frombuffer(raw, dtype=dtype).reshape((want, *shape[1:]))


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("kB", 1000)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def check_batched(path: Path, name: str, arr: np.ndarray, spec: InputSpec) -> None:
    fits = arr.ndim == len(spec.shape) + 1 and all(
        d is None or d == s for d, s in zip(spec.shape, arr.shape[1:], strict=True)
    )
    if not fits:
        hint = f"save an array of shape {spec.describe()}"
        if tuple(arr.shape) == tuple(spec.shape):
            hint += " (one sample needs a leading batch axis: x[None])"
        raise DataError(
            f"{path}{'[' + name + ']' if name else ''} has shape {arr.shape}, the model expects "
            f"{spec.describe()}",
            hint,
        )


def from_npy(path: Path, inputs: list[InputSpec]) -> SampleSource:
    if len(inputs) != 1:
        raise DataError(
            f"{path} holds one array, the model has {len(inputs)} inputs",
            f"save an .npz keyed by input name: {[s.name for s in inputs]}",
        )
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        if any(d < 0 for d in arr.shape):
            raise ValueError(f"negative dimension in shape {arr.shape}")
    except _NPY_ERRORS as exc:
        raise DataError(
            f"{path} is not a readable .npy file ({_why(exc)})", "save it with np.save"
        ) from exc
    check_batched(path, "", arr, inputs[0])
    return SampleSource(str(path), inputs, lambda: (arr[i] for i in range(len(arr))), len(arr))


def from_npz(path: Path, inputs: list[InputSpec], limit: int | None = None) -> SampleSource:
    try:
        z = np.load(path, allow_pickle=False)
        # the sample positions qdebug export writes beside the inputs: not an input
        keys = [k for k in z.files if k != SAMPLE_INDEX]
    except _NPY_ERRORS as exc:
        raise DataError(
            f"{path} is not a readable .npz file ({_why(exc)})", "save it with np.savez"
        ) from exc
    names = [s.name for s in inputs]
    if len(inputs) == 1 and len(keys) == 1:
        chosen = keys
    else:
        missing = [n for n in names if n not in keys]
        if missing:
            raise DataError(
                f"{path} has arrays {keys}, the model's inputs are {names} (missing {missing})",
                "key the arrays by input name: np.savez(path, **{name: array})",
            )
        chosen = names
    members = [_npz_member(path, z, k, limit) for k in chosen]
    arrays = [a for a, _ in members]
    for k, a, s in zip(chosen, arrays, inputs, strict=True):
        check_batched(path, k, a, s)
    lengths = {rows for _, rows in members}
    if len(lengths) > 1:
        counts = ", ".join(f"{k!r} {rows}" for k, (_, rows) in zip(chosen, members, strict=True))
        raise DataError(
            f"{path}: the inputs' arrays hold different numbers of samples ({counts}): "
            "sample i is row i of every array",
            f"give every array the same number of samples (the first {min(lengths)} of each: "
            f"a[:{min(lengths)}])",
        )
    n = lengths.pop()
    read = min(len(a) for a in arrays)  # the first ``limit`` samples, or all
    src = SampleSource(str(path), inputs, lambda: ([a[i] for a in arrays] for i in range(read)),
                       n)
    unused = [k for k in keys if k not in chosen]
    if unused:  # a misspelt input name would otherwise go unnoticed
        src.warnings.append(
            f"{path.name}: array(s) {unused} match no model input {names} and are not used"
        )
    return src


