"""An output whose layer scores sum far over 1 gets no culprits, and says why: the first-order
reach does not hold where paths meet again through gains measured one layer at a time
(MediaPipe's selfie segmentation: 1,294× its output's error, where its culprits read 412×)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from qdebug.analysis.culprits import (
    UNSOUND_TOTAL,
    find_culprits,
    no_culprits_reason,
    scores_total,
)
from qdebug.store.schema import STATUS_MATCHED, LayerRecord


def _ladder(gain: float, rungs: int = 4) -> tuple[list[LayerRecord], dict, dict]:
    """x, then ``rungs`` diamonds (two branches that meet again in an Add), each branch of
    the given gain: the error of x reaches the output along 2^rungs paths."""
    names, inbound = ["x"], [[]]
    for k in range(rungs):
        prev = names[-1]
        names += [f"a{k}", f"b{k}", f"c{k}"]
        inbound += [[prev], [prev], [f"a{k}", f"b{k}"]]
    layers = [LayerRecord(n, "Dense", inbound=i, status=STATUS_MATCHED, dtype="int8",
                          scale=0.01, tensor_index=1) for n, i in zip(names, inbound, strict=True)]
    n = len(layers)
    m = {"sqnr_db": np.full(n, 20.0), "local_sqnr_db": np.full(n, 30.0),
         "local_rmse_lsb": np.full(n, 1.0), "clip_share": np.zeros(n),
         "clip_fraction": np.zeros(n), "local_share": np.full(n, 0.5),
         "gain": np.array([math.nan] + [gain] * (n - 1))}
    stats = {"sum_f2": np.ones(n), "sum_e2": np.full(n, 0.01),
             "sum_local_e2": np.full(n, 0.001)}
    return layers, m, stats


@pytest.mark.parametrize("gain", [0.7, 3.0])
def test_scores_that_do_not_add_up_name_no_culprit(gain: float) -> None:
    layers, m, stats = _ladder(gain)
    total = scores_total(layers, m, stats, 20.0, "c3")
    found = find_culprits(layers, m, stats, 20.0, "c3")
    if gain < 1:  # the shares hold: the layers are ranked
        assert total < UNSOUND_TOTAL and found
    else:  # (2·3²)⁴ ≈ 10⁵ paths' worth of reach: nothing can be named for sure
        assert total > UNSOUND_TOTAL and found == []
        why = no_culprits_reason(layers, m, "layer", total)
        assert "do not add up" in why and f"{total:,.0f}×" in why
