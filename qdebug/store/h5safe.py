"""Hardened access to an HDF5 file from a stranger: h5py and numpy only.

A trace may come from anyone (attached to a bug report), so nothing in it is trusted. First,
files whose data would come from somewhere else than the file itself are refused: HDF5 lets a
dataset keep its bytes in another file (external storage), a link point into another file
(external links, followed on access), a virtual dataset map other files, and a filter be loaded
from a plugin library; a trace could use any of them to make qdebug read a local file
(``/proc/self/environ``, a key) into its output, block on a FIFO, or load code. None of them is
ever written by qdebug, so ``refuse_outside_references`` refuses them all before reading
anything, by walking every link of the file once, without following any. The one exception is
the storage of the datasets under ``/activations`` (hundreds in a large trace, each an object
header to open): their links are walked with the rest, and each dataset's storage is checked
when it is first read (``CheckedFile._dataset``, through which every read of them goes), so a
large trace opens as fast as a small one and a bad one is still refused before a byte of it is
read.

Then every read goes through ``CheckedFile``: kind, shape and declared size are checked before
anything is allocated, each read runs under an address-space cap, and every failure of h5py or
numpy becomes a ``TraceFileError`` with one line.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np

from qdebug.errors import TraceFileError
from qdebug.store.h5refs import CHECKED_ON_READ, _dataset_problem, _refusal
from qdebug.store.h5refs import refuse_outside_references as refuse_outside_references
from qdebug.store.memcap import MARGIN as MARGIN
from qdebug.store.memcap import BeyondDeclaredSize, memory_cap

__all__ = ["CHECKED_ON_READ", "refuse_outside_references"]

#: Largest table a trace may declare (rows); beyond it the file is refused as corrupt.
MAX_ROWS = 1_000_000
#: Largest ``n_samples`` a trace may declare.
MAX_SAMPLES = 100_000_000
#: Largest single array read from a trace; a trace declaring more for one read is refused
#: (per-layer reads such as ``layer_sample_metrics(name, layer=i)`` stay far below it).
MAX_READ_BYTES = 1 << 30
#: What one open trace may read in all — the declared bytes of every dataset it reads, each
#: counted once however often it is read — is at most this many times the file's size (traces
#: written by qdebug declare about as many bytes as they take: 0.1 to 1.1 times) …
TOTAL_READ_RATIO = 64
#: … and at least this much, whatever the file's size.
TOTAL_READ_FLOOR = 256 << 20
#: Widest fixed-length string a trace may hold (qdebug writes variable-length strings, whose
#: bytes the file stores uncompressed; fixed-length ones may be compressed a thousandfold).
MAX_STRING_BYTES = 64 << 10

#: What h5py and numpy raise on a damaged file or a value of the wrong kind.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    LookupError,
    ValueError,
    TypeError,
    AttributeError,
    RuntimeError,
    ArithmeticError,
    MemoryError,
)

_F = TypeVar("_F", bound=Callable[..., Any])

NUMERIC = "biuf"


def text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_index_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_ROWS for v in value
    )


def _is_shape(value: Any) -> bool:
    return isinstance(value, list) and all(
        v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in value
    )


#: Checks of the JSON columns of the layer table (consumers index and hash their items).
_JSON_CHECKS: dict[str, Callable[[Any], bool]] = {
    "inbound": _is_str_list,
    "output_shape": _is_shape,
    "ops": _is_index_list,
    "inputs": _is_index_list,
}


#: A ``TypeError`` with one of these messages is a call that does not fit its function: a bug
#: of the caller, not a value read from the file.
_CALL_MISMATCH = re.compile(
    r"(missing \d+ required|takes \d+ positional|got an unexpected keyword|"
    r"got multiple values for argument)"
)


def _our_bug(exc: BaseException) -> bool:
    """Whether ``exc`` is a mistake in qdebug's code rather than what a damaged file causes:
    an attribute missing on one of qdebug's own objects, or a call with the wrong arguments.
    Those must surface as bugs, not tell the user to re-create a good trace."""
    if isinstance(exc, AttributeError):
        owner = type(getattr(exc, "obj", None))
        return owner.__module__.startswith("qdebug.")
    return isinstance(exc, TypeError) and bool(_CALL_MISMATCH.search(str(exc)))


def guarded(what: str) -> Callable[[_F], _F]:
    """Turn any h5py/numpy failure inside a ``CheckedFile`` method into a ``TraceFileError``
    naming ``what`` could not be read."""

    def wrap(method: _F) -> _F:
        @functools.wraps(method)
        def guarded(self: CheckedFile, *args: Any, **kwargs: Any) -> Any:
            if not self._f:  # a programming error, as for Python's own files
                raise ValueError(f"{self.path}: I/O operation on a closed trace")
            try:
                return method(self, *args, **kwargs)
            except TraceFileError:
                raise
            except READ_ERRORS as exc:
                if _our_bug(exc):
                    raise
                raise self._damaged(what, exc) from exc

        return guarded  # type: ignore[return-value]

    return wrap


class CheckedFile:
    """Checked reads from an open HDF5 file ``_f`` at ``path``: the base of ``Trace``."""

    path: Path
    _f: h5py.File

    def _damaged(self, what: str, exc: BaseException) -> TraceFileError:
        if isinstance(exc, MemoryError) and not isinstance(exc, BeyondDeclaredSize):
            return TraceFileError(
                f"out of memory reading {what} from {self.path} (the memory left to this "
                "process ran out; the trace's declared sizes are within qdebug's bounds)",
                "free memory or raise the limit (ulimit -v), or read the trace on a larger "
                "machine",
            )
        detail = " ".join(str(exc).split())[:200]
        return TraceFileError(
            f"{self.path} is a damaged trace: cannot read {what} ({type(exc).__name__}: {detail})",
            "re-create it with `qdebug trace`, or ask for the file again",
        )

    def _corrupt(self, detail: str) -> TraceFileError:
        return TraceFileError(
            f"{self.path} is a damaged trace: {detail}",
            "re-create it with `qdebug trace`, or ask for the file again",
        )

    # -- checked reads ----------------------------------------------------------------------------

    def _dataset(self, key: str, kinds: str = NUMERIC) -> h5py.Dataset:
        """The dataset at ``key``; refused when missing, not a dataset, or of another kind
        (``kinds``: numpy dtype kinds, ``s`` for strings)."""
        obj = self._f.get(key)
        if obj is None:
            raise self._corrupt(f"{key} is missing")
        if not isinstance(obj, h5py.Dataset):
            raise self._corrupt(f"{key} is not a dataset")
        dtype = obj.dtype
        ok = (
            h5py.check_string_dtype(dtype) is not None or dtype.kind == "S"
            if kinds == "s"
            else dtype.kind in kinds and dtype.fields is None and not dtype.subdtype
        )
        if not ok:
            raise self._corrupt(f"{key} has dtype {dtype}, expected {kind_name(kinds)}")
        if dtype.kind == "S" and dtype.itemsize > MAX_STRING_BYTES:
            raise self._corrupt(
                f"{key} holds strings of {dtype.itemsize:,} bytes each "
                f"(at most {MAX_STRING_BYTES:,})"
            )
        if key.lstrip("/").startswith(CHECKED_ON_READ):
            problem = _dataset_problem(obj.id)
            if problem:
                raise _refusal(self.path, repr(key.lstrip("/")), problem)
        return obj

    def _check_shape(self, ds: h5py.Dataset, shape: tuple[int | None, ...]) -> tuple[int, ...]:
        """``ds.shape`` if it matches ``shape`` (None: any length)."""
        got = tuple(ds.shape or ())
        if len(got) != len(shape) or any(
            w is not None and w != g for w, g in zip(shape, got, strict=False)
        ):
            want = "(" + ", ".join("?" if w is None else str(w) for w in shape) + ")"
            raise self._corrupt(f"{ds.name} has shape {got}, expected {want}")
        return got

    def _check_storage(self, ds: h5py.Dataset) -> None:
        """Refuse a dataset that declares more than the file stores for it: an uncompressed
        one holding fewer bytes than it declares, a compressed one some of whose chunks were
        never written (qdebug writes every chunk; an absurd shape over unwritten chunks would
        otherwise be allocated, or exported, as fill values)."""
        declared = int(np.prod(ds.shape or (), dtype=np.float64)) * ds.dtype.itemsize
        if not declared:
            return
        if ds.id.get_create_plist().get_nfilters() == 0:
            stored = ds.id.get_storage_size()
            if stored < declared:
                raise self._corrupt(
                    f"{ds.name} declares {declared:,} bytes but the file holds {stored:,}"
                )
        elif ds.chunks:
            chunks = int(np.prod([-(-n // c) for n, c in zip(ds.shape, ds.chunks, strict=True)],
                                 dtype=np.float64))
            written = ds.id.get_num_chunks()
            if written < chunks:
                raise self._corrupt(
                    f"{ds.name} declares {declared:,} bytes but {chunks - written:,} of its "
                    f"{chunks:,} compressed chunks were never written"
                )

    def _charge(self, ds: h5py.Dataset) -> None:
        """Count what ``ds`` declares (once per dataset) against what this trace may read in
        all: ``TOTAL_READ_RATIO`` times the file's size, at least ``TOTAL_READ_FLOOR``."""
        charged = self.__dict__.setdefault("_charged", {})
        key = ds.name
        if key in charged:
            return
        self._check_storage(ds)
        declared = int(float(np.prod(ds.shape or (), dtype=np.float64)) * ds.dtype.itemsize)
        size = int(self._f.id.get_filesize())
        limit = max(TOTAL_READ_FLOOR, TOTAL_READ_RATIO * size)
        total = sum(charged.values()) + declared
        if total > limit:
            raise TraceFileError(
                f"{self.path} declares more data than it can hold: reading {key.lstrip('/')} "
                f"brings what it declares to {_size(total)} for a file of {_size(size)} "
                f"(at most {TOTAL_READ_RATIO} times its size, and at least "
                f"{_size(TOTAL_READ_FLOOR)})",
                "a trace written by `qdebug trace` compresses far less: ask for the file again",
            )
        charged[key] = declared

    def _read(
        self, key: str, shape: tuple[int | None, ...], kinds: str = NUMERIC, sel: Any = ()
    ) -> np.ndarray:
        """Read ``key`` (or the selection ``sel`` of it) after checking kind, shape and size."""
        ds = self._dataset(key, kinds)
        got = self._check_shape(ds, shape)
        if kinds == "s" and got and got[0] > MAX_ROWS:
            raise self._corrupt(f"{key} declares {got[0]:,} strings")
        rows = got
        if isinstance(sel, int):
            rows = got[1:]
        elif isinstance(sel, slice) and got:
            rows = (len(range(*sel.indices(got[0]))), *got[1:])
        elif isinstance(sel, tuple) and len(sel) == 2 and isinstance(sel[1], int):
            rows = got[:1]
        nbytes = float(np.prod(rows, dtype=np.float64)) * ds.dtype.itemsize
        if nbytes > MAX_READ_BYTES:
            raise TraceFileError(
                f"{self.path}: {key} would need {nbytes / 2**30:.1f} GiB in memory "
                f"(limit {MAX_READ_BYTES / 2**30:.0f} GiB)",
                "read it in parts with h5py, or re-create a smaller trace",
            )
        self._charge(ds)
        with memory_cap(int(3 * nbytes) + MARGIN):
            return np.asarray(ds[sel])

    # -- checked reads for other layers (``qdebug merge`` copies a shard's arrays) ---------------

    def read_vector(self, key: str, length: int | None = None) -> np.ndarray:
        """The 1-D numeric dataset ``key`` as float64 (``length`` rows, or any up to
        ``MAX_ROWS``), checked as every read of the trace is."""
        with self._reading(key):
            ds = self._dataset(key)
            if len(ds.shape or ()) == 1 and ds.shape[0] > MAX_ROWS:
                raise self._corrupt(f"{key} declares {ds.shape[0]:,} rows")
            return self._float(key, (length,))

    def read_strings(self, key: str, length: int) -> list[str]:
        """The ``length`` strings of ``key``, checked as every read of the trace is."""
        with self._reading(key):
            return self._strings(key, length)

    def read_part(self, key: str, shape: tuple[int | None, ...], sel: Any) -> np.ndarray:
        """The selection ``sel`` (rows, or a column) of the numeric dataset ``key`` of
        ``shape``, as float64, checked as every read of the trace is."""
        with self._reading(key):
            return self._float(key, shape, sel)

    @contextlib.contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        try:
            yield
        except TraceFileError:
            raise
        except READ_ERRORS as exc:
            if _our_bug(exc):
                raise
            raise self._damaged(key, exc) from exc

    def _float(self, key: str, shape: tuple[int | None, ...], sel: Any = ()) -> np.ndarray:
        return np.asarray(self._read(key, shape, NUMERIC, sel), dtype=np.float64)

    def _strings(self, key: str, n: int | None) -> list[str]:
        return [text(v) for v in self._read(key, (n,), "s")]

    def _read_table(
        self,
        group: str,
        columns: Mapping[str, str],
        cls: type,
        limit: int,
        optional: tuple[str, ...] = (),
    ) -> list[Any]:
        g = self._f.get(group)
        if not isinstance(g, h5py.Group):
            raise self._corrupt(f"{group} is missing")
        # Columns added by a later minor version are absent from older traces: their defaults.
        columns = {c: k for c, k in columns.items() if c not in optional or c in g}
        n: int | None = None
        for col in columns:
            ds = self._dataset(f"{group}/{col}", "s" if columns[col] in "sj" else NUMERIC)
            shape = tuple(ds.shape or ())
            if len(shape) != 1 or (n is not None and shape[0] != n):
                raise self._corrupt(f"table {group} has columns of different lengths")
            n = shape[0]
        rows = n or 0
        if rows > limit:
            raise self._corrupt(f"table {group} declares {rows:,} rows (at most {limit:,})")
        data: dict[str, list[Any]] = {}
        for col, kind in columns.items():
            if kind in "sj":
                values: list[Any] = self._strings(f"{group}/{col}", rows)
                if kind == "j":
                    values = [json.loads(v) for v in values]
                    check = _JSON_CHECKS.get(col)
                    if check is not None and not all(check(v) for v in values):
                        raise self._corrupt(f"{group}/{col} holds values of the wrong type")
            else:
                raw = self._read(f"{group}/{col}", (rows,))
                if kind == "i":
                    values = [int(v) for v in np.asarray(raw, dtype=np.int64)]
                elif kind == "f":
                    values = [float(v) for v in np.asarray(raw, dtype=np.float64)]
                else:
                    values = [bool(v) for v in raw]
            data[col] = values
        return [cls(**{c: data[c][i] for c in columns}) for i in range(rows)]


def _size(n: float) -> str:
    """A byte count for people: 466 kB, 2.1 GiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("kB", 1000)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def kind_name(kinds: str) -> str:
    return "strings" if kinds == "s" else "numbers"


def plain(value: Any) -> Any:
    """An attribute value as plain, JSON-serializable Python (whatever the file holds)."""
    if isinstance(value, np.void):
        value = value.tobytes()
    elif isinstance(value, np.ndarray):
        value = [plain(v) for v in value.tolist()] if value.size <= MAX_ROWS else str(value)
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def decode_attr(value: Any) -> Any:
    value = plain(value)
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


