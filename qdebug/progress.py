"""Progress display for long work: one line per phase on stderr, silent with ``--quiet``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Phases:
    """Named phases (spinner, then a tick and the time taken) and bars for counted work; the
    seconds of each are kept in ``timings`` (``qdebug trace --profile``)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.timings: dict[str, float] = {}
        """Wall seconds per phase, in the order first met (repeated phases add up)."""
        self.console = Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓"),
            TextColumn("{task.description:<20}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=quiet,
            transient=False,
        )

    def __enter__(self) -> Phases:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def record(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to the phase ``name`` (for work timed elsewhere)."""
        self.timings[name] = self.timings.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """A phase of unknown length."""
        task = self.progress.add_task(name, total=1)
        start = time.perf_counter()
        yield
        took = time.perf_counter() - start
        self.record(name, took)
        self.progress.update(task, completed=1, description=f"{name} ({took:.1f}s)")

    @contextlib.contextmanager
    def bar(self, name: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A phase of ``total`` units; yields a function that advances it."""
        task = self.progress.add_task(name, total=total)
        self.timings.setdefault(name, 0.0)  # listed where it starts, before phases inside it
        start = time.perf_counter()

        def advance(n: int) -> None:
            self.progress.advance(task, n)

        yield advance
        self.record(name, time.perf_counter() - start)
        done = self.progress.tasks[task].completed
        self.progress.update(task, total=done, completed=done)
