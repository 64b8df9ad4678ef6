"""Trace.typed_layer_metrics: the pooled layer metrics as a frozen record of named arrays."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import qdebug
from qdebug.store.layer_metrics import LayerMetrics


def test_the_record_holds_the_traces_arrays_by_name(fixture_trace: Path) -> None:
    with qdebug.open(fixture_trace) as t:
        arrays = t.layer_metrics()
        lm = t.typed_layer_metrics()
    assert list(lm.as_dict()) == list(arrays) == list(lm.present)
    for name, values in arrays.items():
        np.testing.assert_array_equal(getattr(lm, name), values)
        assert lm.has(name)
    assert lm.sqnr_db.shape == (len(t.layers),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lm.sqnr_db = np.zeros(3)  # type: ignore[misc]


def test_a_metric_the_trace_lacks_reads_nan_and_is_not_listed() -> None:
    lm = LayerMetrics.from_arrays({"sqnr_db": np.array([30.0, np.inf]),
                                   "gain": np.array([1.5, np.nan])}, 2)
    assert lm.present == ("sqnr_db", "gain") and not lm.has("local_sqnr_db")
    assert np.isnan(lm.local_sqnr_db).all() and lm.local_sqnr_db.shape == (2,)
    assert list(lm.as_dict()) == ["sqnr_db", "gain"]
    assert lm.sqnr_db[1] == np.inf


def test_rows_can_be_taken_and_a_dict_is_viewed_once() -> None:
    arrays = {"sqnr_db": np.array([10.0, 20.0, 30.0]), "local_share": np.array([0.1, 0.2, 0.3])}
    lm = LayerMetrics.of(arrays, 3)
    assert LayerMetrics.of(lm, 3) is lm
    part = lm.take(np.array([2, 0]))
    np.testing.assert_array_equal(part.sqnr_db, [30.0, 10.0])
    np.testing.assert_array_equal(part.local_share, [0.3, 0.1])
    assert part.present == lm.present and np.isnan(part.gain).all() and part.gain.shape == (2,)
