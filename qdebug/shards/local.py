"""``qdebug trace --workers N``: the N shards of a trace run as local processes, then merged.
(Reading the command line for them, and the default ``--out``, is the CLI's:
``qdebug.cli.sharding``.)

Each worker is ``qdebug trace … --shard K/N`` in its own interpreter and converts the model
itself: conversion is deterministic (same model, same first ``--calib-samples`` calibration
samples, same converter), the merge refuses shards whose ``.tflite`` bytes differ, and N
conversions in parallel cost the wall time of one, where converting in the parent first would
add a serial TensorFlow import and conversion before any worker starts. The parent never
imports TensorFlow.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from qdebug.errors import QdebugError
from qdebug.progress import Phases
from qdebug.shards.merge import merge_traces
from qdebug.shards.slicing import ShardSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def resolve_workers(text: str) -> int:
    """``--workers``: a positive number, or ``auto`` for every core this process may use."""
    if text.strip().lower() == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise QdebugError(f"--workers {text!r} is not a positive number", "give e.g. 2, or auto")
    return n


def count_samples(data: str, limit: int | None) -> int | None:
    """Samples in DATA when they can be counted without TensorFlow (.npy, .npz, an image
    folder); None otherwise (a data function: each worker counts it)."""
    path = Path(data)
    n: int | None = None
    try:
        if path.is_dir():
            n = sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.suffix.lower() == ".npy":
            n = int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
        elif path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                n = int(z[next(iter(z.keys()))].shape[0])
    except (OSError, ValueError, StopIteration, IndexError):
        return None
    return None if n is None else min(n, limit) if limit else n


def shard_count(workers: int, data: str, samples: int | None, batch_size: int) -> int:
    """Workers, capped at the number of batches (a shard holds whole batches)."""
    total = count_samples(data, samples)
    if total is None:
        return workers
    return max(1, min(workers, math.ceil(total / max(1, batch_size))))


def worker_command(model: str, args: Sequence[str], spec: ShardSpec, out: Path) -> list[str]:
    """The command line of one shard."""
    return [sys.executable, "-m", "qdebug", "trace", model, *args,
            "--shard", str(spec), "--out", str(out), "--quiet"]


def error_line(log: str) -> str:
    """A worker's one-line error (or its last line) from its stderr."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("qdebug: error: "):
            return ln[len("qdebug: error: "):]
    return lines[-1][:300] if lines else "no output"


@dataclass
class _Worker:
    spec: ShardSpec
    out: Path
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float
    done: bool = False


def run_local(
    model: str,
    args: Sequence[str],
    n: int,
    out: Path,
    *,
    quiet: bool = False,
    command_line: str = "",
) -> Path:
    """Trace the ``n`` shards in local processes, merge them into ``out``, delete the shards."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.shards-", dir=out.parent))
    workers: list[_Worker] = []
    try:
        with Phases(quiet=quiet) as phases:
            tasks: dict[int, Any] = {}
            for k in range(1, n + 1):
                spec = ShardSpec(k, n)
                path = tmp / f"shard-{k}-of-{n}.h5"
                log = (tmp / f"shard-{k}.log").open("wb")
                proc = subprocess.Popen(worker_command(model, args, spec, path), stderr=log,
                                        stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
                workers.append(_Worker(spec, path, proc, log, time.perf_counter()))
                tasks[k] = phases.progress.add_task(f"shard {spec}", total=1)
            _wait(workers, lambda w, text: phases.progress.update(tasks[w.spec.k], description=text,
                                                                  completed=1))
            with phases.step(f"merge {n} shards"):
                merged = merge_traces([w.out for w in workers], out, command_line=command_line)
        return merged
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.terminate()
                w.proc.wait()
            w.log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _wait(workers: list[_Worker], show: Callable[[_Worker, str], None]) -> None:
    """Until every worker is done; the first failure stops the others and is raised."""
    while not all(w.done for w in workers):
        time.sleep(0.1)
        for w in workers:
            if w.done or w.proc.poll() is None:
                continue
            w.done = True
            took = time.perf_counter() - w.started
            if w.proc.returncode != 0:
                w.log.flush()
                text = w.log.name and Path(str(w.log.name)).read_text("utf-8", "replace")
                raise QdebugError(f"shard {w.spec} failed: {error_line(text or '')}")
            show(w, f"shard {w.spec} ({took:.1f}s)")
