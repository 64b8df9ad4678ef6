"""The op table's numbers against computations written out here, on models of several shapes.

- accumulated SQNR of every op and of every output: plain LiteRT on the trace's INT8 model and on
  a float model converted here (no optimizations), joined by tensor name, pooled here;
- local error: rank agreement with TFLite's own ``QuantizationDebugger`` on the same data;
- the decomposition q − f = (q − f̂) + (f̂ − f) on ops with several inputs, with f̂ computed here
  from the INT8 model's own dequantized inputs;
- no op or layer whose local error exceeds its whole signal where the accumulated error is
  healthy.
- ops reading a model input get f̂ on the quantized input (the numeric-verify model's float copy
  reads the input itself, so the tracer feeds it dequantize(quantize(x))).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import models
import qdebug
from qdebug.store.reader import Trace

pytestmark = [pytest.mark.tf, pytest.mark.slow]

#: Measured figures per model, printed at the end of the module (``pytest -s``).
FIGURES: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_figures() -> Any:
    yield
    for name, fig in FIGURES.items():
        print(f"\n{name}: {fig}")


# -- models ---------------------------------------------------------------------------------------


def _residual_op_nodes() -> Any:
    """Two branches that each carry much more error than one rounding step (a coarse
    intermediate scale: one channel of large values that the next 1x1 conv ignores), joined by
    ADD, a Keras 3 op node ``a * b`` (MUL of two tensors), a Concatenate and ``x + 3``."""
    import keras

    keras.utils.set_random_seed(5)
    L = keras.layers
    x = keras.Input((16, 16, 3), name="img")

    def branch(name: str) -> Any:
        h = L.Conv2D(8, 3, padding="same", activation="relu", name=f"{name}_wide")(x)
        h = L.Conv2D(4, 1, name=f"{name}_narrow")(h)
        return h

    a, b = branch("a"), branch("b")
    s = L.Add(name="res_add")([a, b])
    m = a * b
    c = L.Concatenate(name="concat")([s, m])
    c = L.MaxPooling2D(name="pool")(c + 3.0)
    h = L.Conv2D(8, 3, activation="relu", name="head_conv")(c)
    h = L.GlobalAveragePooling2D(name="gap")(h)
    model = keras.Model(x, L.Dense(5, name="logits")(h), name="residual_op_nodes")
    for name in ("a", "b"):
        wide, narrow = model.get_layer(f"{name}_wide"), model.get_layer(f"{name}_narrow")
        w, bias = wide.get_weights()
        bias[0] = 40.0  # channel 0: ~40, so the tensor's int8 step is ~0.16
        wide.set_weights([w, bias])
        w, bias = narrow.get_weights()
        w[:, :, 0, :] = 0.0  # ... and the 1x1 conv ignores it: its output has a fine step
        narrow.set_weights([w, bias])
    return model


def _separable_concat_tf_keras() -> Any:
    """tf_keras: SeparableConv2D + BatchNormalization (one op hides inside the layer), a
    depthwise branch, Concatenate + BatchNormalization, a residual Add."""
    import tf_keras

    tf_keras.utils.set_random_seed(7)
    L = tf_keras.layers
    x = tf_keras.Input((24, 24, 3), name="pic")
    h = L.SeparableConv2D(12, 3, padding="same", name="sep")(x)
    h = L.BatchNormalization(name="sep_bn")(h)
    h = L.ReLU(name="sep_relu")(h)
    a = L.Conv2D(8, 1, activation="relu", name="pw")(h)
    b = L.DepthwiseConv2D(3, padding="same", name="dw")(h)
    b = L.BatchNormalization(name="dw_bn")(b)
    c = L.Concatenate(name="cat")([a, b])
    c = L.BatchNormalization(name="cat_bn")(c)
    c = L.Conv2D(20, 3, strides=2, padding="same", name="down")(c)
    d = L.Conv2D(20, 3, padding="same", activation="relu", name="res_conv")(c)
    h = L.Add(name="res_add")([c, d])
    h = L.GlobalAveragePooling2D(name="gap")(h)
    m = tf_keras.Model(x, L.Dense(7, activation="softmax", name="probs")(h), name="sepcat")
    models._randomize_bn(m, seed=7)
    return m


def _tf_module_folder(folder: Path) -> Path:
    """A plain ``tf.Module`` (no Keras at all) saved with a serving signature."""
    import tensorflow as tf

    rng = np.random.default_rng(11)

    def var(*shape: int, s: float = 0.3) -> Any:
        return tf.Variable(rng.normal(0, s, shape).astype(np.float32))

    class Net(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="o_net")
            self.w1, self.b1 = var(3, 3, 3, 8), var(8, s=0.1)
            self.w2, self.b2 = var(3, 3, 8, 8), var(8, s=0.1)
            self.w3, self.b3 = var(8, 6), var(6, s=0.1)

        @tf.function(input_signature=[tf.TensorSpec([None, 12, 12, 3], tf.float32, name="x")])
        def __call__(self, x: Any) -> Any:
            with tf.name_scope("conv1"):
                h = tf.nn.relu(tf.nn.conv2d(x, self.w1, 1, "SAME") + self.b1)
            with tf.name_scope("conv2"):
                r = tf.nn.conv2d(h, self.w2, 1, "SAME") + self.b2
            with tf.name_scope("res"):
                h = tf.nn.relu(h + r)
            with tf.name_scope("head"):
                return tf.matmul(tf.reduce_mean(h, axis=[1, 2]), self.w3) + self.b3

    net = Net()
    tf.saved_model.save(net, str(folder), signatures=net.__call__.get_concrete_function())
    return folder


@dataclass
class Case:
    """A model, how qdebug is given it, and how the float model is converted here."""

    source: Any
    """What ``qdebug.trace`` is given (a live model or a SavedModel folder)."""
    xs: np.ndarray
    converter: Callable[[], Any]
    """A fresh ``TFLiteConverter`` of the float model."""


def _keras_case(model: Any, xs: np.ndarray) -> Case:
    import tensorflow as tf

    return Case(model, xs, lambda: tf.lite.TFLiteConverter.from_keras_model(model))


def _build(name: str, tmp: Path, request: pytest.FixtureRequest) -> Case:
    import tensorflow as tf

    if name == "mobilenet_v2_keras3":
        m = models.mobilenet_v2_keras3()
        return _keras_case(m, models.random_inputs(m, 8, seed=3)[0])
    if name == "separable_concat_tf_keras":
        m = _separable_concat_tf_keras()
        return _keras_case(m, models.random_inputs(m, 16, seed=8)[0])
    if name == "residual_op_nodes":
        m = _residual_op_nodes()
        return _keras_case(m, models.random_inputs(m, 24, seed=4)[0])
    if name == "digits_cnn":
        m = request.getfixturevalue("digits_model")
        return _keras_case(m, request.getfixturevalue("digits_data")[:32])
    if name == "attention_block":
        m = models.attention_block()
        return _keras_case(m, models.random_inputs(m, 24, seed=6)[0])
    assert name == "tf_module_saved_model"
    folder = _tf_module_folder(tmp / "o_net")
    xs = np.random.default_rng(12).normal(0, 1, (24, 12, 12, 3)).astype(np.float32)
    return Case(str(folder), xs, lambda: tf.lite.TFLiteConverter.from_saved_model(str(folder)))


NAMES = [
    "mobilenet_v2_keras3",
    "separable_concat_tf_keras",
    "residual_op_nodes",
    "digits_cnn",
    "attention_block",
    "tf_module_saved_model",
]


# -- the independent computation ------------------------------------------------------------------


def _interpreter(content: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_content=content,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    return interp


def _value(interp: Any, det: dict[str, Any]) -> np.ndarray:
    """A tensor dequantized with the interpreter's own quantization parameters."""
    raw = interp.get_tensor(det["index"]).astype(np.float64)
    scale, zero_point = det["quantization"]
    return (raw - zero_point) * scale if scale else raw


