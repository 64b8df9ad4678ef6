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
