"""Refusing HDF5 files whose data would come from somewhere else than the file itself.

HDF5 lets a dataset keep its bytes in another file (external storage), a link point into
another file (external links, followed on access), a virtual dataset map other files, and a
filter be loaded from a plugin library. A trace from a stranger could use any of them to make
qdebug read a local file (``/proc/self/environ``, a key) into its output, block on a FIFO, or
load code. None of them is ever written by qdebug, so a reader refuses them all before reading
anything, by walking every link of the file once, without following any.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py

from qdebug.errors import TraceFileError

#: Filters HDF5 and h5py build in (deflate, shuffle, fletcher32, szip, nbit, scale-offset, lzf);
#: any other would be a plugin library loaded from disk.
BUILTIN_FILTERS = frozenset({
    h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32,
    h5py.h5z.FILTER_SZIP, h5py.h5z.FILTER_NBIT, h5py.h5z.FILTER_SCALEOFFSET,
    h5py.h5z.FILTER_LZF,
})
#: More links than this is not a trace (a trace has a few per layer) and would take long to walk.
MAX_LINKS = 1_000_000

_HINT = "a qdebug trace never refers outside itself; ask for a trace written by `qdebug trace`"


def _refusal(path: Path, where: str, what: str) -> TraceFileError:
    return TraceFileError(f"{path} is not a self-contained trace: {where} {what}", _HINT)


def _dataset_problem(ds: Any) -> str | None:
    """Why a dataset's bytes would not come from this file, or None."""
    plist = ds.get_create_plist()
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        return "is a virtual dataset (its data is mapped from other datasets or files)"
    if plist.get_external_count():
        name = plist.get_external(0)[0]
        return f"keeps its data in the external file {name.decode('utf-8', 'replace')!r}"
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in BUILTIN_FILTERS:
            return f"uses filter {code}, which is not built into HDF5 (a plugin library)"
    return None


def refuse_outside_references(f: h5py.File, path: Path) -> None:
    """Raise ``TraceFileError`` when any link of ``f`` leaves the file (external or
    user-defined links) or any dataset takes its bytes from elsewhere (external storage,
    virtual datasets) or through a filter that is not built in. Reads only metadata."""
    found: list[BaseException] = []
    count = 0

    def visit(name: bytes, info: Any) -> int | None:
        # An exception must not leave h5py's callback (it would surface as a SystemError).
        try:
            return check(name, info)
        except BaseException as exc:  # re-raised after the walk
            found.append(exc)
            return 1

    def check(name: bytes, info: Any) -> int | None:
        nonlocal count
        count += 1
        where = repr(name.decode("utf-8", "replace"))
        if count > MAX_LINKS:
            found.append(TraceFileError(
                f"{path} holds more than {MAX_LINKS:,} objects, far more than a trace",
                "give a trace written by `qdebug trace`",
            ))
            return 1
        if info.type == h5py.h5l.TYPE_SOFT:
            return None  # a path inside this file; what it names is visited by its hard link
        if info.type != h5py.h5l.TYPE_HARD:
            kind = "an external link" if info.type == h5py.h5l.TYPE_EXTERNAL else "a user link"
            found.append(_refusal(path, where, f"is {kind} (it points into another file)"))
            return 1
        obj = h5py.h5o.open(f.id, name)
        if isinstance(obj, h5py.h5d.DatasetID):
            problem = _dataset_problem(obj)
            if problem:
                found.append(_refusal(path, where, problem))
                return 1
        return None

    try:
        f.id.links.visit(visit, info=True)
    except SystemError as exc:  # h5py's report of a failure inside HDF5's iteration
        raise RuntimeError(f"cannot walk the file's links ({exc})") from exc
    if found:
        raise found[0]