@dataclass
class Independent:
    """Pooled sums per joined op row and per output, computed here."""

    float_tensor: dict[int, int] = field(default_factory=dict)
    """Op row → index of the float model's tensor joined to it."""
    sum_f2: dict[int, float] = field(default_factory=dict)
    sum_e2: dict[int, float] = field(default_factory=dict)
    out_f2: dict[str, float] = field(default_factory=dict)
    out_e2: dict[str, float] = field(default_factory=dict)
    local_f2: dict[int, float] = field(default_factory=dict)
    """Op row → Σf̂² with f̂ the float op on the INT8 model's dequantized inputs (multi-input
    ADD, MUL, CONCATENATION and BATCH_MATMUL, with their fused activation)."""
    local_e2: dict[int, float] = field(default_factory=dict)
    prop_e2: dict[int, float] = field(default_factory=dict)
    input_fed: set[int] = field(default_factory=set)
    """Op rows whose op reads a model input's QUANTIZE output (the input, quantized)."""

    def sqnr(self, row: int) -> float:
        return _db(self.sum_f2[row], self.sum_e2[row])


def _db(signal: float, noise: float) -> float:
    return float("inf") if noise == 0 else float(10 * np.log10(signal / noise))


def _producers(interp: Any) -> dict[int, dict[str, Any]]:
    return {int(t): op for op in interp._get_ops_details() for t in op["outputs"]}


