"""Culprits on an int16x8 trace quote int16 figures, and the thresholds hold for 16 bits."""
from __future__ import annotations

import math

import numpy as np
import pytest

from qdebug.analysis.culprits import (
    COARSE_SCORE,
    MIN_SCORE,
    find_culprits,
    int16_remedy,
    no_culprits_reason,
    rank_layers,
)
from qdebug.store.schema import STATUS_MATCHED, LayerRecord


def _row(name: str, dtype: str, inbound: list[str]) -> LayerRecord:
    return LayerRecord(name, "Dense", inbound=inbound, status=STATUS_MATCHED, dtype=dtype,
                       scale=0.01, tensor_index=1)



@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_a_rounding_culprit_above_the_score_threshold_is_never_healthy(dtype: str) -> None:
    layers = [_row("x", dtype, []), _row("d", dtype, ["x"]), _row("e", dtype, ["d"])]
    nan = math.nan
    m = {
        "sqnr_db": np.array([60.0, 30.0, 29.9]),
        "local_sqnr_db": np.array([60.0, 30.0, 50.0]),
        "local_rmse_lsb": np.array([0.29, 0.30, 0.29]),
        "clip_share": np.zeros(3), "clip_fraction": np.zeros(3),
        "gain": np.array([nan, 1.0, 1.0]), "local_share": np.array([1.0, 1.0, 1.0]),
    }
    stats = {"sum_f2": np.ones(3), "sum_e2": 10 ** (-m["sqnr_db"] / 10)}
    found = {c.layer: c for c in find_culprits(layers, m, stats, 29.9)}
    assert "d" in found and found["d"].score >= COARSE_SCORE
    assert "healthy" not in found["d"].reason
    assert ("int16 LSB" in found["d"].reason) == (dtype == "int16")
    assert all(c.score >= MIN_SCORE for c in found.values())



@pytest.mark.parametrize(("later_db", "words"), [
    (29.9, "98% of the output's noise-to-signal"),  # the output keeps the layer's error
    (40.0, "10.0× the output's noise-to-signal"),  # later layers damp it: never "100%"
])
def test_a_rounding_culprit_says_how_its_score_compares_with_the_output(
    later_db: float, words: str
) -> None:
    layers = [_row("x", "int8", []), _row("d", "int8", ["x"]), _row("e", "int8", ["d"])]
    nan = math.nan
    m = {
        "sqnr_db": np.array([60.0, 30.0, later_db]),
        "local_sqnr_db": np.array([60.0, 30.0, 50.0]),
        "local_rmse_lsb": np.array([0.29, 0.30, 0.29]),
        "clip_share": np.zeros(3), "clip_fraction": np.zeros(3),
        "gain": np.array([nan, 1.0, 0.3]), "local_share": np.array([1.0, 1.0, 1.0]),
    }
    stats = {"sum_f2": np.ones(3), "sum_e2": 10 ** (-m["sqnr_db"] / 10)}
    found = {c.layer: c for c in rank_layers(layers, m, stats, later_db)}
    assert words in found["d"].reason
    assert "100%" not in found["d"].reason



@pytest.mark.parametrize(("quantizer", "hint", "never"), [
    ("converter", "--scheme int16x8", "--recipe"),
    ("ai-edge-quantizer", "--recipe int16", "--scheme"),  # the AEQ route refuses --scheme
    ("given", "where it was quantized", "--scheme"),  # --tflite: qdebug did not quantize it
])
def test_no_culprits_hint_names_the_int16_option_of_the_route_that_quantized(
    quantizer: str, hint: str, never: str
) -> None:
    """Error built up over many layers, none worth acting on: the reason suggests int16
    activations in the words of the route that made the model."""
    layers = [_row("x", "int8", []), _row("d", "int8", ["x"]), _row("e", "int8", ["d"])]
    m = {"local_sqnr_db": np.array([60.0, 45.0, 45.0])}
    why = no_culprits_reason(layers, m, remedy=int16_remedy(quantizer))
    assert "builds up over many" in why and hint in why and never not in why
