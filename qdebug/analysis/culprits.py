"""The ranked culprits: layers where the output's error is born, by the share of it each
injects, with a one-line reason. Pure numpy; the definition is in docs/metrics.md."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from qdebug import textfmt
from qdebug.analysis.segments import build_segments, source_of
from qdebug.store.layer_metrics import LayerMetrics
from qdebug.store.meta import QUANTIZER_AEQ, QUANTIZER_GIVEN
from qdebug.store.schema import (
    STATUS_INPUT,
    STATUS_MATCHED,
    Culprit,
    CulpritKind,
    LayerRecord,
    OpRecord,
)

#: Rounding of in-range values alone gives 1/√12 ≈ 0.29 LSB of the tensor's own grid, whatever
#: its bits; up to this is "healthy".
HEALTHY_LSB = 0.45
#: A 16-bit tensor's step is this many times finer than an 8-bit one over the same range
#: ((2¹⁶ − 1) / (2⁸ − 1)): its errors are also quoted in int8-equivalent steps.
INT16_PER_INT8 = 257.0
#: A layer whose gain exceeds this amplifies the error it receives.
AMPLIFY_GAIN = 1.5
#: Clipping is named as the reason when it causes this share of a layer's error or more.
CLIP_SHARE = 0.3
#: Under this SQNR (dB) a tensor's quantization step is too coarse for its values, however
#: small the error in LSB (a 1000-class softmax whose int8 output is all zeros).
COARSE_DB = 10.0
#: A layer adding this share of the output's noise-to-signal or more is never "healthy", even
#: when its error is pure rounding: the grid is too coarse for what the output needs.
COARSE_SCORE = 0.3
#: A layer explaining less than this share of the output's noise-to-signal is not a culprit.
MIN_SCORE = 0.01
#: An output at this SQNR (dB) or more is healthy: its error is about 3 % of the signal's
#: amplitude or less, what int8 rounding of the output's own values costs on a trained model
#: (the digits CNN 39 dB, a token classifier 53 dB), so no layer is worth acting on.
HEALTHY_OUTPUT_DB = 30.0
#: ... and, for a classifier, at least this top-1 agreement (a 30.4 dB output flipping 11 % of
#: the answers is not healthy).
HEALTHY_TOP1 = 0.99
#: A culprit layer made of more ops than this is named by its ops (a subclassed model wrapped
#: in a functional one is one layer of all the model's ops).
MANY_OPS = 3
#: Scores add up to about 1 (the output's error, cross terms aside; up to ~4 for one layer
#: where squeeze-excite paths meet again). When an output's scores sum to more than this, the
#: first-order reach does not hold for it (paths meet again through gains measured one layer
#: at a time, multiplying along every path) and no layer is named: a plausible false culprit
#: is worse than none. MediaPipe's selfie segmentation sums to 858; every other model of the
#: corpus to 0.1-1.2.
UNSOUND_TOTAL = 20.0
#: ... when its ops' culprits explain at least this share of its score; else it stays (the
#: error is born across its ops, or in ops measured without a local error of their own).
OPS_EXPLAIN = 0.5


def is_healthy(output_sqnr_db: float, top1_agreement: float = math.nan) -> bool:
    """Whether an output leaves nothing worth acting on: SQNR ≥ ``HEALTHY_OUTPUT_DB`` and,
    where it is a classifier (``top1_agreement`` not NaN), agreement ≥ ``HEALTHY_TOP1``."""
    if not output_sqnr_db >= HEALTHY_OUTPUT_DB:  # NaN: unknown, never healthy
        return False
    return math.isnan(top1_agreement) or top1_agreement >= HEALTHY_TOP1


def outputs_healthy(om: dict[str, np.ndarray]) -> bool:
    """Whether every output of a trace's output metrics (``sqnr_db``, ``top1_agreement``) is
    healthy (``is_healthy``); False without outputs."""
    pairs = list(zip(om["sqnr_db"], om["top1_agreement"], strict=True))
    return bool(pairs) and all(is_healthy(float(v), float(t)) for v, t in pairs)


def _nsr(sqnr_db: float) -> float:
    """Noise-to-signal power ratio of an SQNR in dB."""
    return 10 ** (-sqnr_db / 10) if math.isfinite(sqnr_db) else 0.0


#: Pooled metrics of a layer table as the ranking takes them: the typed record, or its dict.
Metrics = LayerMetrics | Mapping[str, np.ndarray]


def find_culprits(
    layers: Sequence[LayerRecord],
    m: Metrics,
    stats: dict[str, np.ndarray],
    output_sqnr_db: float,
    output_layer: str = "",
    limit: int = 8,
    *,
    top1_agreement: float = math.nan,
    ops: Sequence[OpRecord] = (),
    op_m: Metrics | None = None,
    op_stats: dict[str, np.ndarray] | None = None,
) -> list[Culprit]:
    """The layers worth acting on, ranked (``rank_layers``): none when the output is healthy
    (``is_healthy``), and never a layer whose error is rounding noise explaining little of the
    output's (``CulpritKind.ROUNDING`` under ``COARSE_SCORE``: a healthy layer). A culprit
    layer of more than ``MANY_OPS`` measured ops is replaced by its ops that are culprits
    (``op_culprits``): their ``layer`` is the op's name, their ``index`` the layer's row."""
    if is_healthy(output_sqnr_db, top1_agreement):
        return []
    ranked = rank_layers(layers, m, stats, output_sqnr_db, output_layer, limit=len(layers))
    if sum(c.score for c in ranked) > UNSOUND_TOTAL:
        return []  # the shares do not add up: nothing can be named for sure
    if ops and op_m is not None and op_stats is not None:
        ranked = _by_ops(ranked, layers, ops, LayerMetrics.of(op_m, len(ops)), op_stats,
                         output_sqnr_db, output_layer)
    worth = [c for c in ranked
             if not (c.kind == CulpritKind.ROUNDING and c.score < COARSE_SCORE)]
    return worth[:limit]


def scores_total(
    layers: Sequence[LayerRecord], m: Metrics, stats: dict[str, np.ndarray],
    output_sqnr_db: float, output_layer: str,
) -> float:
    """The sum of every layer's score for one output (about 1 where the ranking holds; over
    ``UNSOUND_TOTAL`` it does not, and ``find_culprits`` names nothing)."""
    return float(sum(c.score for c in rank_layers(layers, m, stats, output_sqnr_db,
                                                  output_layer, limit=len(layers))))


def int16_remedy(quantizer: str) -> str:
    """How to ask for int16 activations on the route that made this model: the converter's
    ``--scheme int16x8``, ai-edge-quantizer's ``--recipe int16`` (which refuses ``--scheme``);
    a model handed over with ``--tflite`` was quantized elsewhere."""
    if quantizer == QUANTIZER_AEQ:
        return "try --recipe int16"
    if quantizer == QUANTIZER_GIVEN:
        return "int16 activations may help where it was quantized"
    return "try --scheme int16x8"


def no_culprits_reason(
    layers: Sequence[LayerRecord], m: Metrics, every: str = "layer", total: float = 0.0,
    remedy: str = "try --scheme int16x8",
) -> str:
    """Why an output that is not healthy has no culprits, in one line for people; ``total``
    is its ``scores_total`` where the caller has the statistics; ``remedy`` is
    ``int16_remedy`` of the trace's quantizer."""
    if total > UNSOUND_TOTAL:
        return (f"the shares of the output's error do not add up: the {every}s' scores sum to "
                f"{total:,.0f}× it, where they add to about 1 when the ranking holds (its "
                f"paths meet again through gains measured one {every} at a time), so no {every} "
                "can be named for sure; `qdebug sensitivity` measures each one directly")
    local = LayerMetrics.of(m, len(layers)).local_sqnr_db  # NaN where not measured
    if not any(math.isfinite(float(local[i])) for i, r in enumerate(layers)
               if r.status != STATUS_INPUT):
        return (f"the trace measures no {every}'s own error (no local error: nothing re-ran "
                f"each {every} in float on the quantized inputs), so nothing says where the "
                f"output's error is born: the worst {every}s above are where it is largest, "
                "not where it starts")
    return (f"no {every}'s own error is worth acting on alone (each under 1 % of the output's, "
            "or rounding noise under 30 %): the output's error builds up over many of them "
            f"({remedy})")


