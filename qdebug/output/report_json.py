"""Reports of a trace for scripts and people. Reads the store only; never imports TensorFlow."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from qdebug.analysis.accuracy import accuracy
from qdebug.analysis.kernels import kernels_comparison
from qdebug.analysis.ranking import lowest
from qdebug.output.channels import worst_channels
from qdebug.output.jsonout import dumps
from qdebug.output.jsonout import num as _num
from qdebug.store.meta import QuantizerInfo
from qdebug.store.reader import Trace
from qdebug.store.schema import REQUIRED_METRICS

#: Per-layer metrics written explicitly below; any other pooled metric the trace has (e.g. the
#: propagation analysis' ``local_sqnr_db``, ``gain``) is appended to each layer as well.
_LAYER_METRICS = REQUIRED_METRICS


def report_dict(trace: Trace) -> dict[str, Any]:
    """The trace as plain data: model, output, layers in topological order.

    Metric values that are NaN (no tensor) are ``None``; ±inf stays a float (``report_json``
    writes it as ``"inf"`` / ``"-inf"``).
    """
    meta = trace.meta
    custom = trace.custom_metrics()
    outputs = _outputs(trace)
    layers = _layers(trace, custom)
    first = outputs[0] if outputs else {}
    acc = accuracy(trace)
    return {
        "schema_version": trace.schema_version,
        "quantizer": _quantizer(meta.quantizer),  # what made the deployed model
        "trace": str(trace.path),
        "model": {
            "name": trace.model_name,
            "source": _text(meta.model_source),
            "sha256": _text(meta.model_sha256),
            "keras_flavour": _text(meta.keras_flavour),
            "converter": meta.raw.get("converter"),  # the settings as recorded
            "tflite_source": _text(meta.tflite_source),
            "kernels": _text(meta.kernels),
            "deployed": _text(meta.deployed),
        },
        "view": trace.view,
        "versions": {k: v for k, v in meta.raw.items() if k.endswith("_version")},
        "samples": trace.n_samples,
        "run": {
            "created": _text(meta.created), "command_line": _text(meta.command_line),
            "data_source": _text(meta.data_source), "calib_source": _text(meta.calib_source),
            "platform": meta.raw.get("platform"),
        },
        "stored_samples": [int(s) for s in trace.stored_samples],
        "output": {
            "sqnr_db": first.get("sqnr_db"),
            "top1_agreement": first.get("top1_agreement"),
            # Task accuracy against labels (--labels); None without labels.
            "float_accuracy": _num(acc.float_accuracy) if acc else None,
            "int8_accuracy": _num(acc.int8_accuracy) if acc else None,
            "flipped": acc.flipped() if acc else None,
            "labels": {"source": acc.source, "output": acc.output} if acc else None,
            "outputs": outputs,
        },
        "float_islands": [asdict(i) for i in trace.float_islands],
        "deployment_kernels": _kernels(trace),
        "instrumentation": {
            "mismatched_samples": meta.instrumentation_mismatched_samples,
            "checked_samples": meta.instrumentation_checked_samples,
            "max_abs_diff": _num(meta.instrumentation_max_abs_diff),
        },
        "warnings": list(meta.warnings),
        "custom_metrics": [
            {"name": m.name, "kind": m.kind, "unit": m.unit, "definition": m.definition,
             "source": m.source, "error": m.error or None}
            for m in custom.values()
        ],
        "output_metrics": [
            {"name": m.name, "kind": m.kind, "unit": m.unit, "definition": m.definition,
             "source": m.source, "value": _num(m.values[0]),
             "samples": None if m.samples is None else int(m.samples[0]),
             "error": m.error or None}
            for m in trace.custom_metrics("model").values()
        ],
        "culprits": [
            {"layer": c.layer, "index": c.index, "kind": c.kind, "score": _num(c.score),
             "reason": c.reason, "output": c.output}
            for c in trace.culprits()
        ],
        "layers": layers,
        "ops": op_rows(trace),
    }


def _outputs(trace: Trace) -> list[dict[str, Any]]:
    """Every model output with its metrics."""
    om = trace.output_metrics()
    custom_out = trace.custom_metrics("outputs")
    return [
        {
            "name": o.name,
            "tensor": o.tensor_name,
            "sqnr_db": _num(om["sqnr_db"][j]),
            "rmse_lsb": _num(om["rmse_lsb"][j]),
            "mse": _num(om["mse"][j]),
            "max_abs_error": _num(om["max_abs_error"][j]),
            "cosine": _num(om["cosine"][j]),
            "saturation": _num(om["saturation"][j]),
            "top1_agreement": _num(om["top1_agreement"][j]),
            "custom_metrics": {k: _num(m.values[j]) for k, m in custom_out.items()},
        }
        for j, o in enumerate(trace.outputs)
    ]


def _layers(trace: Trace, custom: dict[str, Any]) -> list[dict[str, Any]]:
    """Every layer (or op, in an ops-only trace) with its metrics and ``custom`` metrics
    (``trace.custom_metrics()``), in topological order."""
    lm = trace.typed_layer_metrics()
    return [
        {
            "index": i,
            "name": r.name,
            "class": r.class_name,
            "op": r.op_type,
            "tensor": r.tensor_name,
            "status": r.status,
            "related": r.related,
            "inbound": r.inbound,
            "output_shape": r.output_shape,
            "dtype": r.dtype,
            "scale": _num(r.scale),
            "zero_point": r.zero_point,
            "float_island": r.float_island,
            "sqnr_db": _num(lm.sqnr_db[i]),
            "rmse_lsb": _num(lm.rmse_lsb[i]),
            "mse": _num(lm.mse[i]),
            "max_abs_error": _num(lm.max_abs_error[i]),
            "mean_error": _num(lm.mean_error[i]),
            "cosine": _num(lm.cosine[i]),
            "saturation": _num(lm.saturation[i]),
            "clip_fraction": _num(lm.clip_fraction[i]),
            "tensor_index": r.tensor_index,
            "ops": r.ops,
            "precision": trace.precision(i),
            **{k: _num(v[i]) for k, v in lm.as_dict().items() if k not in _LAYER_METRICS},
            "channels": worst_channels(trace.channel_stats(i), trace.weight_channels(i)),
            "custom_metrics": {k: _num(m.values[i]) for k, m in custom.items()},
        }
        for i, r in enumerate(trace.layers)
    ]


def _text(value: str | None) -> str | None:
    """A text attribute for the report: None (null) where the trace has none."""
    return value or None


def worst_layers(trace: Trace, n: int = 5) -> list[tuple[int, float]]:
    """(index, SQNR dB) of the ``n`` ranked layers (matched and verified) with the lowest
    SQNR; a layer whose tensor could not be verified never appears."""
    sq = trace.typed_layer_metrics().sqnr_db
    return [(i, float(sq[i])) for i in lowest(trace.layers, sq, n)]


def _kernels(trace: Trace) -> dict[str, Any]:
    """``--xnnpack``: XNNPACK's outputs and accuracy beside the reference kernels'."""
    meta = trace.meta
    k = kernels_comparison(trace)
    return {
        "delegated_ops": list(meta.delegated_ops),
        "mismatched_samples": meta.kernel_mismatched_samples,
        "max_abs_diff": _num(meta.kernel_max_abs_diff),
        "outputs": [
            {"name": o.name, "sqnr_db": _num(o.deployment_sqnr_db),
             "top1_agreement": _num(o.deployment_top1),
             "max_abs_diff": _num(o.max_diff), "max_abs_diff_lsb": _num(o.max_diff_lsb),
             "reference_sqnr_db": _num(o.reference_sqnr_db),
             "reference_top1_agreement": _num(o.reference_top1)}
            for o in k.outputs
        ] if k is not None else [],
        "accuracy": _num(k.deployment_accuracy) if k is not None else None,
    }


def _quantizer(q: QuantizerInfo) -> dict[str, Any]:
    """What made the deployed model (schema 1.4; derived for older traces)."""
    return {"name": q.name, "version": q.version, "recipe_name": q.recipe_name,
            "recipe": [dict(e) for e in q.recipe], "repairs": list(q.repairs)}


def op_rows(trace: Trace) -> list[dict[str, Any]]:
    """Every op of the deployed model with its metrics (empty for traces before schema 1.2)."""
    om = trace.op_metrics()
    custom = trace.custom_metrics("ops") if trace.ops else {}
    return [
        {
            "index": i,
            "op_index": o.index,
            "op": o.op_type,
            "name": o.name,
            "tensor": o.tensor_name,
            "layer": o.layer,
            "status": o.status,
            "inputs": o.inputs,
            "dtype": o.dtype,
            "scale": _num(o.scale),
            "zero_point": o.zero_point,
            "has_local": o.has_local,
            "precision": o.precision,
            **{k: _num(v[i]) for k, v in om.items()},
            "custom_metrics": {k: _num(m.values[i]) for k, m in custom.items()},
        }
        for i, o in enumerate(trace.ops)
    ]


def report_json(trace: Trace) -> str:
    """``report_dict`` as indented JSON, ±inf as ``"inf"`` / ``"-inf"`` (``jsonout``)."""
    return dumps(report_dict(trace))
