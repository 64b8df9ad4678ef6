"""Culprits on an int16x8 trace quote int16 figures, and the thresholds hold for 16 bits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import qdebug
from qdebug.analysis.culprits import (
    COARSE_SCORE,
    HEALTHY_LSB,
    MIN_SCORE,
    is_healthy,
    rank_layers,
)
from qdebug.cli import cli


@pytest.mark.tf
@pytest.mark.slow
def test_int16x8_culprits_quote_int16_figures(
    tmp_path: Path, digits_data  # type: ignore[no-untyped-def]
) -> None:
    import digits_cnn

    # the demo's CNN trained in full: the briefly trained one (digits_model) answers one of
    # these 48 digits with a near tie, which int16 flips (47/48 agree: not healthy)
    digits_cnn.build().save(tmp_path / "digits.keras")
    np.save(tmp_path / "x.npy", digits_data[:48])
    out = tmp_path / "t16.h5"
    r = CliRunner().invoke(cli, ["trace", str(tmp_path / "digits.keras"), "--data",
                                 str(tmp_path / "x.npy"), "--out", str(out), "-q",
                                 "--scheme", "int16x8", "--store-samples", "0"])
    assert r.exit_code == 0, r.output
    with qdebug.open(out) as tr:
        lm = tr.layer_metrics()
        out_db = float(tr.output_metrics()["sqnr_db"][0])
        # 16-bit activations leave a healthy output: nothing to act on
        assert is_healthy(out_db) and tr.culprits() == []
        culprits = rank_layers(tr.layers, lm, tr.layer_pooled_stats(), out_db,
                               tr.outputs[0].layer)  # the ranking itself: its reasons
        assert culprits
        int16 = [c for c in culprits if tr.layers[c.index].dtype == "int16"]
        assert int16  # the digits model's culprits are 16-bit activations
        for c in culprits:
            assert c.score >= MIN_SCORE
            lsb = float(lm["local_rmse_lsb"][c.index])
            if "healthy" in c.reason:
                assert c.score < COARSE_SCORE and lsb <= HEALTHY_LSB
        for c in int16:
            if "LSB" in c.reason:
                assert "int16 LSB" in c.reason, c.reason
                assert "rounding alone is 0.29)" not in c.reason  # int8's figure, unqualified
            if c.kind == "injects":  # also in int8 steps: tens of int16 LSB are a fraction
                steps = float(lm["local_rmse_lsb"][c.index]) / 257.0
                assert f"{steps:.3f} of an int8 step" in c.reason



@pytest.mark.tf
def test_the_first_culprit_is_the_layer_keeping_in_float_helps_most(tmp_path: Path) -> None:
    """A trained token model (Embedding → average → Dense softmax): the average's relative
    error is the largest, but the softmax damps it away; the error that reaches the output is
    born at the output layer. The first culprit must be the layer `qdebug sensitivity` finds
    (keeping it alone in float buys the most output SQNR), and score ≈ that layer's share."""
    import keras

    from qdebug.tools.fix_search import one_at_a_time

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 40, (600, 10)).astype(np.int32)
    y = (np.isin(ids, np.arange(5)).sum(axis=1) > 1).astype(np.int64)
    inp = keras.Input((10,), dtype="int32", name="ids")
    h = keras.layers.Embedding(40, 8, name="emb")(inp)
    h = keras.layers.GlobalAveragePooling1D(name="gap")(h)
    out = keras.layers.Dense(2, activation="softmax", name="out")(h)
    model = keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(ids, y, epochs=3, verbose=0)
    model.save(tmp_path / "tok.keras")
    np.save(tmp_path / "ids.npy", ids[:64])
    _, ranked = one_at_a_time(str(tmp_path / "tok.keras"), str(tmp_path / "ids.npy"), layers=3)
    traced = qdebug.trace(str(tmp_path / "tok.keras"), str(tmp_path / "ids.npy"),
                          out=tmp_path / "tok.h5", quiet=True)
    with qdebug.open(traced) as tr:
        out_db = float(tr.output_metrics()["sqnr_db"][0])
        # a healthy output (~53 dB): no culprit is listed, the summary says so
        assert is_healthy(out_db) and tr.culprits() == []
        culprits = rank_layers(tr.layers, tr.layer_metrics(), tr.layer_pooled_stats(), out_db,
                               tr.outputs[0].layer)
    assert "healthy: every output at 30 dB" in CliRunner().invoke(
        cli, ["report", str(traced)]).stdout
    assert culprits, "no layer ranked"
    best = max(ranked, key=lambda s: s.delta_db)
    assert culprits[0].layer == best.layer, (culprits, ranked)
    # keeping it in float removes about its score's share of the output's error power
    removed = 1 - 10 ** (-best.delta_db / 10)
    assert abs(removed - culprits[0].score) < 0.15, (removed, culprits[0].score)