def _canonical(interp: Any) -> Callable[[str], str]:
    """Tensor names comparable across conversion routes. qdebug converts a Keras model through
    its frozen inference function, the float model here goes through ``from_keras_model``'s
    SavedModel: the same ops, but graph inputs and outputs are named by the route
    (``image`` / ``serving_default_image:0``), and where the frozen graph names every location
    fused into an op, the SavedModel leaves some empty (``conv/BiasAdd;;conv/Pad``). Graph inputs
    and outputs are compared by position, other tensors by the first location of their name
    (a name shared by two tensors joins neither)."""
    edge = {d["name"]: f"<input {k}>" for k, d in enumerate(interp.get_input_details())}
    edge |= {d["name"]: f"<output {k}>" for k, d in enumerate(interp.get_output_details())}
    return lambda name: edge.get(name, name.split(";")[0])


def _float_name_of(qi: Any) -> dict[int, str]:
    """INT8 tensor → the float model's name for the same value, where it is not its own name:
    a graph input's QUANTIZE carries the input, the tensor a DEQUANTIZE turns into a graph output
    carries that output."""
    names = {d["index"]: d["name"] for d in qi.get_tensor_details()}
    inputs = {d["index"] for d in qi.get_input_details()}
    outputs = {d["index"] for d in qi.get_output_details()}
    out: dict[int, str] = {}
    for op in qi._get_ops_details():
        i, o = int(op["inputs"][0]), int(op["outputs"][0])
        if op["op_name"] == "QUANTIZE" and i in inputs:
            out[o] = names[i]
        if op["op_name"] == "DEQUANTIZE" and o in outputs:
            out[i] = names[o]
    return out


#: Fused activations by the schema's ActivationFunctionType (NONE, RELU, RELU_N1_TO_1, RELU6).
_ACTIVATIONS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    0: lambda v: v,
    1: lambda v: np.maximum(v, 0),
    2: lambda v: np.clip(v, -1, 1),
    3: lambda v: np.clip(v, 0, 6),
}


def _op_options(content: bytes) -> list[Any]:
    """Per op of the main subgraph, its builtin options (the flatbuffer's own)."""
    from ai_edge_litert import schema_py_generated as schema

    return [
        op.builtinOptions
        for op in schema.ModelT.InitFromPackedBuf(content, 0).subgraphs[0].operators
    ]


def _batch_matmul(a: np.ndarray, b: np.ndarray, options: Any) -> np.ndarray:
    if options is not None and options.adjX:
        a = np.swapaxes(a, -1, -2)
    if options is not None and options.adjY:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


_TWO_INPUT = {"ADD": np.add, "MUL": np.multiply}


