"""Shards: the K-th of N disjoint, contiguous slices of the samples, the trace attributes
that record one, and a shard's samples cut from a source. Pure Python (no TensorFlow, no
h5py): the tracer, ``qdebug merge`` and the worker launchers share it.

Slices are made of whole batches (``--batch-size``), so every sample is computed in the same
batch as in one whole run and its per-sample statistics are bit for bit the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, Self, TypeVar

from qdebug.errors import QdebugError

#: Root attributes of a shard trace (see docs/trace-format.md).
ATTR_SHARD = "shard"  # "K/N"
ATTR_START = "shard_start"  # global position of the slice's first sample
ATTR_COUNT = "shard_count"  # samples in the slice (= n_samples)
ATTR_TOTAL = "shard_total"  # samples in the whole data (after --samples)
ATTR_BATCH = "shard_batch_size"  # --batch-size the slice was cut by
ATTR_STORE = "shard_store_samples"  # --store-samples of the run (the merge's budget)
SHARD_ATTRS = (ATTR_SHARD, ATTR_START, ATTR_COUNT, ATTR_TOTAL, ATTR_BATCH, ATTR_STORE)


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``k`` (1-based) of ``n``."""

    k: int
    n: int

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"

    def slice(self, total: int, batch_size: int) -> tuple[int, int]:
        """(first sample, count) of this shard among ``total`` samples: the shard gets whole
        batches ``[B·(k−1)/N, B·k/N)`` of the ``B`` batches, so slices are contiguous, disjoint,
        cover everything, and differ in size by at most one batch."""
        bs = max(1, batch_size)
        batches = -(-total // bs)
        if self.n > batches:
            raise QdebugError(
                f"--shard {self}: {total} sample(s) make {batches} batch(es) of {bs}, too few "
                f"for {self.n} shards",
                f"use at most {max(batches, 1)} shards, or a smaller --batch-size",
            )
        first = batches * (self.k - 1) // self.n
        last = batches * self.k // self.n
        start = first * bs
        return start, min(last * bs, total) - start


def parse_shard(text: str) -> ShardSpec:
    """``"K/N"`` (1 ≤ K ≤ N) → ``ShardSpec``; anything else is refused with one line."""
    found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not found:
        raise QdebugError(
            f"--shard {text!r} is not K/N", "give e.g. --shard 1/4 for the first of 4 slices"
        )
    k, n = int(found.group(1)), int(found.group(2))
    if not 1 <= k <= n:
        raise QdebugError(
            f"--shard {text}: K must be between 1 and N",
            f"shards of {max(n, 1)} are numbered 1/{max(n, 1)} … {max(n, 1)}/{max(n, 1)}",
        )
    return ShardSpec(k, n)


@dataclass(frozen=True)
class ShardInfo:
    """What a shard trace says about its slice."""

    spec: ShardSpec
    start: int
    count: int
    total: int
    batch_size: int
    store_samples: int

    @property
    def end(self) -> int:
        """One past the slice's last sample."""
        return self.start + self.count

    def attrs(self) -> dict[str, Any]:
        """The root attributes recording this shard."""
        return {
            ATTR_SHARD: str(self.spec),
            ATTR_START: self.start,
            ATTR_COUNT: self.count,
            ATTR_TOTAL: self.total,
            ATTR_BATCH: self.batch_size,
            ATTR_STORE: self.store_samples,
        }


def shard_info(meta: Mapping[str, Any]) -> ShardInfo | None:
    """The shard recorded in a trace's root attributes; None when the trace is not a shard.
    Raises ``ValueError`` when the attributes are there but do not add up."""
    if ATTR_SHARD not in meta:
        return None
    spec = parse_shard(str(meta[ATTR_SHARD]))
    values = []
    for key in SHARD_ATTRS[1:]:
        v = meta.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"the attribute {key} is missing or not a count")
        values.append(v)
    info = ShardInfo(spec, *values)
    if info.end > info.total or info.batch_size < 1:
        raise ValueError(f"shard {spec} covers samples {info.start}–{info.end - 1} of {info.total}")
    return info


class Sliceable(Protocol):
    """A source of samples a shard can be cut from (the tracer's ``SampleSource``)."""

    def count_all(self) -> int:
        """Samples in the source (after its limit), counted without validating them."""
        ...

    def window(self, start: int, count: int) -> Self:
        """Samples ``start`` … ``start + count − 1``; those before are skipped unvalidated."""
        ...


S = TypeVar("S", bound=Sliceable)


@dataclass(frozen=True)
class ShardSlice(Generic[S]):
    """A shard's samples and what the trace records about them."""

    source: S
    info: ShardInfo


def shard_source(src: S, spec: ShardSpec, batch_size: int, store_samples: int) -> ShardSlice[S]:
    """The K-th of N slices of ``src`` (``qdebug trace --shard K/N``), cut in whole batches,
    with the global position of its first sample."""
    total = src.count_all()
    start, count = spec.slice(total, batch_size)
    info = ShardInfo(spec, start, count, total, max(1, batch_size), store_samples)
    return ShardSlice(src.window(start, count), info)
