"""A failed write of a trace as one clear line: the guards around ``TraceWriter``'s methods,
the record of traces whose writing failed in this process, and the silencing of the errors h5py
objects print when they are collected after such a failure."""

from __future__ import annotations

import functools
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from qdebug.errors import QdebugError

_F = TypeVar("_F", bound=Callable[..., Any])
_FAILED: list[Path] = []


def failed_writes() -> list[Path]:
    """Traces whose writing failed in this process. HDF5 cannot close such a file (the close
    flushes, and fails again), and the library may crash at exit trying once more; the command
    line therefore ends with ``os._exit`` after its one-line error when this is not empty."""
    return list(_FAILED)


def _write_failure(exc: BaseException) -> str:
    """The operating system's reason in an h5py/HDF5 write error ("File too large", ...)."""
    found = re.search(r"error message = '([^']*)'", str(exc))
    if found:
        return found.group(1)
    return getattr(exc, "strerror", None) or " ".join(str(exc).split())[:120]


def _writing(method: _F) -> _F:
    """A failed write (disk full, file too large, I/O error) becomes one clear ``QdebugError``;
    the partial file is then deleted by ``discard``."""

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (OSError, RuntimeError) as exc:
            self._failed = True
            _FAILED.append(self.path)
            raise QdebugError(
                f"cannot write the trace {self.path}: {_write_failure(exc)}",
                "free some space, or choose another folder with --out",
            ) from exc

    return guarded  # type: ignore[return-value]


def _constructing(init: _F) -> _F:
    """A failure while the writer starts (the ``.tflite`` written to a full disk, a lock held
    by another run) leaves nothing: no temporary file, no lock, no folder made for it."""

    @functools.wraps(init)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return init(self, *args, **kwargs)
        except BaseException as exc:
            self._abandon()
            if isinstance(exc, OSError | RuntimeError | UnicodeError):
                raise QdebugError(
                    f"cannot write the trace {self.path}: {_write_failure(exc)}",
                    "free some space, or choose another folder with --out",
                ) from exc
            raise

    return guarded  # type: ignore[return-value]


def _quiet_h5py_dealloc(unraisable: Any) -> None:
    """When a write fails, h5py objects collected afterwards cannot flush either; their errors
    (printed by Python as "Exception ignored in ...__dealloc__") would bury the one-line error."""
    if isinstance(unraisable.exc_value, RuntimeError | OSError) and "dealloc" in str(
        getattr(unraisable, "object", "")
    ):
        return
    sys.__unraisablehook__(unraisable)


def _quiet_h5py_excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    """Cython prints an exception in ``__dealloc__`` through ``sys.excepthook`` as well."""
    if issubclass(kind, RuntimeError | OSError) and any(
        fr.name.endswith("__dealloc__") for fr in traceback.extract_tb(tb)
    ):
        return
    sys.__excepthook__(kind, exc, tb)


