"""Shards as Ray tasks: each task runs ``qdebug trace … --shard K/N`` in a fresh interpreter
on whichever node Ray picks and sends the shard trace back as bytes; the driver merges them.

MODEL and DATA must be readable under the same path on every node (a shared file system, or
files shipped with Ray's ``runtime_env={"working_dir": ...}``), and qdebug[trace] installed
there. Ray itself is optional: ``pip install 'qdebug[ray]'``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qdebug.errors import QdebugError
from qdebug.progress import Phases
from qdebug.shards.local import error_line, shard_count, worker_command
from qdebug.shards.merge import merge_traces
from qdebug.shards.slicing import ShardSpec


def trace_shard_bytes(model: str, args: Sequence[str], k: int, n: int) -> tuple[bool, Any]:
    """One shard, traced here: ``(True, trace bytes)`` or ``(False, the one-line error)``.
    The body of each Ray task (a plain function, so it runs and tests without Ray)."""
    with tempfile.TemporaryDirectory(prefix="qdebug-shard-") as tmp:
        out = Path(tmp) / f"shard-{k}-of-{n}.h5"
        done = subprocess.run(worker_command(model, args, ShardSpec(k, n), out),
                              capture_output=True, stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            return False, error_line(done.stderr.decode("utf-8", "replace"))
        return True, out.read_bytes()


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise QdebugError(
            "Ray is not installed", "pip install 'qdebug[ray]', or use --workers N on one machine"
        ) from exc
    return ray


def trace_on_ray(
    model: str,
    args: Sequence[str],
    out: str | Path,
    *,
    shards: int | None = None,
    address: str | None = "auto",
    num_cpus: float = 1,
    quiet: bool = False,
    command_line: str = "",
) -> Path:
    """Trace MODEL in ``shards`` Ray tasks and merge them into ``out``.

    Args:
        model: what ``qdebug trace`` takes (a path every node can read).
        args: the other ``qdebug trace`` options, e.g. ``["--data", "/shared/val.npy"]``.
        shards: how many slices (default: the cluster's CPUs, at most one per batch).
        address: ``auto`` (the running cluster), ``local`` (start one in this process), or
            ``ray://HOST:10001``; ignored when Ray is already initialised.
        num_cpus: CPUs Ray reserves per task.
    """
    ray = _ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=None if address in (None, "local") else address,
                 log_to_driver=False, include_dashboard=False)
        started = True
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.shards-", dir=out.parent))
    try:
        n = shards or max(1, int(ray.cluster_resources().get("CPU", 1) // max(num_cpus, 1e-9)))
        n = _cap(n, args)
        task = ray.remote(num_cpus=num_cpus, max_retries=1)(trace_shard_bytes)
        with Phases(quiet=quiet) as phases:
            start = time.perf_counter()
            refs = {task.remote(model, list(args), k, n): k for k in range(1, n + 1)}
            bars = {k: phases.progress.add_task(f"shard {k}/{n} (ray)", total=1)
                    for k in range(1, n + 1)}
            pending = list(refs)
            paths: dict[int, Path] = {}
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                k = refs[ready[0]]
                ok, payload = ray.get(ready[0])
                if not ok:
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    raise QdebugError(f"shard {k}/{n} failed on Ray: {payload}")
                paths[k] = tmp / f"shard-{k}-of-{n}.h5"
                paths[k].write_bytes(payload)
                took = time.perf_counter() - start
                phases.progress.update(bars[k], completed=1,
                                       description=f"shard {k}/{n} (ray, {took:.1f}s)")
            with phases.step(f"merge {n} shards"):
                return merge_traces([paths[k] for k in sorted(paths)], out,
                                    command_line=command_line)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if started:
            ray.shutdown()


def _cap(n: int, args: Sequence[str]) -> int:
    """At most one shard per batch, when DATA can be counted here."""
    def value(flag: str) -> str | None:
        return args[args.index(flag) + 1] if flag in args[:-1] else None

    data = value("--data")
    if data is None or not Path(data).exists():
        return n
    samples = value("--samples")
    return shard_count(n, data, int(samples) if samples else None,
                       int(value("--batch-size") or 16))


__all__ = ["trace_on_ray", "trace_shard_bytes"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit("use qdebug trace --ray ADDRESS, or qdebug.shards.ray_tasks.trace_on_ray")
