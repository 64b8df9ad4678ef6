"""Shards of a trace on an existing cluster engine (Ray): ``pip install 'qdebug[ray]'``."""

from __future__ import annotations

from typing import Any

__all__ = ["trace_on_ray"]


def __getattr__(name: str) -> Any:
    if name == "trace_on_ray":
        from qdebug.distributed.ray_shards import trace_on_ray

        return trace_on_ray
    raise AttributeError(name)
