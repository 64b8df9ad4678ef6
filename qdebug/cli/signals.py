"""SIGTERM and SIGHUP handled like Ctrl-C.

``timeout``, ``docker stop`` and CI cancellation send SIGTERM, a closed SSH session SIGHUP; by
default both kill Python on the spot and leave a ``.partial`` file. Turned into an exception,
they unwind through the writers' cleanup like ``KeyboardInterrupt``, and the command line exits
with 128 + the signal's number (143, 129), as a shell reports a killed command.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOPPING = (signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """The process was asked to stop by ``signum``. A ``BaseException``, like
    ``KeyboardInterrupt``, so that ``except Exception`` in user or library code lets it pass."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        """``SIGTERM``, ``SIGHUP``."""
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number."""
        return 128 + self.signum


def _stop(signum: int, frame: FrameType | None) -> None:
    for sig in STOPPING:  # a second signal must not interrupt the cleanup of the first
        signal.signal(sig, signal.SIG_IGN)
    raise Stopped(signum)


@contextlib.contextmanager
def stopping_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``Stopped`` (main thread only; elsewhere
    a no-op). The previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    for sig in STOPPING:
        with contextlib.suppress(ValueError, OSError):
            old[sig] = signal.signal(sig, _stop)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
