"""Where a trace may be written, and claiming that place for one run.

A trace path is refused before any work when it is a folder, exists and is not a regular file
(``--out /dev/null`` as root would otherwise replace the system's device with a file), is under
a file, has a name the file system cannot hold (with the temporary suffix), is not UTF-8 (HDF5
cannot open it), or is an existing file that is not a qdebug trace (an existing trace is
replaced atomically when the new one is complete, as re-running a command updates its output).

``claim`` then holds an exclusive lock for the run (a second run to the same path gets one line
instead of damaging the first's file), gives each run its own temporary name, and removes the
folders it created when the run leaves no trace.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qdebug.errors import QdebugError
from qdebug.store.filekind import describe_mode

_NAME_MAX = 255
_TEMP_EXTRA = len(".") + 16 + len(".partial")


def _name_max(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return _NAME_MAX


def _is_trace(path: Path) -> bool:
    import h5py

    from qdebug.store.schema import FORMAT_NAME

    try:
        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("format", "")
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return False
    return (fmt.decode("utf-8", "replace") if isinstance(fmt, bytes) else str(fmt)) == (
        FORMAT_NAME
    )


def check_trace_target(path: Path) -> None:
    """Refuse a trace path that cannot or must not be written (see the module docstring)."""
    path = Path(path)
    hint = "give another --out"
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise QdebugError(
            f"{os.fsdecode(os.fsencode(path))!a} is not a UTF-8 path, which HDF5 needs",
            "give an --out path in UTF-8",
        ) from None
    name_max = _name_max(path.parent)
    size = len(os.fsencode(path.name))
    if size > name_max:
        raise QdebugError(
            f"the file name {path.name[:40]}… is {size} bytes, longer than the file system "
            f"allows ({name_max})",
            "give a shorter --out name",
        )
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as exc:
        raise QdebugError(f"cannot use {path} as the trace: {exc.strerror}", hint) from exc
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise QdebugError(
            f"{path} is a folder", f"give the trace a file name with --out, e.g. {path}/run.h5"
        )
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise QdebugError(
            f"{path} exists and is {describe_mode(st.st_mode)}; not writing over it", hint
        )
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise QdebugError(
                    f"cannot write the trace {path}: {parent} is a file, not a folder",
                    "give --out a path in a folder",
                )
            break
    if st is not None and not _is_trace(path):
        raise QdebugError(
            f"{path} exists and is not a qdebug trace; not replacing it",
            "give another --out, or delete the file first",
        )


def temp_name(path: Path) -> Path:
    """A temporary name of this run's own next to ``path`` (hidden, ending ``.partial``)."""
    limit = _name_max(path.parent) - _TEMP_EXTRA - 1
    stem = os.fsencode(path.name)[: max(limit, 1)].decode("utf-8", "ignore")
    return path.with_name(f".{stem}.{secrets.token_hex(8)}.partial")


def _lock_name(path: Path) -> Path:
    name = f".{path.name}.lock"
    if len(os.fsencode(name)) > _name_max(path.parent):
        name = f".{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:32]}.lock"
    return path.with_name(name)


@dataclass
class _Claim:
    lock: Path
    fd: int
    created: list[Path] = field(default_factory=list)
    depth: int = 1


_HELD: dict[Path, _Claim] = {}


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those created, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            _remove_empty(missing)
            raise QdebugError(
                f"cannot create the folder {d}: {exc.strerror}", "choose a writable --out"
            ) from exc
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for d in folders:  # deepest first
        with contextlib.suppress(OSError):
            d.rmdir()


def _lock(lock: Path, target: Path) -> int:
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise QdebugError(
                f"cannot write the trace to {target.parent}/: {exc.strerror}",
                "choose a writable folder with --out",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise QdebugError(
                    f"cannot lock {lock}: {exc.strerror}", "give another --out"
                ) from exc
            raise QdebugError(
                f"another qdebug (pid {holder}) is writing {target} right now",
                "wait for it to finish, or give another --out",
            ) from None
        try:  # the lock file may have been removed by its previous holder meanwhile
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)


@contextlib.contextmanager
def claim(path: Path) -> Iterator[None]:
    """Hold ``path`` for this run: its folders exist and no other process writes it.

    Re-entrant within a process (the command line claims before its work starts, the writer
    again). On leaving, the lock file and the folders created for ``path`` are removed unless a
    trace was written there.
    """
    key = Path(os.path.abspath(path))
    held = _HELD.get(key)
    if held is not None:
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
        return
    created = _make_parents(key.parent)
    try:
        lock = _lock_name(key)
        fd = _lock(lock, key)
    except BaseException:
        _remove_empty(created)
        raise
    _HELD[key] = _Claim(lock, fd, created)
    try:
        yield
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)
        _remove_empty(created)
