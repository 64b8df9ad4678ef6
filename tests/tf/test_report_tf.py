"""qdebug report: markdown for an issue, CSV in TFLite QuantizationDebugger's layout, JSON."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

import qdebug
from cli_helpers import report_csv, run_qdebug


@pytest.fixture(scope="module")
def inf_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real trace with −∞ and +∞ dB: ``relu`` = relu(x − c) is exactly 0 in float on data
    just below c, but the quantized input rounds up past c, so its SQNR is −∞ (signal 0, noise
    > 0); ``pool`` (max-pooling) is exact, so its local SQNR is +∞."""
    import tensorflow as tf

    K = tf.keras
    c = 128 / 255 - 0.001  # just under a grid point of the input's 1/255 scale
    x = K.Input((8, 1), name="x")
    shift = K.layers.Dense(1, name="shift", kernel_initializer="ones",
                           bias_initializer=K.initializers.Constant(-c))(x)
    relu = K.layers.ReLU(name="relu")(shift)
    pool = K.layers.MaxPooling1D(2, name="pool")(x)
    model = K.Model(x, [relu, pool])
    calib = np.random.default_rng(0).uniform(0, 1, (64, 8, 1)).astype("float32")
    calib[0], calib[1] = 0.0, 1.0
    data = np.full((4, 8, 1), 0.5005, dtype="float32")  # < c, rounds to 128/255 > c
    return Path(qdebug.trace(model, data, calib=calib, out=tmp_path_factory.mktemp("inf")
                             / "inf.h5", quiet=True))


@pytest.mark.tf
def test_plus_and_minus_infinity_are_told_apart_in_json_and_csv(inf_trace: Path) -> None:
    """An op that destroys its signal (−∞ dB) and an exact one (+∞ dB) are different values for
    a script: JSON strings "-inf" / "inf" (NaN stays null), CSV cells -inf / inf (NaN empty)."""
    with qdebug.open(inf_trace) as tr:
        names = [r.name for r in tr.layers]
        lm = tr.layer_metrics()
    relu, pool, shift = names.index("relu"), names.index("pool"), names.index("shift")
    assert lm["sqnr_db"][relu] == -np.inf and lm["local_sqnr_db"][pool] == np.inf
    assert np.isnan(lm["sqnr_db"][shift])  # fused into relu: no tensor

    out = run_qdebug("report", inf_trace, "--format", "json")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)  # strict JSON: no Infinity / NaN tokens
    assert "Infinity" not in out.stdout and "NaN" not in out.stdout
    layers = {r["name"]: r for r in rep["layers"]}
    assert layers["relu"]["sqnr_db"] == "-inf"
    assert layers["pool"]["local_sqnr_db"] == "inf"
    assert layers["shift"]["sqnr_db"] is None
    assert rep["output"]["outputs"][0]["sqnr_db"] == "-inf"
    ops = {o["layer"]: o for o in rep["ops"] if o["layer"]}
    assert ops["relu"]["sqnr_db"] == "-inf" and ops["pool"]["local_sqnr_db"] == "inf"

    df = report_csv(inf_trace).set_index("layer")
    assert df.loc["relu", "sqnr_db"] == -np.inf and df.loc["pool", "local_sqnr_db"] == np.inf
    assert np.isnan(df.loc["shift", "sqnr_db"])
    raw = list(csv.DictReader(io.StringIO(run_qdebug("report", inf_trace, "--format",
                                                     "csv").stdout)))
    cells = {r["layer"]: r for r in raw}
    assert cells["relu"]["sqnr_db"] == "-inf" and cells["pool"]["local_sqnr_db"] == "inf"
    assert cells["shift"]["sqnr_db"] == ""

