"""The samples of one shard (``qdebug trace --shard K/N``): a contiguous slice of the data, cut
in whole batches, with the global position of its first sample."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from qdebug.store.sharding import ShardInfo, ShardSpec
from qdebug.tracer.data import SampleSource


@dataclass(frozen=True)
class ShardSlice:
    """A shard's samples and what the trace records about them."""

    source: SampleSource
    info: ShardInfo


def _total(src: SampleSource) -> int:
    """Samples in ``src`` (after its limit). A source of unknown length (a data function) is
    counted by iterating it once without validating."""
    if src.length is not None:
        return len(src)
    n = 0
    for _ in src._factory():
        n += 1
        if src.limit is not None and n >= src.limit:
            break
    return n


def shard_source(
    src: SampleSource, spec: ShardSpec, batch_size: int, store_samples: int
) -> ShardSlice:
    """The K-th of N slices of ``src``; samples before it are skipped unvalidated."""
    total = _total(src)
    start, count = spec.slice(total, batch_size)
    factory = src._factory
    sliced = SampleSource(
        src.description,
        src.inputs,
        lambda: itertools.islice(factory(), start, start + count),
        length=count,
        warnings=src.warnings,
    )
    info = ShardInfo(spec, start, count, total, max(1, batch_size), store_samples)
    return ShardSlice(sliced, info)
