"""An address-space cap around a read of a stranger's trace: HDF5 trusts the lengths inside
the file, so each read runs under a cap of its declared size plus ``MARGIN``, and a flipped
length fails as a damaged trace instead of allocating gigabytes (``BeyondDeclaredSize``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

#: Address space a read may use beyond what its declared size needs (variable-length strings,
#: HDF5's buffers).
MARGIN = 256 << 20
_cap_lock = threading.Lock()
_cap_depth = 0


def _address_space() -> int | None:
    """This process's virtual memory size in bytes (Linux), else None."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class BeyondDeclaredSize(MemoryError):
    """A read hit ``memory_cap``'s limit: the file made HDF5 allocate far more than it
    declares (a damaged trace), unlike a ``MemoryError`` of the machine's own limit."""


@contextlib.contextmanager
def memory_cap(extra: int) -> Iterator[None]:
    """While reading from a trace, allow the process at most ``extra`` more bytes of address
    space (Linux; elsewhere a no-op). HDF5 trusts the lengths stored in a file (a variable-length
    string whose stored length was flipped makes it allocate gigabytes before it notices); with
    the cap that allocation fails, and the read fails as a damaged trace instead."""
    global _cap_depth
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with _cap_lock:
        _cap_depth += 1
        outer = _cap_depth == 1
        old = resource.getrlimit(resource.RLIMIT_AS) if outer else None
        used = _address_space() if outer else None
        if old is not None and used is not None:
            soft, hard = old
            cap = used + extra
            if hard != resource.RLIM_INFINITY:
                cap = min(cap, hard)
            if soft == resource.RLIM_INFINITY or cap < soft:
                try:
                    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
                except (ValueError, OSError):
                    old = None
            else:
                old = None
        else:
            old = None
    try:
        yield
    except MemoryError as exc:
        if old is None:  # the machine's or the user's limit (ulimit -v), not ours
            raise
        raise BeyondDeclaredSize(
            f"the read needed more than {extra / 2**20:.0f} MiB, far more than its declared size"
        ) from exc
    finally:
        with _cap_lock:
            _cap_depth -= 1
            if old is not None:
                resource.setrlimit(resource.RLIMIT_AS, old)


