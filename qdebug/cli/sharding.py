"""``qdebug trace --workers N`` and ``--ray``: the command line a worker gets, and the choice
between one process, local workers and Ray. The work itself is ``qdebug.shards.local`` and
``qdebug.shards.ray_tasks``, which know nothing of click."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from qdebug.errors import QdebugError
from qdebug.shards.local import resolve_workers, run_local, shard_count
from qdebug.shards.slicing import ShardSpec

#: Options of ``qdebug trace`` that the parent handles and never forwards to a worker.
PARENT_ONLY = {"out", "workers", "shard", "ray_address", "fmt", "quiet", "debug"}


def forwarded_args(ctx: click.Context) -> list[str]:
    """The ``qdebug trace`` options the user gave, as a worker's command line (without MODEL,
    ``--out``, ``--workers``, ``--shard``, ``--ray`` and the output format)."""
    args: list[str] = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in PARENT_ONLY:
            continue
        value = ctx.params.get(param.name or "")
        if value is None or value is False or value == "" or value == ():
            continue
        flag = max(param.opts, key=len)
        if param.multiple:  # --metric a --metric b: each value its own flag
            args += [x for v in value for x in (flag, str(v))]
        else:
            args += [flag] if param.is_flag else [flag, str(value)]
    return args

def default_out(model: str) -> Path:
    """``traces/<model>-<timestamp>.h5`` named after MODEL's file."""
    from qdebug.tracer.pipeline import default_trace_path

    return default_trace_path(Path(model.split(":")[0]).stem or "model")


def run_sharded(
    ctx: click.Context, workers: str, ray_address: str | None, spec: ShardSpec | None,
    quiet: bool,
) -> Path | None:
    """``qdebug trace`` with ``--workers N`` (N > 1) or ``--ray``: the merged trace's path;
    None when the trace runs in this process (one worker, or ``--shard``)."""
    n = resolve_workers(workers)
    if ray_address is None and n == 1:
        return None
    if spec is not None:
        raise QdebugError(
            "--shard traces one slice, --workers and --ray run every slice and merge them",
            "give one or the other",
        )
    p = ctx.params
    model = str(p["model"])
    args = forwarded_args(ctx)
    out = Path(p["out"]) if p.get("out") else default_out(model)
    command = "qdebug " + " ".join(shlex.quote(a) for a in ctx.meta.get("qdebug.argv", []))
    quiet = quiet or p.get("fmt") == "json"
    if ray_address is not None:
        from qdebug.shards.ray_tasks import trace_on_ray

        given = ctx.get_parameter_source("workers") != click.core.ParameterSource.DEFAULT
        auto = not given or workers.strip().lower() == "auto"
        return trace_on_ray(model, args, out, shards=None if auto else n, address=ray_address,
                            quiet=quiet, command_line=command)
    n = shard_count(n, str(p["data"]), p.get("samples"), int(p.get("batch_size") or 1))
    if n == 1:
        return None
    return run_local(model, args, n, out, quiet=quiet, command_line=command)
