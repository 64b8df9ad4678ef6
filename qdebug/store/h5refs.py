"""What a trace may not refer to outside itself (see ``qdebug.store.h5safe``): external
storage, external and user-defined links, virtual datasets and plugin filters, refused by one
bounded walk of every link before anything is read (``refuse_outside_references``); the storage
of stored activations is checked when each is first read (``CHECKED_ON_READ``)."""

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
#: Deeper paths than this are not a trace (qdebug writes 5 levels); the walk stops there, so a
#: file of thousands of nested groups is refused at once (HDF5's own recursive visit crashed on
#: 10,000 levels and took 16 s on 5,000).
MAX_DEPTH = 32

_HINT = "a qdebug trace never refers outside itself; ask for a trace written by `qdebug trace`"


def _refusal(path: Path, where: str, what: str) -> TraceFileError:
    return TraceFileError(f"{path} is not a self-contained trace: {where} {what}", _HINT)


def _not_a_trace(path: Path, what: str) -> TraceFileError:
    return TraceFileError(f"{path} {what}, far more than a trace", "give a trace written by "
                          "`qdebug trace`")


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


#: Datasets whose storage is checked when first read rather than at open (see above).
CHECKED_ON_READ = ("activations/",)


_ON_READ = tuple(p.encode() for p in CHECKED_ON_READ)


def _links(f: h5py.File, group: bytes, budget: int) -> list[tuple[bytes, int, int]]:
    """The links of one group (name, link type, address of a hard link's object), at most
    ``budget + 1`` of them; never follows any."""
    found: list[tuple[bytes, int, int]] = []

    def collect(name: bytes, info: Any) -> int | None:
        # h5py reuses ``info`` for every link; nothing here raises (h5py's callback must not).
        found.append((name, info.type, info.u))
        return 1 if len(found) > budget else None

    gid = f.id if not group else h5py.h5g.open(f.id, group)
    try:
        gid.links.iterate(collect, info=True)
    except SystemError as exc:  # h5py's report of a failure inside HDF5's iteration
        raise RuntimeError(f"cannot walk the file's links ({exc})") from exc
    return found


def refuse_outside_references(f: h5py.File, path: Path) -> None:
    """Raise ``TraceFileError`` when any link of ``f`` leaves the file (external or
    user-defined links) or any dataset takes its bytes from elsewhere (external storage,
    virtual datasets) or through a filter that is not built in — except the storage of
    datasets under ``CHECKED_ON_READ``, checked before they are read. Reads only metadata.

    The walk is iterative, one group at a time, and bounded before it goes further: more than
    ``MAX_LINKS`` links or a path deeper than ``MAX_DEPTH`` is refused. A group reached by
    several hard links is walked once."""
    count = 0
    seen: set[int] = set()
    todo: list[tuple[bytes, int]] = [(b"", 0)]  # groups to walk: path, depth
    while todo:
        group, depth = todo.pop()
        for name, link, addr in _links(f, group, MAX_LINKS - count):
            count += 1
            full = group + b"/" + name if group else name
            where = repr(full.decode("utf-8", "replace")[:200])
            if count > MAX_LINKS:
                raise _not_a_trace(path, f"holds more than {MAX_LINKS:,} objects")
            if link == h5py.h5l.TYPE_SOFT:
                continue  # a path inside this file; what it names is visited by its hard link
            if link != h5py.h5l.TYPE_HARD:
                kind = "an external link" if link == h5py.h5l.TYPE_EXTERNAL else "a user link"
                raise _refusal(path, where, f"is {kind} (it points into another file)")
            if depth + 1 > MAX_DEPTH:
                top = full.split(b"/")[0].decode("utf-8", "replace")[:60]
                raise _not_a_trace(path, f"nests groups more than {MAX_DEPTH} levels deep "
                                         f"(under {top!r})")
            kind = h5py.h5o.get_info(f.id, full).type
            if kind == h5py.h5o.TYPE_GROUP:
                if addr not in seen:
                    seen.add(addr)
                    todo.append((full, depth + 1))
            elif kind == h5py.h5o.TYPE_DATASET and not full.startswith(_ON_READ):
                problem = _dataset_problem(h5py.h5o.open(f.id, full))
                if problem:
                    raise _refusal(path, where, problem)


