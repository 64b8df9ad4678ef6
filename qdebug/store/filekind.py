"""What kind of file a path names, so that a pipe or a device is refused before it is opened.

Opening a FIFO for reading blocks until a writer appears, and a device reads forever; a
``--data``, ``--calib``, ``--tflite``, model or trace path naming one must fail at once.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from qdebug.errors import QdebugError


def describe_mode(mode: int) -> str:
    """``a pipe (FIFO)``, ``a device``, ``a socket``, ``a folder``, ``a file``."""
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def special_kind(path: str | os.PathLike[str]) -> str | None:
    """How ``path`` (symlinks followed) is neither a regular file nor a folder, else None
    (also when it does not exist)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return describe_mode(mode)


def refuse_special(
    path: str | os.PathLike[str], what: str, hint: str, error: type[QdebugError] = QdebugError
) -> None:
    """Raise ``error`` when ``path`` is a pipe, device or socket (never opened here)."""
    kind = special_kind(path)
    if kind is not None:
        raise error(f"{Path(path)} is {kind}, not a {what} file", hint)