def measured_inputs(ops: Sequence[Any], i: int, measured: set[int]) -> list[int]:
    """The measured ops whose values op ``i`` consumes, looking through the unmeasured
    QUANTIZE and DEQUANTIZE ops between them (a requantize to another scale, such as the
    converter's rescaling of a CONCATENATION's inputs to one; the DEQUANTIZE before an op left
    in float: no float tensor of their own, the value passes as it is). Without it the op
    after one has no inputs: nothing upstream reaches the output (BlazeFace's classificators
    head had no culprit), and an op left in float whose inputs are unknown counts all of its
    error as its own (basic-pitch's float EXPAND_DIMS after its log, a false culprit)."""
    found: list[int] = []
    stack, seen = list(reversed(ops[i].inputs)), set()
    while stack:
        j = stack.pop()
        if j in seen or not 0 <= j < len(ops):
            continue
        seen.add(j)
        if j in measured:
            found.append(j)
        elif ops[j].op_type in ("QUANTIZE", "DEQUANTIZE"):
            stack.extend(reversed(ops[j].inputs))
    return found


def op_rows(ops: Sequence[OpRecord], layers: Sequence[LayerRecord]) -> list[LayerRecord]:
    """The measured ops as rows of a layer table, so that ``rank_layers`` ranks ops: named by
    the op, ``inbound`` the measured ops they consume, a model input's QUANTIZE an input row."""
    measured = {i for i, o in enumerate(ops) if o.measured}
    input_ops = {i for r in layers if r.status == STATUS_INPUT for i in r.ops}
    return [
        LayerRecord(
            name=o.name, class_name=o.op_type,
            inbound=[ops[j].name for j in measured_inputs(ops, i, measured)],
            status=STATUS_INPUT if i in input_ops else STATUS_MATCHED,
            tensor_name=o.tensor_name, tensor_index=o.tensor_index, op_type=o.op_type,
            dtype=o.dtype, scale=o.scale, zero_point=o.zero_point, match_rel_error=0.0,
            float_island=o.dtype == "float32", ops=[i],
        )
        for i, o in enumerate(ops) if i in measured
    ]


