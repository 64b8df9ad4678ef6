"""The converter's calibration on two threads (qdebug.tracer.calibration, issue 22) writes the
very flatbuffer TensorFlow's calibrator writes: compared bit for bit on the model the converter
hands the calibrator, for models of the shapes that make it differ (MobileNetV2's in-place
residual ADDs, a subclassed VGG-style net whose side outputs are all negative, two inputs, an
unrolled LSTM's dynamic tensors), and through a whole conversion. Where it cannot promise that,
the calibrator does the work, and its errors are the user's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench_modules import bench_module
from qdebug.tracer import calibration
from qdebug.tracer.tfenv import import_tf

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _kinds() -> Any:
    return bench_module("kinds", "bench_kinds")


def _mobilenet() -> tuple[Any, list[np.ndarray]]:
    import keras

    keras.utils.set_random_seed(3)
    model = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(32, 32, 3),
                                           classes=5)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # BatchNorm statistics as a trained net has them
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.3, mean.shape), rng.uniform(0.5, 2, var.shape)])
    return model, [rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32) for _ in range(24)]


def _model(kind: str) -> tuple[Any, list[list[np.ndarray]]]:
    """A small model of ``kind`` and its calibration samples as the converter takes them (one
    list of arrays, each with a batch of one, per sample)."""
    k = _kinds()
    if kind == "mobilenetv2":
        model, images = _mobilenet()
        return model, [[x] for x in images]
    if kind == "vgg_edges":
        x = k.images(24, 5, (48, 48, 3))
        return k.vgg_edges(shape=(48, 48, 3), width=8), [[x[i:i + 1]] for i in range(24)]
    if kind == "char_conv1d":
        chars, feats = k.chars(24, 5, words=6, n_chars=5)
        return (k.char_conv1d(words=6, chars=5),
                [[chars[i:i + 1], feats[i:i + 1]] for i in range(24)])
    ids = k.token_ids(24, 5, seq_len=8)
    return k.lstm_attention(seq_len=8, units=8), [[ids[i:i + 1]] for i in range(24)]


def _handed_to_calibrator(model: Any, samples: list[list[np.ndarray]]) -> bytes:
    """The flatbuffer the converter hands its calibrator for ``model`` (qdebug's converter
    set-up), caught on its way in."""
    from tensorflow.lite.python.optimize import calibrator

    from qdebug.tracer import convert

    tf = import_tf()
    caught: list[bytes] = []
    original = calibrator.Calibrator.calibrate

    def catch(self: Any, gen: Callable[[], Any]) -> Any:
        caught.append(bytes(self._model_content))
        return original(self, gen)

    conv = convert._frozen_converter(model)
    assert conv is not None
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: iter(samples)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv._experimental_calibrate_only = True
    calibrator.Calibrator.calibrate = catch
    try:
        conv.convert()
    finally:
        calibrator.Calibrator.calibrate = original
    assert len(caught) == 1
    return caught[0]


def _calibrators(content: bytes) -> Callable[[Callable[[], Any]], bytes]:
    """TensorFlow's calibrator on ``content`` (a fresh one per call)."""
    from tensorflow.lite.python.optimize import calibrator

    return lambda gen: bytes(calibrator.Calibrator(content).calibrate(gen))


def _ranges(content: bytes) -> dict[int, tuple[float, float]]:
    from tensorflow.lite.python import schema_py_generated as schema

    graph = schema.Model.GetRootAsModel(content, 0).Subgraphs(0)
    out = {}
    for t in range(graph.TensorsLength()):
        q = graph.Tensors(t).Quantization()
        if q is not None and q.MinLength():
            out[t] = (q.Min(0), q.Max(0))
    return out


@pytest.mark.parametrize("kind", ["mobilenetv2", "vgg_edges", "char_conv1d", "lstm_attention"])
def test_two_threads_write_the_calibrators_flatbuffer_bit_for_bit(kind: str) -> None:
    model, samples = _model(kind)
    content = _handed_to_calibrator(model, samples)
    expected = _calibrators(content)(lambda: iter(samples))
    ours = calibration.calibrate_fast(content, lambda: iter(samples), _calibrators(content),
                                      always=True)
    assert ours == expected
    ranges = _ranges(ours)
    assert len(ranges) > 10
    # Over all 24 samples, not the two the calibrator checked: wider on some tensor.
    two = _ranges(_calibrators(content)(lambda: iter(samples[:2])))
    assert any(ranges[t] != two[t] for t in ranges)