def independent(tr: Trace, float_bytes: bytes, xs: np.ndarray) -> Independent:
    """Run the INT8 model (the trace's own ``.tflite``) and the float model converted here, one
    sample at a time, and pool Σf², Σ(f − q)² per op row joined by tensor name."""
    qi, fi = _interpreter(tr.tflite_bytes()), _interpreter(float_bytes)
    assert len(qi.get_input_details()) == len(fi.get_input_details()) == 1
    q_det = qi.get_tensor_details()
    f_det = fi.get_tensor_details()
    f_produced = {i for i in _producers(fi)} | {d["index"] for d in fi.get_input_details()}
    f_canon, q_canon = _canonical(fi), _canonical(qi)
    f_names: dict[str, list[int]] = {}
    for i in f_produced:
        f_names.setdefault(f_canon(f_det[i]["name"]), []).append(i)
    renamed = _float_name_of(qi)
    graph_in = {d["index"] for d in qi.get_input_details()}
    quantized_inputs = {
        int(op["outputs"][0])
        for op in qi._get_ops_details()
        if op["op_name"] == "QUANTIZE" and int(op["inputs"][0]) in graph_in
    }
    res = Independent()
    for row, r in enumerate(tr.ops):
        if r.status != "measured":
            continue
        assert q_det[r.tensor_index]["name"] == r.tensor_name, (row, r.tensor_name)
        hits = f_names.get(q_canon(renamed.get(r.tensor_index, r.tensor_name)), [])
        if len(hits) != 1:
            continue
        f_size = int(np.prod(f_det[hits[0]]["shape"][1:]))
        if f_size != int(np.prod(q_det[r.tensor_index]["shape"][1:])):
            continue
        res.float_tensor[row] = hits[0]
        res.sum_f2[row] = res.sum_e2[row] = 0.0
    # f̂ of multi-input ADD / MUL / CONCATENATION / BATCH_MATMUL from the INT8 model's own tensors
    q_prod = _producers(qi)
    options = _op_options(tr.tflite_bytes())
    multi: dict[int, tuple[str, list[int], int, int]] = {}  # kind, inputs, axis/op, activation
    for row, r in enumerate(tr.ops):
        op = q_prod.get(r.tensor_index)
        if (
            op is not None
            and r.status == "measured"
            and {int(i) for i in op["inputs"]} & quantized_inputs
        ):
            res.input_fed.add(row)
        if row not in res.float_tensor or op is None or not r.has_local:
            continue
        ins = [int(i) for i in op["inputs"] if int(i) in q_prod or int(i) in renamed]
        kind = op["op_name"]
        opts = options[int(op["index"])]
        act = int(getattr(opts, "fusedActivationFunction", 0) or 0)
        if len(ins) < 2 or act not in _ACTIVATIONS:
            continue
        if kind == "BATCH_MATMUL" and len(ins) == 2 == len(op["inputs"]):
            multi[row] = (kind, ins, int(op["index"]), act)
        elif kind in _TWO_INPUT and len(ins) == 2 and len(op["inputs"]) == 2:
            multi[row] = (kind, ins, 0, act)
        elif kind == "CONCATENATION" and len(ins) == len(op["inputs"]):
            shape = q_det[r.tensor_index]["shape"]
            multi[row] = (kind, ins, len(shape) - 1, act)
    for row in multi:
        res.local_f2[row] = res.local_e2[row] = res.prop_e2[row] = 0.0
    out_pairs = []
    f_out = {f_canon(d["name"]): d for d in fi.get_output_details()}
    for d in qi.get_output_details():
        out_pairs.append((d, f_out[q_canon(d["name"])]))
        res.out_f2[d["name"]] = res.out_e2[d["name"]] = 0.0
    qin, fin = qi.get_input_details()[0], fi.get_input_details()[0]
    for x in xs:
        qi.set_tensor(qin["index"], x[None].astype(qin["dtype"]))
        fi.set_tensor(fin["index"], x[None].astype(fin["dtype"]))
        qi.invoke()
        fi.invoke()
        for row, ft in res.float_tensor.items():
            f = fi.get_tensor(ft).astype(np.float64).ravel()
            q = _value(qi, q_det[tr.ops[row].tensor_index]).ravel()
            res.sum_f2[row] += float((f * f).sum())
            res.sum_e2[row] += float(((f - q) ** 2).sum())
        for row, (kind, ins, extra, act) in multi.items():
            xq = [_value(qi, q_det[i]).astype(np.float32) for i in ins]
            if kind == "CONCATENATION":
                f_hat = np.concatenate(xq, axis=extra)
            elif kind == "BATCH_MATMUL":
                f_hat = _batch_matmul(xq[0], xq[1], options[extra])
            else:
                f_hat = _TWO_INPUT[kind](*xq)
            f_hat = _ACTIVATIONS[act](f_hat).astype(np.float64).ravel()
            q = _value(qi, q_det[tr.ops[row].tensor_index]).ravel()
            f = fi.get_tensor(res.float_tensor[row]).astype(np.float64).ravel()
            res.local_f2[row] += float((f_hat**2).sum())
            res.local_e2[row] += float(((q - f_hat) ** 2).sum())
            res.prop_e2[row] += float(((f_hat - f) ** 2).sum())
        for qd, fd in out_pairs:
            f = fi.get_tensor(fd["index"]).astype(np.float64).ravel()
            q = _value(qi, qd).ravel()
            res.out_f2[qd["name"]] += float((f * f).sum())
            res.out_e2[qd["name"]] += float(((f - q) ** 2).sum())
    return res