def _by_ops(
    ranked: list[Culprit],
    layers: Sequence[LayerRecord],
    ops: Sequence[OpRecord],
    op_m: LayerMetrics,
    op_stats: dict[str, np.ndarray],
    output_sqnr_db: float,
    output_layer: str,
) -> list[Culprit]:
    """``ranked`` with each layer of many ops replaced by its own ops' culprits, ranked over
    the op graph the same way (the share of the output's error born at each op)."""
    many = {c.index for c in ranked
            if sum(1 for i in layers[c.index].ops if ops[i].measured) > MANY_OPS}
    if not many:
        return ranked
    rows = op_rows(ops, layers)
    keep = [r.ops[0] for r in rows]
    pick = np.array(keep, dtype=np.int64)
    m = op_m.take(pick)
    stats = {k: np.asarray(v)[pick] for k, v in op_stats.items()}
    by_name = {r.name: i for i, r in enumerate(layers)}
    out_rec = layers[by_name[output_layer]] if output_layer in by_name else None
    out_op = next((ops[i].name for i in (out_rec.ops if out_rec else [])
                   if ops[i].tensor_index == out_rec.tensor_index), "") if out_rec else ""
    owner = {o.name: by_name.get(o.layer, -1) for o in ops}
    found = rank_layers(rows, m, stats, output_sqnr_db, out_op, limit=len(rows))
    by_layer: dict[int, list[Culprit]] = {}
    for c in found:
        layer = owner.get(c.layer, -1)
        if layer in many:
            by_layer.setdefault(layer, []).append(Culprit(
                c.layer, layer, c.kind, c.score,
                f"op {rows[c.index].op_type} of layer {layers[layer].name!r}: {c.reason}"))
    # Ranked as their layers are (what keeping a layer in float buys), each layer's ops in
    # their own order: an op's share is a part of its layer's, not a rival of other layers.
    expanded: list[tuple[float, Culprit]] = []
    for c in ranked:
        mine = by_layer.get(c.index, []) if c.index in many else [c]
        if c.index in many and sum(x.score for x in mine) < OPS_EXPLAIN * c.score:
            # its error is the layer's, not one op's: it stays, named as the layer
            n = sum(1 for i in layers[c.index].ops if ops[i].measured)
            mine = [Culprit(c.layer, c.index, c.kind, c.score,
                            f"{c.reason} (over its {n} ops: no op's own error explains it)")]
        expanded += [(c.score, x) for x in mine]
    expanded.sort(key=lambda p: (p[0], p[1].score), reverse=True)
    return [x for _, x in expanded]


