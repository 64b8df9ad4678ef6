"""``qdebug report --format markdown``: a section to paste into a GitHub issue.

Built from ``report_dict`` (so it carries whatever the JSON report carries, such as the
propagation analysis' ``culprits``) plus the worst layers by accumulated SQNR.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from qdebug.output.fmt import db, pct, plain, printable
from qdebug.output.report_json import report_dict, worst_layers
from qdebug.store.reader import Trace

#: Optional per-layer fields of the propagation analysis shown in the layer table when present.
_ANALYSIS_COLUMNS = (("local_sqnr_db", "local SQNR (dB)", db), ("gain", "gain", plain))
_VERSIONS = ("qdebug", "tensorflow", "keras", "litert", "numpy", "h5py", "python")


def _f(value: Any) -> float:
    """A report value as a float (None, i.e. NaN or no value, becomes NaN)."""
    return math.nan if value is None else float(value)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return printable(text).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _environment(rep: dict[str, Any]) -> list[str]:
    v = rep["versions"]
    rows = [[name, str(v.get(f"{name}_version", "?"))] for name in _VERSIONS]
    rows.append(["keras flavour", str(rep["model"].get("keras_flavour"))])
    rows.append(["platform", str(rep["run"].get("platform") or "?")])
    return ["### Environment", "", *_table(["component", "version"], rows)]


def _model(rep: dict[str, Any]) -> list[str]:
    m, run = rep["model"], rep["run"]
    conv = m.get("converter") or {}
    lines = [
        "### Model and conversion",
        "",
        f"- model: `{m['name']}` from {m.get('source')} (sha256 `{m.get('sha256')}`)",
        f"- INT8 model: {m.get('tflite_source')}; kernels: {m.get('kernels')}",
    ]
    if conv:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(conv.items()))
        lines.append(f"- converter: {settings}")
    lines.append(
        f"- data: {run.get('data_source')} ({rep['samples']} samples, "
        f"{len(rep['stored_samples'])} stored); calibration: {run.get('calib_source')}"
    )
    if run.get("command_line"):
        lines.append(f"- command: `{run['command_line']}`")
    return lines


def _outputs(rep: dict[str, Any]) -> list[str]:
    rows = [
        [o["name"], db(_f(o["sqnr_db"])), plain(_f(o["rmse_lsb"])), plain(_f(o["cosine"]), 5),
         pct(_f(o["saturation"])), pct(_f(o["top1_agreement"]))]
        for o in rep["output"]["outputs"]
    ]
    header = ["output", "SQNR (dB)", "RMSE (LSB)", "cosine", "saturation", "top-1 agreement"]
    lines = ["### Output", "", *_table(header, rows)]
    inst = rep["instrumentation"]
    if inst.get("mismatched_samples"):
        lines += ["", f"⚠ instrumentation changed the output of {inst['mismatched_samples']} "
                  f"sample(s) (max difference {inst['max_abs_diff']})"]
    lines += [f"- warning: {w}" for w in rep.get("warnings") or []]
    return lines


def _islands(rep: dict[str, Any]) -> list[str]:
    islands = rep["float_islands"]
    if not islands:
        return ["### Float islands", "", "None: every op of the INT8 model computes in integers."]
    rows = [[str(i["op_index"]), i["op_type"], i["tensor_name"]] for i in islands]
    return ["### Float islands", "", *_table(["op", "type", "tensor"], rows)]


def _culprit_row(item: Any) -> list[str]:
    if isinstance(item, dict):
        name = item.get("layer", item.get("name", "?"))
        return [str(name), str(item.get("kind", "")), str(item.get("reason", ""))]
    return [str(item), "", ""]


def _culprits(rep: dict[str, Any], trace: Trace) -> list[str]:
    culprits = rep.get("culprits")
    if culprits:
        rows = [_culprit_row(c) for c in culprits]
        return ["### Culprits", "", *_table(["layer", "kind", "reason"], rows)]
    layers = rep["layers"]
    rows = [
        [layers[i]["name"], layers[i]["class"], layers[i]["op"], db(sq),
         plain(_f(layers[i]["rmse_lsb"])), pct(_f(layers[i]["saturation"])),
         pct(_f(layers[i]["clip_fraction"]))]
        for i, sq in worst_layers(trace)
    ]
    header = ["layer", "class", "op", "SQNR (dB)", "RMSE (LSB)", "saturation", "clipped"]
    return ["### Worst layers (accumulated SQNR)", "",
            "The trace has no propagation analysis, so no culprits with reasons.", "",
            *_table(header, rows)]


def _layer_table(rep: dict[str, Any]) -> list[str]:
    layers = rep["layers"]
    extra = [c for c in _ANALYSIS_COLUMNS if layers and c[0] in layers[0]]
    header = ["#", "layer", "class", "op", "status", "SQNR (dB)", "RMSE (LSB)", "saturation",
              *(c[1] for c in extra)]
    rows = [
        [str(r["index"]), r["name"], r["class"], r["op"] or "—",
         r["status"] + (f" → {r['related']}" if r["related"] else ""),
         db(_f(r["sqnr_db"])), plain(_f(r["rmse_lsb"])), pct(_f(r["saturation"])),
         *(fmt(_f(r[key])) for key, _, fmt in extra)]
        for r in layers
    ]
    return ["### Per-layer", "", f"<details><summary>{len(layers)} layers</summary>", "",
            *_table(header, rows), "", "</details>"]


def _how_to_open(rep: dict[str, Any]) -> list[str]:
    name = Path(rep["trace"]).name
    return [
        "### The attached trace",
        "",
        f"`{name}` is a qdebug trace (HDF5, schema {rep['schema_version']}); reading it needs "
        "no TensorFlow:",
        "",
        "```sh",
        "pip install qdebug",
        f"qdebug report {name}            # these numbers",
        f"qdebug view {name}              # explore layer by layer",
        f"qdebug export {name} --tflite model_int8.tflite --inputs inputs.npz",
        "```",
        "",
        "`qdebug export` writes back the exact INT8 model that was run and the stored inputs.",
    ]


def report_markdown(trace: Trace) -> str:
    """The trace as a GitHub-issue section: environment, model, outputs, float islands,
    culprits (or the worst layers), a per-layer table, and how to open the trace."""
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
    sections = [
        [f"## qdebug report: `{rep['model']['name']}`", "",
         f"**{headline}** over {rep['samples']} samples, {len(rep['layers'])} layers."],
        _environment(rep),
        _model(rep),
        _outputs(rep),
        _islands(rep),
        _culprits(rep, trace),
        _layer_table(rep),
        _how_to_open(rep),
    ]
    # Names, paths and warnings come from the trace: every line is made safe for a terminal.
    return "\n\n".join("\n".join(printable(line) for line in s) for s in sections) + "\n"
