"""``qdebug report --format markdown``: a section to paste into a GitHub issue.

Built from ``report_dict`` (so it carries whatever the JSON report carries, such as the
propagation analysis' ``culprits``) plus the worst layers by accumulated SQNR. Every string from
the trace is escaped (``md.text``, ``md.code``), and the whole report stays within GitHub's
65,536 characters (``md.fold``: the per-layer table first loses its last rows).
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from qdebug.analysis.culprits import (
    HEALTHY_OUTPUT_DB,
    HEALTHY_TOP1,
    int16_remedy,
    no_culprits_reason,
    outputs_healthy,
    scores_total,
)
from qdebug.output import md
from qdebug.output.fmt import TEXT_LIMIT, db, num, pct, plain, printable
from qdebug.output.report_json import report_dict, worst_layers
from qdebug.store.meta import QUANTIZER_AEQ
from qdebug.store.reader import Trace
from qdebug.store.schema import VIEW_OPS

#: Optional per-layer fields of the propagation analysis shown in the layer table when present.
_ANALYSIS_COLUMNS = (("local_sqnr_db", "local SQNR (dB)", db), ("gain", "gain", plain))
_VERSIONS = ("qdebug", "tensorflow", "keras", "litert", "numpy", "h5py", "python")
#: Warnings listed before the rest is folded into one line.
SHOWN_WARNINGS = 20
_CSV = "`qdebug report TRACE --format csv > layers.csv` has every layer (attach it)"
_JSON = "`qdebug report TRACE --format json` has them all"


def _f(value: Any) -> float:
    """A report value as a float (None, i.e. NaN or no value, becomes NaN)."""
    return math.nan if value is None else float(value)


def _name(value: object) -> str:
    """A name in a table cell: a code span (no markup, link or mention in it)."""
    return md.code(value, in_table=True)


def _environment(rep: dict[str, Any]) -> list[str | md.Rows]:
    v = rep["versions"]
    rows = [[name, md.text(v.get(f"{name}_version", "?"))] for name in _VERSIONS]
    rows.append(["keras flavour", md.text(rep["model"].get("keras_flavour"))])
    rows.append(["platform", md.text(rep["run"].get("platform") or "?")])
    return ["### Environment", "", md.table(["component", "version"], rows, "rows", _JSON)]


def _model(rep: dict[str, Any]) -> list[str | md.Rows]:
    m, run = rep["model"], rep["run"]
    conv = m.get("converter") or {}
    lines: list[str | md.Rows] = [
        "### Model and conversion",
        "",
        f"- model: {md.code(m['name'])} from {md.text(m.get('source'), TEXT_LIMIT)} "
        f"(sha256 {md.code(m.get('sha256'))})",
        f"- INT8 model: {md.text(m.get('tflite_source'), TEXT_LIMIT)}; kernels: "
        f"{md.text(m.get('kernels'), TEXT_LIMIT)}",
    ]
    if conv:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(conv.items()))
        lines.append(f"- converter: {md.text(settings, TEXT_LIMIT)}")
    quant = rep.get("quantizer") or {}
    if quant.get("name") == QUANTIZER_AEQ:
        lines.append(f"- quantizer: {md.text(quant.get('name'))} {md.text(quant.get('version'))}"
                     f", recipe {md.text(quant.get('recipe_name'), TEXT_LIMIT)} (`qdebug export "
                     "--tflite` writes the recipe's JSON beside the model)")
    lines.append(
        f"- data: {md.text(run.get('data_source'), TEXT_LIMIT)} ({rep['samples']} samples, "
        f"{len(rep['stored_samples'])} stored); calibration: "
        f"{md.text(run.get('calib_source'), TEXT_LIMIT)}"
    )
    if run.get("command_line"):
        lines.append(f"- command: {md.code(run['command_line'], TEXT_LIMIT)}")
    return lines


def _outputs(rep: dict[str, Any]) -> list[str | md.Rows]:
    rows = [
        [_name(o["name"]), db(_f(o["sqnr_db"])), plain(_f(o["rmse_lsb"])),
         plain(_f(o["cosine"]), 5), pct(_f(o["saturation"])), pct(_f(o["top1_agreement"]))]
        for o in rep["output"]["outputs"]
    ]
    header = ["output", "SQNR (dB)", "RMSE (LSB)", "cosine", "saturation", "top-1 agreement"]
    lines: list[str | md.Rows] = ["### Output", "", md.table(header, rows, "outputs", _JSON)]
    inst = rep["instrumentation"]
    if inst.get("mismatched_samples"):
        lines += ["", f"⚠ instrumentation changed the output of "
                  f"{md.text(inst['mismatched_samples'])} of "
                  f"{md.text(inst.get('checked_samples'))} checked sample(s) (max difference "
                  f"{md.text(inst['max_abs_diff'])})"]
    warnings = [f"- warning: {md.text(w, TEXT_LIMIT)}" for w in rep.get("warnings") or []]
    if warnings:
        lines += ["", md.Rows([], warnings, "warnings", _JSON)]
    return lines


def _kernels(rep: dict[str, Any]) -> list[str | md.Rows]:
    """``--xnnpack``: each output and the accuracy as XNNPACK computed them."""
    k = rep["deployment_kernels"]
    if not k.get("outputs"):
        return []
    rows = [
        [_name(o["name"]), db(_f(o["sqnr_db"])), db(_f(o["reference_sqnr_db"])),
         pct(_f(o["top1_agreement"])), pct(_f(o["reference_top1_agreement"])),
         plain(_f(o["max_abs_diff_lsb"]))]
        for o in k["outputs"]
    ]
    header = ["output", "SQNR XNNPACK (dB)", "SQNR reference (dB)", "top-1 XNNPACK",
              "top-1 reference", "max difference (LSB)"]
    lines: list[str | md.Rows] = [
        "### Deployment kernels (XNNPACK)", "",
        f"XNNPACK took {len(k['delegated_ops'])} ops; its outputs differ from the reference "
        f"kernels' on {md.text(k['mismatched_samples'])} of {rep['samples']} samples. Both "
        "against the float model; every other number here is the reference kernels'.", "",
        md.table(header, rows, "outputs", _JSON),
    ]
    if k.get("accuracy") is not None:
        out = rep["output"]
        lines += ["", f"Accuracy: XNNPACK {pct(_f(k['accuracy']))}, reference "
                  f"{pct(_f(out['int8_accuracy']))}, float {pct(_f(out['float_accuracy']))}."]
    return lines


def _custom(rep: dict[str, Any]) -> list[str | md.Rows]:
    """The user metrics (``--metric``, ``--output-metric``): each output metric's value, and
    what each metric is; per-layer values are columns of the per-layer table."""
    model, layer = rep.get("output_metrics") or [], rep.get("custom_metrics") or []
    if not model and not layer:
        return []
    rows = [
        [_name(m["name"]), md.text(m["kind"]),
         num(_f(m["value"])) if "value" in m else "per layer (table below)",
         md.text(m["unit"] or "—"), md.text(m["definition"], TEXT_LIMIT)
         + (f" (failed: {md.text(m['error'], TEXT_LIMIT)})" if m.get("error") else "")]
        for m in (*model, *layer)
    ]
    return ["### Custom metrics", "",
            md.table(["metric", "kind", "value", "unit", "definition"], rows, "metrics", _JSON)]


def _islands(rep: dict[str, Any]) -> list[str | md.Rows]:
    islands = rep["float_islands"]
    if not islands:
        return ["### Float islands", "", "None: every op of the INT8 model computes in integers."]
    rows = [[md.text(i["op_index"]), md.text(i["op_type"]), _name(i["tensor_name"])]
            for i in islands]
    return ["### Float islands", "",
            md.table(["op", "type", "tensor"], rows, "float islands", _JSON)]


def _culprit_row(item: Any) -> list[str]:
    if isinstance(item, dict):
        name = item.get("layer", item.get("name", "?"))
        return [_name(name), md.text(item.get("kind", "")),
                md.text(item.get("reason", ""), TEXT_LIMIT)]
    return [_name(item), "", ""]


def _culprits(rep: dict[str, Any], trace: Trace) -> list[str | md.Rows]:
    culprits = rep.get("culprits")
    if culprits:
        rows = [_culprit_row(c) for c in culprits]
        if len(trace.outputs) > 1:  # each output has its own: say which one a row is about
            rows = [[md.text(c.get("output", "") if isinstance(c, dict) else ""), *r]
                    for c, r in zip(culprits, rows, strict=True)]
            return ["### Culprits", "", md.table(["output", "layer", "kind", "reason"], rows,
                                                 "culprits", _JSON)]
        return ["### Culprits", "",
                md.table(["layer", "kind", "reason"], rows, "culprits", _JSON)]
    layers = rep["layers"]
    rows = [
        [_name(layers[i]["name"]), md.text(layers[i]["class"]), md.text(layers[i]["op"]),
         db(sq), plain(_f(layers[i]["rmse_lsb"])), pct(_f(layers[i]["saturation"])),
         pct(_f(layers[i]["clip_fraction"]))]
        for i, sq in worst_layers(trace)
    ]
    header = ["layer", "class", "op", "SQNR (dB)", "RMSE (LSB)", "saturation", "clipped"]
    return ["### Worst layers (accumulated SQNR)", "", _why_no_culprits(trace), "",
            md.table(header, rows, "layers", _CSV)]


def _why_no_culprits(trace: Trace) -> str:
    """As the text summary says it: healthy outputs, else why nothing is named."""
    lm = trace.typed_layer_metrics()
    if trace.outputs and outputs_healthy(trace.output_metrics()):
        return (f"Healthy: every output at {HEALTHY_OUTPUT_DB:.0f} dB SQNR or more (classifiers "
                f"agreeing on {HEALTHY_TOP1:.0%} of the answers or more), so no layer is worth "
                "acting on.")
    if np.isfinite(lm.local_sqnr_db).any():
        every = "op" if trace.view == VIEW_OPS else "layer"
        om, stats = trace.output_metrics(), trace.layer_pooled_stats()
        total = max((scores_total(trace.layers, lm, stats, float(om["sqnr_db"][j]), o.layer)
                     for j, o in enumerate(trace.outputs)), default=0.0)
        why = no_culprits_reason(trace.layers, lm, every, total,
                                 int16_remedy(trace.meta.quantizer.name))
        return f"No culprits: {md.text(why, TEXT_LIMIT)}."
    return "The trace has no propagation analysis, so no culprits with reasons."


def _layer_table(rep: dict[str, Any]) -> list[str | md.Rows]:
    layers = rep["layers"]
    extra = [c for c in _ANALYSIS_COLUMNS if layers and c[0] in layers[0]]
    custom = [m["name"] for m in rep.get("custom_metrics") or []]
    precision = any(r.get("precision") for r in layers)  # schema 1.4
    header = ["#", "layer", "class", "op", *(["precision"] if precision else []), "status",
              "SQNR (dB)", "RMSE (LSB)", "saturation",
              *(c[1] for c in extra), *(md.text(c) for c in custom)]
    rows = [
        [str(r["index"]), _name(r["name"]), md.text(r["class"]), md.text(r["op"] or "—"),
         *([md.text(r.get("precision") or "—")] if precision else []),
         md.text(r["status"])
         + (f" → {_name(r['related'])}" if r["related"] else ""),
         db(_f(r["sqnr_db"])), plain(_f(r["rmse_lsb"])), pct(_f(r["saturation"])),
         *(fmt(_f(r[key])) for key, _, fmt in extra),
         *(num(_f(r["custom_metrics"].get(c))) for c in custom)]
        for r in layers
    ]
    return ["### Per-layer", "", f"<details><summary>{len(layers)} layers</summary>", "",
            md.table(header, rows, "layers", _CSV), "", "</details>"]


def _how_to_open(rep: dict[str, Any]) -> list[str | md.Rows]:
    name = printable(Path(rep["trace"]).name)
    arg = shlex.quote(name)
    return [
        "### The attached trace",
        "",
        f"{md.code(name)} is a qdebug trace (HDF5, schema {md.text(rep['schema_version'])}); "
        "reading it needs no TensorFlow:",
        "",
        "```sh",
        "pip install qdebug",
        f"qdebug report {arg}            # these numbers",
        f"qdebug view {arg}              # explore layer by layer",
        f"qdebug export {arg} --tflite model_int8.tflite --inputs inputs.npz",
        "```",
        "",
        "`qdebug export` writes back the exact INT8 model that was run and the stored inputs.",
    ]


def report_markdown(trace: Trace, chart: str | None = None,
                    limit: int = md.BODY_LIMIT) -> str:
    """The trace as a GitHub-issue section: environment, model, outputs, float islands,
    culprits (or the worst layers), a per-layer table, and how to open the trace; ``chart``
    (a picture's address) is linked under the headline. At most ``limit`` characters."""
    rep = report_dict(trace)
    out = rep["output"]
    headline = f"output SQNR {db(_f(out['sqnr_db']))} dB"
    if out.get("top1_agreement") is not None:
        headline += f", top-1 agreement {pct(_f(out['top1_agreement']))}"
    if out.get("float_accuracy") is not None:
        flipped = out["flipped"]
        headline += (
            f", accuracy {pct(_f(out['float_accuracy']))} float → "
            f"{pct(_f(out['int8_accuracy']))} int8 ({len(flipped['right_to_wrong'])} right→wrong, "
            f"{len(flipped['wrong_to_right'])} wrong→right)"
        )
    head: list[str | md.Rows] = [f"## qdebug report: {md.code(rep['model']['name'])}", ""]
    if chart:  # the picture under the title, so a bug report shows it first
        head += [f"![error by depth]({md.link(chart)})", ""]
    head.append(f"**{headline}** over {rep['samples']} samples, {len(rep['layers'])} layers.")
    sections = [
        head,
        _environment(rep),
        _model(rep),
        _outputs(rep),
        _kernels(rep),
        _custom(rep),
        _islands(rep),
        _culprits(rep, trace),
        _layer_table(rep),
        _how_to_open(rep),
    ]
    return md.fold(sections, limit)