def rank_layers(
    layers: Sequence[LayerRecord],
    m: Metrics,
    stats: dict[str, np.ndarray],
    output_sqnr_db: float,
    output_layer: str = "",
    limit: int = 8,
) -> list[Culprit]:
    """Rank layers by the share of the output's error born at them, whatever the output's
    health.

    A layer's score is its local error power (what it injects, against f(x̂)) times the share
    of its error that reaches the model's first output — the product of the gains² of the
    layers after it, summed over its consumers — over the output's error power: what keeping
    it alone in float would remove. A layer whose local error or reach is unknown is not
    ranked; without an output layer the score is the rise in noise-to-signal at the layer, in
    units of the output's; without any local error, nothing is ranked. Whether it injected
    the error (``local_share`` ≥ ½) or amplified what it received (``gain``) decides the
    reason.

    Args:
        layers: the layer table.
        m: pooled layer metrics, with the local-error metrics (``LayerMetrics``, or its
            dict).
        stats: pooled sufficient statistics (``sum_f2``, ``sum_e2``, ``sum_local_e2``) per
            layer.
        output_sqnr_db: the first output's SQNR.
        output_layer: the layer of the first output.
    """
    m = LayerMetrics.of(m, len(layers))
    computed = [i for i, r in enumerate(layers) if r.status != STATUS_INPUT]
    if not np.isfinite(m.local_sqnr_db[computed]).any():
        return []  # no local error at all (a .tflite pair, QAT): nothing says where it is born
    out_nsr = _nsr(output_sqnr_db) or 1e-12
    index = {r.name: i for i, r in enumerate(layers)}
    by_name = {r.name: r for r in layers}
    inputs = {index[seg.output]: [index[source_of(n, by_name)] for n in seg.inputs]
              for seg in build_segments(layers)}
    out = index.get(output_layer, -1)
    reach = _reach(len(layers), inputs, m, out)
    out_e2 = float(stats["sum_e2"][out]) if out >= 0 else math.nan
    found: list[Culprit] = []
    for i, r in enumerate(layers):
        if not r.ranked:
            continue
        src = inputs.get(i, [])
        f2 = float(sum(stats["sum_f2"][j] for j in src))
        in_nsr = float(sum(stats["sum_e2"][j] for j in src)) / f2 if f2 > 0 else 0.0
        rise = (_nsr(float(m.sqnr_db[i])) - in_nsr) / out_nsr
        feeds = src or [index[source_of(n, by_name)] for n in r.inbound if n in by_name]
        local_e2 = _local_e2(r, i, stats, feeds)
        if out < 0:
            score = rise  # no output layer to refer the error to
        elif math.isfinite(reach[i]) and out_e2 > 0 and math.isfinite(local_e2):
            score = local_e2 * reach[i] / out_e2
        else:
            continue  # what it injects, or how much of it arrives, is unknown: never ranked
        if not score >= MIN_SCORE:  # explains nothing (or NaN)
            continue
        gain = float(m.gain[i])  # NaN where not measured
        share = float(m.local_share[i]) if m.has("local_share") else 1.0
        kind, reason = _why(r, i, m, gain, share, score)
        found.append(Culprit(r.name, i, kind, score, reason))
    found.sort(key=lambda c: c.score, reverse=True)
    return found[:limit]


def _local_e2(r: LayerRecord, i: int, stats: dict[str, np.ndarray], src: list[int]) -> float:
    """The error power a layer injects: its local error; all of its error where none comes
    in (a model input, an Embedding over integer ids); NaN when unknown."""
    local = float(stats["sum_local_e2"][i]) if "sum_local_e2" in stats else math.nan
    if math.isfinite(local):
        return local
    if r.status == STATUS_INPUT or not any(float(stats["sum_e2"][j]) > 0 for j in src
                                           if math.isfinite(float(stats["sum_e2"][j]))):
        return float(stats["sum_e2"][i])
    return math.nan