@pytest.mark.tf
@pytest.mark.slow
def test_a_layer_of_many_ops_is_named_by_its_ops(tmp_path: Path, digits_data) -> None:  # type: ignore[no-untyped-def]
    """A subclassed CNN wrapped in a functional model is one layer owning every op: its
    culprits are its ops, as for the bare model (traced as ops), with the same scores and
    reasons (the wrapped model's one culprit was the whole layer, 0.96)."""
    spec = _subclassed_cnn_factory(tmp_path)
    np.save(tmp_path / "x.npy", digits_data[:128])
    np.save(tmp_path / "calib.npy", digits_data[300:302])  # ranges that clip: not healthy
    found = {}
    for name in ("bare", "wrapped"):
        out = tmp_path / f"{name}.h5"
        r = CliRunner().invoke(cli, ["trace", f"{spec}:{name}", "--data", str(tmp_path / "x.npy"),
                                     "--calib", str(tmp_path / "calib.npy"), "--out", str(out),
                                     "-q"])
        assert r.exit_code == 0, r.output
        with qdebug.open(out) as tr:
            om = tr.output_metrics()
            # ≥ 30 dB, but flipping answers: a classifier that does so is not healthy
            assert not is_healthy(float(om["sqnr_db"][0]), float(om["top1_agreement"][0]))
            found[name] = (tr.culprits(), [r.name for r in tr.layers], {o.name for o in tr.ops})
    (bare, _, _), (wrapped, layer_names, op_names) = found["bare"], found["wrapped"]
    assert "net" in layer_names and len(layer_names) == 2  # the input and the wrapped model
    assert wrapped and all(c.layer in op_names and c.layer != "net" for c in wrapped)
    assert all(layer_names[c.index] == "net" and "of layer 'net'" in c.reason for c in wrapped)
    assert [c.kind for c in wrapped] == [c.kind for c in bare]
    np.testing.assert_allclose([c.score for c in wrapped], [c.score for c in bare], rtol=1e-6)
    assert [c.reason.split(": ", 1)[1] for c in wrapped] == [c.reason for c in bare]
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "wrapped.h5")])
    assert r.exit_code == 0 and wrapped[0].layer in r.stdout



def _subclassed_cnn_factory(folder: Path) -> str:
    """Write a subclassed keras.Model (three convs with a residual add, pooling, two Dense),
    trained on scikit-learn's digits, as ``folder/subcnn.py``, with factories ``bare`` (the
    subclassed model) and ``wrapped`` (it, called inside a functional model: one layer of
    every op); return the file's path."""
    path = folder / "subcnn.py"
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2] / 'examples')!r})\n"
        "import keras\n\n"
        "class Net(keras.Model):\n"
        "    def __init__(self):\n"
        "        super().__init__(name='net')\n"
        "        L = keras.layers\n"
        "        self.c1 = L.Conv2D(16, 3, padding='same', activation='relu')\n"
        "        self.c2 = L.Conv2D(16, 3, padding='same', activation='relu')\n"
        "        self.pool = L.MaxPooling2D()\n"
        "        self.c3 = L.Conv2D(32, 3, padding='same', activation='relu')\n"
        "        self.gap = L.GlobalAveragePooling2D()\n"
        "        self.fc = L.Dense(32, activation='relu')\n"
        "        self.out = L.Dense(10, activation='softmax')\n"
        "    def call(self, x):\n"
        "        h = self.c1(x)\n"
        "        h = h + self.c2(h)\n"
        "        return self.out(self.fc(self.gap(self.c3(self.pool(h)))))\n\n"
        "def bare():\n"
        "    import digits_cnn\n"
        "    keras.utils.set_random_seed(0)\n"
        "    net = Net()\n"
        "    net.compile('adam', 'sparse_categorical_crossentropy')\n"
        "    net.fit(digits_cnn.data(), digits_cnn.labels(), epochs=3, batch_size=64, verbose=0)\n"
        "    return net\n\n"
        "def wrapped():\n"
        "    net = bare()\n"
        "    x = keras.Input((8, 8, 1), name='image')\n"
        "    return keras.Model(x, net(x), name='wrapped')\n"
    )
    return str(path)

