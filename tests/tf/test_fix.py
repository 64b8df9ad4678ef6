"""The fix loop: --keep-float leaves layers float, --scheme int16x8, qdebug fix beats keeping
the worst-accumulated layers in float on the deep example, sensitivity, and QAT models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import models
import qdebug
from cli_helpers import assert_one_line_error
from qdebug.analysis.culprits import rank_layers
from qdebug.cli import cli
from qdebug.tools.fix_search import Searcher, Target, one_at_a_time, search_fix, worst_accumulated

pytestmark = [pytest.mark.tf, pytest.mark.slow]


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory: pytest.TempPathFactory, digits_model, digits_data):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("fix")
    digits_model.save(d / "digits.keras")
    np.save(d / "x.npy", digits_data[:48])
    return d


def _layer(tr: qdebug.store.reader.Trace, name: str) -> int:  # type: ignore[name-defined]
    return next(i for i, r in enumerate(tr.layers) if r.name == name)


def test_keep_float_leaves_the_layer_float(digits_file: Path) -> None:
    runner = CliRunner()
    base, kept = digits_file / "base.h5", digits_file / "kept.h5"
    for out, extra in ((base, []), (kept, ["--keep-float", "conv2"])):
        r = runner.invoke(cli, ["trace", str(digits_file / "digits.keras"), "--data",
                                str(digits_file / "x.npy"), "--out", str(out), "-q", *extra])
        assert r.exit_code == 0, r.stderr
    with qdebug.open(base) as b, qdebug.open(kept) as k:
        i = _layer(k, "conv2")
        assert k.layers[i].float_island and not b.layers[_layer(b, "conv2")].float_island
        assert any("conv2" in isl["tensor_name"] for isl in k.float_islands)
        assert k.meta["converter"]["keep_float"] == ["conv2"]
        assert b.meta["converter"]["keep_float"] == []
        local_k = float(k.layer_metrics()["local_sqnr_db"][i])
        local_b = float(b.layer_metrics()["local_sqnr_db"][_layer(b, "conv2")])
        assert local_b < 60 and local_k > 100  # its own error vanishes
        assert "--keep-float conv2" in k.meta["command_line"]
        # what ran: integer with its float islands, not "full integer" beside them
        assert b.meta["deployed"] == "full integer (int8 activations and weights)"
        n = len(k.float_islands)
        assert k.meta["deployed"] == (
            f"integer (int8 activations and weights) with {n} op(s) left in float")
    r = runner.invoke(cli, ["report", str(kept)])
    assert r.exit_code == 0 and "full integer" not in r.stdout
    assert "deployed model: integer (int8 activations and weights) with" in r.stdout


def test_keep_float_keeps_every_op_of_the_layer(digits_file: Path) -> None:
    """probs is Dense + softmax: FULLY_CONNECTED and SOFTMAX (whose tensor carries no layer
    name). Keeping the layer keeps both; its local error falls to float precision."""
    out = digits_file / "probs.h5"
    r = CliRunner().invoke(cli, ["trace", str(digits_file / "digits.keras"), "--data",
                                 str(digits_file / "x.npy"), "--out", str(out), "-q",
                                 "--keep-float", "probs"])
    assert r.exit_code == 0, r.stderr
    with qdebug.open(out) as k:
        probs = k.layers[_layer(k, "probs")]
        kinds = {k.ops[i].op_type: k.ops[i].dtype for i in probs.ops}
        assert kinds.get("FULLY_CONNECTED") == "float32" and kinds.get("SOFTMAX") == "float32"
        assert len(k.meta["converter"]["keep_float_ops"]) == 2
        assert float(k.layer_metrics()["local_sqnr_db"][_layer(k, "probs")]) > 100


def test_keep_float_unknown_layer_is_one_line(digits_file: Path) -> None:
    r = CliRunner().invoke(cli, ["trace", str(digits_file / "digits.keras"), "--data",
                                 str(digits_file / "x.npy"), "--keep-float", "conv9",
                                 "--out", str(digits_file / "never.h5")])
    assert_one_line_error(r.exit_code, r.stderr, "conv9", "conv")
    assert not (digits_file / "never.h5").exists()


def test_int16x8_scheme_is_recorded_and_recovers(digits_file: Path) -> None:
    out = digits_file / "i16.h5"
    r = CliRunner().invoke(cli, ["trace", str(digits_file / "digits.keras"), "--data",
                                 str(digits_file / "x.npy"), "--scheme", "int16x8",
                                 "--out", str(out), "-q"])
    assert r.exit_code == 0, r.stderr
    with qdebug.open(out) as t16, qdebug.open(digits_file / "base.h5") as t8:
        assert t16.meta["converter"]["scheme"] == "int16x8"
        assert t16.output_metrics()["sqnr_db"][0] > t8.output_metrics()["sqnr_db"][0] + 3
        i = _layer(t16, "conv2")
        j = _layer(t8, "conv2")
        assert t16.layer_metrics()["sqnr_db"][i] > t8.layer_metrics()["sqnr_db"][j] + 3


def test_fix_beats_keeping_the_worst_accumulated_layers(deep_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import digits_cnn

    x = digits_cnn.data()[:96]
    naive = Searcher(deep_model, x, tmp_path)
    base = naive.outcome(())
    target = Target(output_sqnr_db=base.output_sqnr_db + 1.0)
    result = search_fix(deep_model, x, target, max_float_layers=3, width=3,
                        out=tmp_path / "fixed.h5")
    assert result.reached, result
    k = len(result.keep_float)
    worst = worst_accumulated(base.trace)
    # Keeping the worst-accumulated layers in float needs at least as many float layers (now
    # that a kept layer keeps all of its ops, it can reach the target too).
    naive_needs = next((n for n in range(1, 4) if target.met(naive.outcome(worst[:n]))), 4)
    assert k <= naive_needs, (k, naive_needs, worst[:naive_needs])
    with qdebug.open(tmp_path / "fixed.h5") as tr:  # the trace confirms the numbers
        assert tr.meta["converter"]["keep_float"] == list(result.keep_float)
        assert tr.output_metrics()["sqnr_db"][0] == pytest.approx(result.final.output_sqnr_db)
        assert tr.output_metrics()["sqnr_db"][0] >= target.output_sqnr_db  # type: ignore[operator]
        assert {tr.layers[_layer(tr, n)].float_island for n in result.keep_float} == {True}
    assert result.command.endswith("--keep-float " + ",".join(result.keep_float))


def test_sensitivity_ranks_one_layer_at_a_time(digits_file: Path) -> None:
    base, ranked = one_at_a_time(str(digits_file / "digits.keras"),
                                 str(digits_file / "x.npy"), layers=2)
    assert len(ranked) == 2 and ranked[0].delta_db >= ranked[1].delta_db
    assert ranked[0].delta_db == pytest.approx(ranked[0].output_sqnr_db - base.output_sqnr_db)


def test_sensitivity_on_a_model_without_layers_says_so_and_exits_1(tmp_path: Path) -> None:
    """A subclassed model is traced as ops: no Keras layer to keep in float (the command
    printed a heading over an empty list and exited 0)."""
    sub = models.subclassed_mlp_factory(tmp_path)
    np.save(tmp_path / "x.npy", np.random.default_rng(1).normal(size=(48, 16)).astype(np.float32))
    r = CliRunner().invoke(cli, ["sensitivity", sub, "--data",
                                 str(tmp_path / "x.npy"), "--layers", "2"])
    assert r.exit_code == 1, r.stderr
    assert "no layer could be kept in float alone" in r.stdout
    j = CliRunner().invoke(cli, ["sensitivity", sub, "--data", str(tmp_path / "x.npy"),
                                 "--layers", "2", "--format", "json"])
    assert j.exit_code == 1, j.stderr  # the JSON form gave exit 0 and an empty list
    got = json.loads(j.stdout)
    assert got["layers"] == [] and "no layer could be kept in float alone" in got["reason"]


def test_fix_cli_prints_the_set_and_the_command(digits_file: Path) -> None:
    out = digits_file / "fixed.h5"
    r = CliRunner().invoke(cli, ["fix", str(digits_file / "digits.keras"), "--data",
                                 str(digits_file / "x.npy"), "--target-output-sqnr", "99",
                                 "--max-float-layers", "1", "--out", str(out)])
    assert r.exit_code == 1, r.stderr  # 99 dB is out of reach: budget ends the search
    assert "keep in float:" in r.stdout and "target not reached (max-float-layers)" in r.stdout
    assert "reproduce: qdebug trace" in r.stdout and "--keep-float" in r.stdout
    assert out.is_file()
    r = CliRunner().invoke(cli, ["fix", str(digits_file / "digits.keras"), "--data",
                                 str(digits_file / "x.npy")])
    assert_one_line_error(r.exit_code, r.stderr, "no target", "--target-output-sqnr")


def test_qat_model_traces_fake_quant_against_deployed_int8(tmp_path: Path) -> None:
    import tf_keras

    import digits_cnn
    from qdebug.tracer.tfenv import import_tfmot

    before = os.environ.get("TF_USE_LEGACY_KERAS")
    tfmot = import_tfmot()
    assert os.environ.get("TF_USE_LEGACY_KERAS") == before
    tf_keras.utils.set_random_seed(0)
    L = tf_keras.layers
    x = tf_keras.Input((8, 8, 1), name="image")
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    model = tf_keras.Model(x, L.Dense(10, activation="softmax", name="probs")(h))
    qat = tfmot.quantization.keras.quantize_model(model)
    qat.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    qat.fit(digits_cnn.data(), digits_cnn.labels(), epochs=2, verbose=0)
    path = qdebug.trace(qat, digits_cnn.data()[:32], out=tmp_path / "qat.h5", quiet=True,
                        store_samples=0)
    with qdebug.open(path) as tr:
        assert tr.meta["keras_flavour"] == "tf_keras"
        i = _layer(tr, "quant_conv1")  # fake-quant Keras value vs deployed INT8, per layer
        assert tr.layers[i].measured and tr.layers[i].status == "matched"
        assert tr.layer_metrics()["sqnr_db"][i] > 20  # inf: simulation = deployment there
        om = tr.output_metrics()
        assert 20 < om["sqnr_db"][0] < 80 and om["top1_agreement"][0] > 0.8
        # Local error is against the fake-quant model's own op (f(x̂) fake-quantized), the
        # reference of the accumulated error too: no layer's local error exceeds its
        # accumulated one by more than cancellation explains (a conv fed the exactly simulated
        # input read 29.8 dB local under 63.1 dB accumulated: its output's rounding, which the
        # fake-quant reference has, counted as its own error).
        lm = tr.layer_metrics()
        assert tr.meta["op_local_error"] == "numeric-verify model"
        both = [j for j in range(len(tr.layers)) if tr.layers[j].status == "matched"
                and np.isfinite(lm["local_sqnr_db"][j]) and np.isfinite(lm["sqnr_db"][j])]
        assert both and all(lm["local_sqnr_db"][j] > lm["sqnr_db"][j] - 1.0 for j in both)
        # so the ranking's scores are shares again (they reached 10,793× the output's)
        ranked = rank_layers(tr.layers, lm, tr.layer_pooled_stats(), float(om["sqnr_db"][0]),
                             tr.outputs[0].layer)
        assert ranked and all(c.score < 2 for c in ranked)
    from qdebug.tools.qat import compare_qat_to_float

    rows = {r.float_layer: r for r in compare_qat_to_float(qat, model, digits_cnn.data()[:32])}
    assert rows["conv1"].qat_layer == "quant_conv1" and 10 < rows["conv1"].sqnr_db < 200
    assert set(rows) >= {"conv1", "gap", "probs"}
    report = CliRunner().invoke(cli, ["report", str(path), "--format", "json"])
    assert report.exit_code == 0 and json.loads(report.stdout)["output"]["sqnr_db"] > 20
    # Saved as .h5, the QAT model traces from the command line: tfmot's layers are opened
    # without a factory.
    qat.save(tmp_path / "qat_model.h5")
    np.save(tmp_path / "x.npy", digits_cnn.data()[:16])
    r = CliRunner().invoke(cli, ["trace", str(tmp_path / "qat_model.h5"), "--data",
                                 str(tmp_path / "x.npy"), "--out", str(tmp_path / "cli.h5"), "-q"])
    assert r.exit_code == 0, r.stderr
    with qdebug.open(tmp_path / "cli.h5") as tr:
        assert "quantization-aware" in tr.meta["deployed"]
        assert tr.layers[_layer(tr, "quant_conv1")].status == "matched"


def test_fix_reaches_a_target_that_needs_a_whole_layer_in_float(digits_file: Path) -> None:
    """The target lies between the baseline and what keeping the best layer *whole* gives (all
    of its ops, e.g. a Dense's FULLY_CONNECTED and SOFTMAX): the search reaches it with one
    float layer, and the trace it writes confirms the number."""
    model, x = str(digits_file / "digits.keras"), str(digits_file / "x.npy")
    base, ranked = one_at_a_time(model, x, layers=3)
    best = ranked[0]
    assert best.delta_db > 1.0, ranked  # keeping one layer whole must buy something real
    target = Target(output_sqnr_db=base.output_sqnr_db + best.delta_db / 2)
    result = search_fix(model, x, target, max_float_layers=1, width=3,
                        out=digits_file / "reach.h5")
    assert result.reached and len(result.keep_float) == 1, result
    with qdebug.open(digits_file / "reach.h5") as tr:
        assert tr.output_metrics()["sqnr_db"][0] >= target.output_sqnr_db  # type: ignore[operator]
        layer = tr.layers[_layer(tr, result.keep_float[0])]
        assert {tr.ops[i].dtype for i in layer.ops if tr.ops[i].op_type not in
                ("QUANTIZE", "DEQUANTIZE")} == {"float32"}