def _reach(
    n: int, inputs: dict[int, list[int]], m: LayerMetrics, out: int
) -> np.ndarray:
    """Per layer, the share of its error power that reaches layer ``out``: 1 there; for
    another layer, Σ over the layers it feeds of their gain² × their own reach (a gain not
    measured counts as 1: the error passes as it is). NaN where no path of measured layers
    leads to ``out`` (or without one)."""
    reach = np.full(n, np.nan)
    if out < 0:
        return reach
    gain = np.asarray(m.gain, dtype=np.float64)
    consumers: dict[int, list[int]] = {}
    for c, srcs in inputs.items():
        for j in srcs:
            consumers.setdefault(j, []).append(c)
    reach[out] = 1.0
    for i in range(n - 1, -1, -1):  # the layer table is in topological order
        if i == out:
            continue
        known = [c for c in consumers.get(i, []) if math.isfinite(reach[c])]
        if known:
            reach[i] = sum(
                (float(gain[c]) ** 2 if math.isfinite(gain[c]) else 1.0) * reach[c]
                for c in known
            )
    return reach


def _score_text(score: float) -> str:
    """A score in words: a share of the output's noise-to-signal under 1, a multiple of it
    above (later layers damped the rest: scores are not shares, and never add up to 100 %)."""
    if score < 1:
        return f"{textfmt.pct(score, digits=0)} of the output's noise-to-signal"
    return f"{textfmt.plain(score, 1)}× the output's noise-to-signal (later layers damp it)"


def _lsb_text(lsb: float, dtype: str) -> str:
    """An error in LSB of the tensor's own grid, named for a 16-bit tensor and then given in
    int8-equivalent steps as well."""
    if dtype == "int16":
        steps = textfmt.plain(lsb / INT16_PER_INT8, 3)
        return f"{textfmt.lsb(lsb)} int16 LSB (= {steps} of an int8 step)"
    return f"{textfmt.lsb(lsb)} LSB"


def _why(
    r: LayerRecord, i: int, m: LayerMetrics, gain: float, share: float, score: float
) -> tuple[CulpritKind, str]:
    if r.float_island:
        return CulpritKind.FLOAT_ISLAND, "runs in float inside the INT8 model"
    if math.isfinite(gain) and gain >= AMPLIFY_GAIN and not share >= 0.5:
        return CulpritKind.AMPLIFIES, f"amplifies incoming error {textfmt.plain(gain, 1)}×"
    clip = float(m.clip_share[i])
    lsb = float(m.local_rmse_lsb[i])
    if clip >= CLIP_SHARE:
        return CulpritKind.CLIPPING, (
            f"clipping: {textfmt.pct(float(m.clip_fraction[i]))} of values outside the "
            f"calibrated range cause {textfmt.pct(clip, digits=0)} of its error"
        )
    local = float(m.local_sqnr_db[i])
    own = float(m.sqnr_db[i])
    if lsb <= HEALTHY_LSB and min(local, own) < COARSE_DB:
        return CulpritKind.RESOLUTION, (
            f"values too small for the quantization step: {_lsb_text(lsb, r.dtype)} of "
            f"rounding leaves {textfmt.db_unit(min(local, own))}"
        )
    if not math.isfinite(lsb):  # a float tensor has no LSB
        where = f", {textfmt.db_unit(local)}" if math.isfinite(local) else ""
        return CulpritKind.INJECTS, f"injects error{where}"
    if lsb <= HEALTHY_LSB and score >= COARSE_SCORE:
        fix = "float here" if r.dtype == "int16" else "more bits or float here"
        return CulpritKind.ROUNDING, (
            f"rounding noise only ({_lsb_text(lsb, r.dtype)}), yet {_score_text(score)}: "
            f"the grid is too coarse for this layer ({fix})"
        )
    if lsb <= HEALTHY_LSB:
        return CulpritKind.ROUNDING, f"rounding noise {_lsb_text(lsb, r.dtype)} — healthy"
    where = f", {textfmt.db_unit(local)}" if math.isfinite(local) else ""
    if r.dtype == "int16":
        steps = lsb / INT16_PER_INT8
        than = "less than" if steps <= HEALTHY_LSB else "more than"
        return CulpritKind.INJECTS, (
            f"injects {textfmt.lsb(lsb)} int16 LSB of error (16-bit rounding alone is 0.29; "
            f"that is {textfmt.plain(steps, 3)} of an int8 step, {than} int8 rounding adds)"
            f"{where}"
        )
    return CulpritKind.INJECTS, (
        f"injects {textfmt.lsb(lsb)} LSB of error (rounding alone is 0.29){where}")
