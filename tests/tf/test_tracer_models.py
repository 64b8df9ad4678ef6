"""The tracer on real models of both Keras flavours: every layer accounted for, and its numbers
equal to an independent computation (plain LiteRT + plain Keras, written out here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import models
import qdebug
from qdebug.store.reader import Trace

pytestmark = [pytest.mark.tf, pytest.mark.slow]


def _samples(model: Any, n: int) -> list[np.ndarray]:
    return models.random_inputs(model, n, seed=7)


def _trace(model: Any, xs: list[np.ndarray], out: Path, source: Any = None) -> Trace:
    data: Any = xs[0] if len(xs) == 1 else [list(s) for s in zip(*xs, strict=True)]
    path = qdebug.trace(
        source if source is not None else model, data, out=out, quiet=True, batch_size=8
    )
    return qdebug.open(str(path))


def _independent(
    tr: Trace, model: Any, xs: list[np.ndarray], names: list[str], flavour: str
) -> tuple[dict[str, float], dict[str, float]]:
    """SQNR per layer, and top-1 agreement per classifier layer, from scratch."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if flavour == "keras3":
        import keras as K
    else:
        import tf_keras as K
    probe = K.Model(model.inputs, [model.get_layer(n).output for n in names])
    fvals = probe.predict(xs if len(xs) > 1 else xs[0], verbose=0, batch_size=4)
    fvals = fvals if isinstance(fvals, list) else [fvals]
    interp = Interpreter(
        model_content=tr.tflite_bytes(),
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    by_name = {d["name"]: d for d in interp.get_tensor_details()}
    rec = {r.name: r for r in tr.layers}
    num = {n: 0.0 for n in names}
    den = {n: 0.0 for n in names}
    agree: dict[str, list[bool]] = {n: [] for n in names}
    for i in range(len(xs[0])):
        for d in interp.get_input_details():
            k = (
                0
                if len(xs) == 1
                else next(
                    j
                    for j, n in enumerate(tr.meta["input_names"])
                    if d["name"] in (n, f"serving_default_{n}:0")  # frozen graph, SavedModel
                )
            )
            interp.set_tensor(d["index"], xs[k][i : i + 1])
        interp.invoke()
        for n, fv in zip(names, fvals, strict=True):
            det = by_name[rec[n].tensor_name]
            raw = interp.get_tensor(det["index"]).astype(np.float64)
            scale, zp = det["quantization"]
            q = (raw - zp) * scale if scale else raw
            f = fv[i].astype(np.float64)
            num[n] += float((f**2).sum())
            den[n] += float(((f - q.reshape(f.shape)) ** 2).sum())
            agree[n].append(bool(np.argmax(f) == np.argmax(q)))
    sqnr = {n: float(10 * np.log10(num[n] / den[n])) for n in names}
    return sqnr, {n: float(np.mean(agree[n])) for n in names}


CASES: dict[str, Callable[[], Any]] = {
    "nested": models.nested,
    "two_in_two_out": models.two_in_two_out,
    "attention_block": models.attention_block,
    "mobilenet_v2_keras3": models.mobilenet_v2_keras3,
}


@pytest.fixture(scope="module", params=[*CASES, "mobilenet_v2_tf_keras_h5"])
def traced(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    n = 10 if name.startswith("mobilenet") else 24
    if name == "mobilenet_v2_tf_keras_h5":
        model = models.mobilenet_v2_tf_keras()
        h5 = tmp / "mnv2.h5"
        model.save(h5)
        xs = _samples(model, n)
        return name, model, xs, _trace(model, xs, tmp / "t.h5", source=str(h5)), "tf_keras"
    model = CASES[name]()
    xs = _samples(model, n)
    return name, model, xs, _trace(model, xs, tmp / "t.h5"), "keras3"


def test_every_layer_is_matched_or_accounted_for(traced) -> None:  # type: ignore[no-untyped-def]
    name, model, _, tr, flavour = traced
    assert tr.meta["keras_flavour"] == flavour
    statuses = {r.name: r.status for r in tr.layers}
    bad = {n: s for n, s in statuses.items() if s not in ("matched", "input", "fused", "folded")}
    assert not bad, f"{name}: not verified: {bad}"
    for r in tr.layers:
        if r.status in ("fused", "folded"):
            assert statuses[r.related] in ("matched", "input"), (r.name, r.related)
        if r.status == "matched":
            assert r.match_rel_error < 1e-3 and r.tensor_name and r.op_type
    top = [layer.name for layer in model.layers]
    assert [r.name for r in tr.layers if "/" not in r.name] == top  # every layer, in order
    assert int(tr.meta["instrumentation_mismatched_samples"]) == 0


def test_fusions_are_named(traced) -> None:  # type: ignore[no-untyped-def]
    name, _, _, tr, _ = traced
    rec = {r.name: r for r in tr.layers}
    if name.startswith("mobilenet"):
        # Conv + BN + ReLU6 become one CONV_2D: conv and BN have no tensor of their own.
        assert rec["Conv1"].status == "fused" and rec["Conv1"].related == "Conv1_relu"
        assert rec["bn_Conv1"].related == "Conv1_relu"
        assert rec["Conv1_relu"].op_type == "CONV_2D"
        assert rec["block_1_pad"].status == "fused"  # ZeroPadding2D goes into the next conv
        assert sum(r.status == "matched" for r in tr.layers) >= 60
    if name == "nested":
        assert rec["block/inner_conv"].related == "block/inner_relu"
        assert rec["block"].status == "folded" and rec["block"].related == "block/inner_relu"
    if name == "attention_block":
        assert rec["gelu"].op_type == "GELU" and rec["mha"].status == "matched"
        assert rec["ln1"].status == "matched"


def test_sqnr_matches_an_independent_computation(traced) -> None:  # type: ignore[no-untyped-def]
    name, model, xs, tr, flavour = traced
    names = [r.name for r in tr.layers if r.status == "matched" and "/" not in r.name]
    if name.startswith("mobilenet"):
        names = [*names[:: max(1, len(names) // 12)], names[-1]]
    names += [o.layer for o in tr.outputs if o.layer not in names]
    expected, top1 = _independent(tr, model, xs, names, flavour)
    got = tr.layer_metrics()["sqnr_db"]
    idx = {r.name: i for i, r in enumerate(tr.layers)}
    for n in names:
        assert got[idx[n]] == pytest.approx(expected[n], abs=0.1), n
    om = tr.output_metrics()
    for j, o in enumerate(tr.outputs):
        assert om["sqnr_db"][j] == pytest.approx(expected[o.layer], abs=0.1)
        if o.classifier:
            assert om["top1_agreement"][j] == top1[o.layer]


def _int8_outputs(tr: Trace, x: np.ndarray) -> dict[tuple[int, ...], np.ndarray]:
    """The deployed model's dequantized outputs on every sample, keyed by their shape."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_content=tr.tflite_bytes(),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    index = interp.get_input_details()[0]["index"]
    per: dict[tuple[int, ...], list[np.ndarray]] = {}
    for i in range(len(x)):
        interp.set_tensor(index, x[i : i + 1])
        interp.invoke()
        for d in interp.get_output_details():
            v = interp.get_tensor(d["index"]).astype(np.float64)
            scale, zp = d["quantization"]
            per.setdefault(tuple(d["shape"][1:]), []).append((v - zp) * scale if scale else v)
    return {k: np.concatenate(v) for k, v in per.items()}


@pytest.mark.parametrize("flavour", ["keras3", "tf_keras"])
def test_a_layer_computing_several_outputs_gives_each_its_own(
    flavour: str, tmp_path: Path
) -> None:
    """A functional model wrapping a subclassed model with three outputs: one layer computes
    them all. The trace reads (its reader bounded the outputs by the layer count, 2, and
    called a fresh trace damaged), and each output is measured on its own tensor (all three
    were the first one's)."""
    model = models.wrapped_three_outputs(flavour)
    x = np.random.default_rng(8).normal(size=(20, 6)).astype(np.float32)
    tr = _trace(model, [x], tmp_path / "t.h5")
    assert [o.name for o in tr.outputs] == ["heads", "heads:1", "heads:2"]
    assert {o.layer for o in tr.outputs} == {"heads"}
    assert len({o.tensor_name for o in tr.outputs}) == 3
    keras_outs = [np.asarray(v, np.float64) for v in model(x, training=False)]
    int8 = _int8_outputs(tr, x)
    sqnr = tr.output_metrics()["sqnr_db"]
    for j, f in enumerate(keras_outs):
        q = int8[f.shape[1:]]
        expected = 10 * np.log10((f**2).sum() / ((f - q) ** 2).sum())
        assert sqnr[j] == pytest.approx(expected, abs=0.1), tr.outputs[j].name


def test_a_savedmodel_with_a_fixed_batch_is_called_at_its_batch(tmp_path: Path) -> None:
    """A tf_keras SavedModel whose signature fixes batch 1, with a custom block Keras revives
    from the saved functions: every Keras call (the probe on the first samples, the segment
    re-run on batches of 8) is made at batch 1 (they crashed: 'Could not find matching
    concrete function')."""
    folder = models.fixed_batch_savedmodel(tmp_path / "saved")
    x = np.random.default_rng(9).normal(size=(20, 16, 8)).astype(np.float32)
    path = qdebug.trace(str(folder), x, out=tmp_path / "t.h5", quiet=True, batch_size=8)
    with qdebug.open(str(path)) as tr:
        status = {r.name: r.status for r in tr.layers}
        assert status["block"] == "matched" and tr.n_samples == 20
        assert tr.meta["segments"] > 0
        i = [r.name for r in tr.layers].index("block")
        local = tr.layer_metrics()["local_sqnr_db"][i]
        assert np.isfinite(local) and local > 20  # the block's own error, from the re-run


def test_a_folded_reshape_feeds_the_next_layer_in_its_own_shape(tmp_path: Path) -> None:
    """A squeeze folded into the input carries the input's tensor, (N, 16, 1); the custom
    layer after it, revived from a SavedModel, takes (N, 16) only: its float re-run is fed the
    squeeze's own shape (it crashed: 'Could not find matching concrete function', as on
    basic-pitch's model)."""
    folder = models.folded_squeeze_savedmodel(tmp_path / "saved")
    x = np.random.default_rng(11).normal(size=(12, 16, 1)).astype(np.float32)
    path = qdebug.trace(str(folder), x, out=tmp_path / "t.h5", quiet=True, batch_size=8)
    with qdebug.open(str(path)) as tr:
        status = {r.name: r.status for r in tr.layers}
        assert status["squeeze"] == "folded" and status["frames"] == "matched"
        assert tr.meta["segments"] > 0
        i = [r.name for r in tr.layers].index("frames")
        assert np.isfinite(tr.layer_metrics()["local_sqnr_db"][i])