# -- traced once per model ------------------------------------------------------------------------


@dataclass
class Traced:
    name: str
    case: Case
    tr: Trace
    path: Path
    float_bytes: bytes
    ind: Independent


@pytest.fixture(scope="module", params=NAMES)
def traced(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Traced]:
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    t0 = time.perf_counter()
    case = _build(name, tmp, request)
    t1 = time.perf_counter()
    path = Path(qdebug.trace(case.source, case.xs, out=tmp / "t.h5", quiet=True, batch_size=8))
    t2 = time.perf_counter()
    tr = qdebug.open(str(path))
    float_bytes = bytes(case.converter().convert())
    ind = independent(tr, float_bytes, case.xs)
    t3 = time.perf_counter()
    FIGURES[name] = {
        "view": tr.view,
        "ops": len(tr.ops),
        "build_s": round(t1 - t0, 1),
        "trace_s": round(t2 - t1, 1),
        "independent_s": round(t3 - t2, 1),
    }
    yield Traced(name, case, tr, path, float_bytes, ind)
    tr.close()


def _pooled(path: Path, stat: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return np.asarray(f[f"metrics/ops/pooled/stat_{stat}"][...], dtype=np.float64)


# -- 1. accumulated SQNR --------------------------------------------------------------------------


def test_op_and_output_sqnr_match_an_independent_computation(traced: Traced) -> None:
    tr, ind = traced.tr, traced.ind
    measured = [i for i, r in enumerate(tr.ops) if r.status == "measured"]
    assert len(measured) >= 5
    joined = len(ind.float_tensor) / len(measured)
    got = tr.op_metrics()["sqnr_db"]
    deltas = []
    for row in ind.float_tensor:
        want, have = ind.sqnr(row), float(got[row])
        if np.isinf(want) or np.isinf(have):
            assert want == have, (tr.ops[row].name, want, have)
            continue
        deltas.append(abs(want - have))
        assert have == pytest.approx(want, abs=0.1), (tr.ops[row].name, tr.ops[row].op_type)
    out_sqnr = tr.output_metrics()["sqnr_db"]
    out_deltas = []
    for j, o in enumerate(tr.outputs):
        want = _db(ind.out_f2[o.tensor_name], ind.out_e2[o.tensor_name])
        out_deltas.append(abs(want - float(out_sqnr[j])))
        assert float(out_sqnr[j]) == pytest.approx(want, abs=0.1), o.name
    FIGURES[traced.name].update(
        measured_ops=len(measured),
        joined=f"{len(ind.float_tensor)}/{len(measured)}",
        max_op_delta_db=float(max(deltas)),
        max_out_delta_db=float(max(out_deltas)),
        out_sqnr_db=[round(float(v), 2) for v in out_sqnr],
    )
    assert joined >= 0.9, f"only {joined:.0%} of the measured ops joined the float model"


# -- 2. local error against TFLite's QuantizationDebugger -----------------------------------------


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged."""
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v), dtype=np.float64)
    for value in np.unique(v):
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_spearman_helper() -> None:
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([10, 20, 30, 40.0])) == pytest.approx(1)
    assert spearman(np.array([1, 2, 3, 4.0]), np.array([4, 3, 2, 1.0])) == pytest.approx(-1)
    assert spearman(np.array([1, 2, 2, 3.0]), np.array([1, 2, 3, 4.0])) == pytest.approx(
        0.9486832980505138
    )


def _debugger_stats(traced: Traced) -> list[dict[str, str]]:
    """TFLite's QuantizationDebugger on the same model, calibrated and run on the same data,
    as the rows of its CSV dump."""
    import csv

    import tensorflow as tf

    xs = traced.case.xs

    def dataset() -> Any:
        return ([x[None]] for x in xs)

    conv = traced.case.converter()
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = dataset  # qdebug's default: the traced data, ≤ 200 samples
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=dataset)
    debugger.run()
    text = io.StringIO()
    debugger.layer_statistics_dump(text)
    return list(csv.DictReader(io.StringIO(text.getvalue())))


def _join_debugger(
    tr: Trace, rows: list[dict[str, str]], float_bytes: bytes
) -> dict[int, dict[str, str]]:
    """qdebug op row → the debugger's row for the same tensor. The debugger names a tensor by
    its NumericVerify op's name with one trailing digit cut (the verify model renames tensors),
    so a name that still differs by that last digit (a graph output's op: ``…:01`` in the
    deployed model, ``…:0`` in the dump) joins when the op type agrees and nothing else does.
    Names are compared as ``_canonical`` makes them (the debugger converts through the
    SavedModel route, whose graph edges are the float model's here)."""
    qi = _interpreter(tr.tflite_bytes())
    q_canon, f_canon = _canonical(qi), _canonical(_interpreter(float_bytes))
    renamed = _float_name_of(qi)
    ours = [q_canon(renamed.get(r.tensor_index, r.tensor_name)) for r in tr.ops]
    out: dict[int, dict[str, str]] = {}
    for d in rows:
        theirs = f_canon(d["tensor_name"])
        same = [i for i, r in enumerate(tr.ops) if r.op_type == d["op_name"]]
        hits = [i for i in same if ours[i] == theirs] or [
            i for i in same if ours[i][:-1] == theirs and ours[i][-1:].isdigit()
        ]
        if len(hits) == 1:
            out[hits[0]] = d
    return out


def test_local_error_rank_agrees_with_the_quantization_debugger(traced: Traced) -> None:
    """Spearman ρ ≥ 0.9 between the debugger's ``mean_squared_error`` and qdebug's
    ``local_mse``, op by op. An error below 1e-3 LSB is float rounding of data movement
    (RESHAPE, TRANSPOSE: ~1e-15), not quantization; the tools sum it differently (float32
    per-sample means against float64 pooled sums), so both count it as 0 (a tie). The debugger
    runs its interpreter with the default XNNPACK delegate, qdebug with the builtin kernels."""
    tr = traced.tr
    t0 = time.perf_counter()
    rows = _debugger_stats(traced)
    joined = _join_debugger(tr, rows, traced.float_bytes)
    local_mse = tr.op_metrics()["local_mse"]
    keep = [row for row in joined if tr.ops[row].has_local and np.isfinite(local_mse[row])]
    theirs = np.array([float(joined[row]["mean_squared_error"]) for row in keep])
    ours = np.array([float(local_mse[row]) for row in keep])
    floor = (1e-3 * np.array([tr.ops[row].scale for row in keep])) ** 2
    rho_raw = spearman(theirs, ours)
    rho = spearman(np.where(theirs < floor, 0, theirs), np.where(ours < floor, 0, ours))
    same_scale = sum(
        np.isclose(float(d["scale"]), tr.ops[row].scale, rtol=1e-6) for row, d in joined.items()
    )
    above = (theirs >= floor) & (ours >= floor)
    apart = np.abs(np.log10(np.maximum(theirs, 1e-30) / np.maximum(ours, 1e-30))) > np.log10(2)
    FIGURES[traced.name].update(
        debugger_rows=len(rows),
        debugger_joined=f"{len(keep)}/{len(rows)}",
        same_scale=f"{same_scale}/{len(joined)}",
        spearman=round(rho, 4),
        spearman_unfloored=round(rho_raw, 4),
        debugger_off_by_2x=[tr.ops[row].name for row in np.array(keep)[above & apart]],
        debugger_s=round(time.perf_counter() - t0, 1),
    )
    assert len(keep) >= 5 and len(keep) >= 0.9 * len(rows), (len(keep), len(rows))
    assert rho >= 0.9, f"Spearman {rho:.3f} on {len(keep)} ops"


# -- 3. accumulated = local + propagated on ops with several inputs -------------------------------


def test_multi_input_ops_decompose(traced: Traced) -> None:
    """√Σe² lies between |√Σlocal² − √Σprop²| and √Σlocal² + √Σprop² (e = local + prop
    element by element) on every op with several tensor inputs."""
    tr, path = traced.tr, traced.path
    e2, local2, prop2 = (_pooled(path, s) for s in ("sum_e2", "sum_local_e2", "sum_prop_e2"))
    multi = [
        i
        for i, r in enumerate(tr.ops)
        if r.status == "measured" and r.has_local and len(r.inputs) >= 2
    ]
    assert multi, "no op with several inputs was measured"
    for i in multi:
        a, loc, p = np.sqrt(e2[i]), np.sqrt(local2[i]), np.sqrt(prop2[i])
        slack = 1e-6 * max(a, loc, p) + 1e-12
        assert np.isfinite([a, loc, p]).all(), tr.ops[i].name
        assert a <= loc + p + slack, (tr.ops[i].name, a, loc, p)
        assert a >= abs(loc - p) - slack, (tr.ops[i].name, a, loc, p)
    FIGURES[traced.name]["multi_input_ops"] = len(multi)


def _check_local_of_add_mul_concat(traced: Traced, rows: list[int]) -> None:
    tr, path, ind = traced.tr, traced.path, traced.ind
    e2, local2, prop2, ref2 = (
        _pooled(path, s) for s in ("sum_e2", "sum_local_e2", "sum_prop_e2", "sum_ref2")
    )
    for row in rows:
        name = f"{tr.ops[row].op_type} {tr.ops[row].name}"
        tol = 1e-4 * e2[row]
        assert ref2[row] == pytest.approx(ind.local_f2[row], rel=1e-5), name
        assert local2[row] == pytest.approx(ind.local_e2[row], rel=1e-3, abs=tol), name
        assert prop2[row] == pytest.approx(ind.prop_e2[row], rel=1e-3, abs=tol), name


def test_local_error_of_add_mul_concat_uses_every_input(traced: Traced) -> None:
    """f̂ of a multi-input ADD, MUL, CONCATENATION or BATCH_MATMUL is the float op of *all*
    its dequantized int8 inputs: the stored Σf̂², Σ(q − f̂)² and Σ(f̂ − f)² equal the ones
    computed here (ops reading a model input directly: the next test)."""
    tr, path, ind = traced.tr, traced.path, traced.ind
    rows = [row for row in ind.local_e2 if row not in ind.input_fed]
    if not rows:
        pytest.skip(f"{traced.name}: no multi-input ADD/MUL/CONCATENATION without activation")
    _check_local_of_add_mul_concat(traced, rows)
    FIGURES[traced.name]["add_mul_concat_checked"] = len(rows)
    if traced.name == "residual_op_nodes":
        e2, local2, prop2 = (_pooled(path, s) for s in ("sum_e2", "sum_local_e2", "sum_prop_e2"))
        kinds = {tr.ops[row].op_type for row in rows}
        assert kinds >= {"ADD", "MUL", "CONCATENATION"}, kinds
        add = next(row for row in rows if tr.ops[row].op_type == "ADD")
        # both branches carry error: their sum's own error is a small part of the whole
        for j in tr.ops[add].inputs:
            assert e2[j] > 3 * local2[add], (tr.ops[j].name, e2[j], local2[add])
        assert local2[add] < 0.2 * e2[add], (local2[add], e2[add])
        assert prop2[add] > 0.5 * e2[add]


def test_local_error_of_ops_reading_a_model_input_uses_the_quantized_input(
    traced: Traced,
) -> None:
    """An op reading a model input gets it quantized (the QUANTIZE row): its f̂ must be the
    float op on that quantized input, so its propagated error is not zero when the input's
    quantization error is not, and ADD/MUL/CONCATENATION agree with f̂ computed here."""
    tr, path, ind = traced.tr, traced.path, traced.ind
    e2, prop2 = _pooled(path, "sum_e2"), _pooled(path, "sum_prop_e2")
    gain = tr.op_metrics()["gain"]
    rows = sorted(row for row in ind.input_fed if tr.ops[row].has_local)
    assert rows, "no op reading a model input has local error"
    for row in rows:
        name = f"{tr.ops[row].op_type} {tr.ops[row].name}"
        carried = sum(e2[j] for j in tr.ops[row].inputs if tr.ops[j].op_type == "QUANTIZE")
        assert carried > 0, name
        assert prop2[row] > 0 and gain[row] > 0, (name, prop2[row], gain[row])
    _check_local_of_add_mul_concat(traced, [row for row in rows if row in ind.local_e2])


# -- 4. local error never above the whole signal where accumulated is healthy ---------------------


def test_no_negative_local_sqnr_under_a_healthy_accumulated_one(traced: Traced) -> None:
    tr = traced.tr
    bad = []
    for kind, rows, m in (
        ("op", tr.ops, tr.op_metrics()),
        ("layer", tr.layers, tr.layer_metrics()),
    ):
        acc, local = m["sqnr_db"], m["local_sqnr_db"]
        checked = np.isfinite(local) & (acc >= 10)
        assert checked.sum() >= 3, f"{kind}: too few rows with local error to check"
        bad += [
            (kind, rows[i].name, float(acc[i]), float(local[i]))
            for i in np.flatnonzero(checked & (local < 0))
        ]
    assert not bad, bad