def test_an_in_place_add_is_logged_with_its_output_and_a_wrong_guess_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MobileNetV2's residual ADDs write over an input; the calibrator logs that input again
    after the op. Without that rule the two-sample check sees the difference and gives up."""
    model, samples = _model("mobilenetv2")
    content = _handed_to_calibrator(model, samples)
    shared = calibration._in_place(content, samples[0])
    assert shared, "MobileNetV2 has in-place residual ADDs"
    monkeypatch.setattr(calibration, "_in_place", lambda content, first: [])
    with pytest.raises(calibration._Fallback, match="differs from the calibrator's"):
        calibration.calibrate_fast(content, lambda: iter(samples), _calibrators(content),
                                   always=True)


def test_a_whole_conversion_gives_the_converters_int8_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from qdebug.tracer import convert

    model, samples = _model("vgg_edges")
    options = convert.ConversionOptions()
    names = [layer.name for layer in model.layers]
    models = {}
    for route in ("tensorflow", "threads"):
        monkeypatch.setenv(calibration.ENV, route)
        conversion = convert.convert_int8_and_twin(model, lambda: iter(samples), options, names)
        models[route] = conversion
        assert calibration.last_route.startswith(
            "two threads" if route == "threads" else "the calibrator")
    assert models["threads"].int8 == models["tensorflow"].int8
    assert models["threads"].twin == models["tensorflow"].twin
    assert models["threads"].calibration == "two threads"
    assert models["tensorflow"].calibration == "the calibrator (asked for)"


def test_the_trace_says_how_the_calibration_was_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qdebug

    model, samples = _model("vgg_edges")
    data = np.concatenate([s[0] for s in samples])
    routes = {}
    for choice in ("threads", "tensorflow"):
        monkeypatch.setenv(calibration.ENV, choice)
        path = qdebug.trace(model, data, out=tmp_path / f"{choice}.h5", calib=data,
                            calib_samples=24, quiet=True, batch_size=8)
        with qdebug.open(str(path)) as tr:
            routes[choice] = tr.meta.converter.calibration
    assert routes == {"threads": "two threads", "tensorflow": "the calibrator (asked for)"}


def test_left_to_the_calibrator_where_one_run_cannot_show_what_it_logs() -> None:
    import keras

    from qdebug.tracer import convert

    inputs = keras.Input((6, 3), batch_size=1)
    rolled = keras.Model(inputs, keras.layers.LSTM(4)(inputs))  # one fused LSTM op
    with pytest.raises(calibration._Fallback):
        calibration._check_graph(_fused(convert.convert_float(rolled, ["lstm"])))
    # Samples that change shape, and samples given by signature.
    model, images = _model("mobilenetv2")
    pre = _handed_to_calibrator(model, images)
    bad = [*images[:3], [np.zeros((1, 16, 32, 3), np.float32)]]
    with pytest.raises(calibration._Fallback, match="changes shape"):
        calibration.calibrate_fast(pre, lambda: iter(bad), _calibrators(pre), always=True)
    with pytest.raises(calibration._Fallback, match="by signature"):
        calibration.calibrate_fast(pre, lambda: iter([{"x": images[0][0]}]), _calibrators(pre))


def _fused(content: bytes) -> bytes:
    """``content`` when it holds an op with intermediate tensors or variable tensors (the fused
    LSTM does on this TensorFlow); skips the test otherwise."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = schema.Model.GetRootAsModel(content, 0).Subgraphs(0)
    fused = any(graph.Operators(i).IntermediatesLength() for i in range(graph.OperatorsLength()))
    variable = any(graph.Tensors(t).IsVariable() for t in range(graph.TensorsLength()))
    several = schema.Model.GetRootAsModel(content, 0).SubgraphsLength() > 1
    if not (fused or variable or several):
        pytest.skip("this TensorFlow converts the LSTM without intermediates or state")
    return content


def test_a_nan_sample_is_left_to_the_calibrator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a NaN reaches a tensor, std::minmax_element and numpy disagree on what its range
    is; the calibrator's answer (or error, in TensorFlow versions that raise) is the one."""
    from tensorflow.lite.python.optimize import calibrator

    model, samples = _model("vgg_edges")
    samples = [list(s) for s in samples]
    samples[7] = [np.full_like(samples[7][0], np.nan)]
    content = _handed_to_calibrator(model, samples[:2])
    results = []
    for route in ("tensorflow", "threads"):
        monkeypatch.setenv(calibration.ENV, route)
        with calibration.faster_calibration():
            results.append(bytes(calibrator.Calibrator(content).calibrate(lambda: iter(samples))))
    assert "NaN" in calibration.last_route
    assert results[0] == results[1]


def test_the_faster_route_is_only_taken_where_it_is_faster() -> None:
    """An unrolled LSTM's calibration is a thousand tiny tensors: reading them from Python
    costs more than the calibrator's own logging, so (unforced) it goes to the calibrator."""
    model, samples = _model("lstm_attention")
    content = _handed_to_calibrator(model, samples)
    with pytest.raises(calibration._Fallback, match="as fast"):
        calibration.calibrate_fast(content, lambda: iter(samples), _calibrators(content))
