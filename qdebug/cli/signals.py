"""SIGTERM and SIGHUP handled like Ctrl-C.

``timeout``, ``docker stop`` and CI cancellation send SIGTERM, a closed SSH session SIGHUP; by
default both kill Python on the spot and leave a ``.partial`` file. Turned into an exception,
they unwind through the writers' cleanup like ``KeyboardInterrupt``, and the command line exits
with 128 + the signal's number (143, 129), as a shell reports a killed command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
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


#: Seconds a full-screen viewer has to exit by itself after SIGTERM or SIGHUP.
GRACE_S = 2.0


@contextlib.contextmanager
def leaving_on_signals(exit_app: Callable[[], None]) -> Iterator[list[int]]:
    """For ``qdebug view``: within the block, SIGTERM or SIGHUP (a closed terminal, an SSH
    session dropping) asks the app to exit, and if it has not within ``GRACE_S`` the process
    ends at once with 128 + the signal's number. A terminal that is gone can leave the app's
    input and output threads spinning on the dead device at full CPU, ignoring both signals;
    the viewer only reads, so nothing can be left half-written. The signals received are
    appended to the list yielded (main thread only; elsewhere a no-op)."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def leave(signum: int, frame: FrameType | None) -> None:
        got.append(signum)
        for sig in STOPPING:
            signal.signal(sig, signal.SIG_IGN)
        timer = threading.Timer(GRACE_S, os._exit, args=(128 + signum,))
        timer.daemon = True
        timer.start()
        with contextlib.suppress(Exception):  # an app not running yet: the timer ends it
            exit_app()

    old = {}
    for sig in STOPPING:
        with contextlib.suppress(ValueError, OSError):
            old[sig] = signal.signal(sig, leave)
    try:
        yield got
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
