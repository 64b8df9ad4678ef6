"""Beyond one machine: ``qdebug trace --shard K/N``, ``qdebug merge``, ``--workers`` and Ray.

The merge of the shards must be the whole run: per-sample statistics, stored samples, worst
samples, ranges and weights bit for bit (shards are cut in whole batches, so every sample is
computed in the batch it has in the whole run), pooled metrics and channel sums to float
rounding, culprits the same.
"""
from __future__ import annotations

import itertools

import pytest

from qdebug.errors import QdebugError
from qdebug.shards.slicing import ShardSpec, parse_shard


@pytest.mark.parametrize(("total", "bs", "n"), [(96, 16, 2), (96, 16, 3), (100, 16, 3),
                                                (7, 1, 7), (1000, 32, 5), (33, 16, 3)])
def test_slices_are_whole_batches_covering_every_sample_once(total: int, bs: int, n: int) -> None:
    slices = [ShardSpec(k, n).slice(total, bs) for k in range(1, n + 1)]
    assert slices[0][0] == 0
    for (s0, c0), (s1, _) in itertools.pairwise(slices):
        assert s0 + c0 == s1 and s0 % bs == 0 and c0 % bs == 0 and c0 > 0
    assert slices[-1][0] + slices[-1][1] == total



def test_too_many_shards_and_bad_specs_are_refused() -> None:
    with pytest.raises(QdebugError, match="too few for 4 shards"):
        ShardSpec(1, 4).slice(40, 16)
    for bad in ("3", "0/2", "3/2", "a/b", "1/0"):
        with pytest.raises(QdebugError, match="--shard"):
            parse_shard(bad)
    assert parse_shard(" 2 / 5 ") == ShardSpec(2, 5)



def test_workers_forward_every_trace_option_but_their_own() -> None:
    from qdebug.cli import trace
    from qdebug.cli.sharding import forwarded_args

    ctx = trace.make_context("trace", [
        "m.keras", "--data", "x.npy", "--workers", "2", "--ray", "local", "--out", "o.h5",
        "--batch-size", "8", "--int8-io", "-q", "--format", "json", "--keep-float", "fc",
    ])
    args = forwarded_args(ctx)
    for own in ("--workers", "--ray", "--out", "--quiet", "--format", "--shard"):
        assert own not in args, args
    assert args[args.index("--batch-size") + 1] == "8" and "--int8-io" in args
    assert args[args.index("--data") + 1] == "x.npy" and "--keep-float" in args



def test_shards_may_differ_in_how_their_calibration_was_made_and_nothing_else() -> None:
    """Each shard process decides its calibration route by the time it measures; the INT8
    model (compared by its sha256) is the same, so that key alone is not a difference."""
    from qdebug.shards.shard_file import _comparable

    a = {"calib_samples": 32, "scheme": "int8", "calibration": "two threads"}
    b = {**a, "calibration": "the calibrator (the calibrator is as fast on this model …)"}
    assert _comparable("converter", a) == _comparable("converter", b)
    assert _comparable("converter", a) != _comparable("converter", {**b, "scheme": "int16x8"})
    assert _comparable("kernels", "x") == "x"
