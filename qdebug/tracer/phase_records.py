"""The frozen records the phases of a trace return (``qdebug.tracer.pipeline``), and the
trace's root attributes made from them (docs/trace-format.md)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qdebug.shards.slicing import ATTR_STORE, ShardSlice
from qdebug.store.meta import (
    QUANTIZER_AEQ,
    QUANTIZER_CONVERTER,
    QUANTIZER_GIVEN,
    DeployedKind,
)
from qdebug.store.schema import ATTR_TFLITE_SHA256, VIEW_LAYERS, VIEW_OPS, LayerRecord
from qdebug.tracer import convert as conv
from qdebug.tracer.aeq import AeqResult
from qdebug.tracer.data import InputSpec, SampleSource
from qdebug.tracer.graph import LayerGraph
from qdebug.tracer.labels import Labels
from qdebug.tracer.litert import LiteModel, kernels_text
from qdebug.tracer.loading import LoadedModel
from qdebug.tracer.oprows import OpTable
from qdebug.tracer.options import TraceOptions, software_versions
from qdebug.tracer.segment_runner import SegmentRunner
from qdebug.tracer.verify import LocalRefs


@dataclass(frozen=True)
class Prepared:
    """What the run starts from: the model's form, its inputs, the data and calibration data."""

    graph: LayerGraph | None
    """The Keras layer graph; None for a model traced as ops."""
    conv_model: Any
    """What the converter takes (None for a float ``.tflite``)."""
    specs: list[InputSpec]
    float_bytes: bytes | None
    """The float ``.tflite`` where there is one already (a model traced as ops)."""
    data: SampleSource
    calib: SampleSource
    first: list[list[np.ndarray]]
    """The verification samples (the data's first), on which layers are matched."""
    shard: ShardSlice[SampleSource] | None
    labels: Labels | None

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def layer_names(self) -> list[str]:
        return [n.name for n in self.graph.nodes] if self.graph is not None else []

    @property
    def first_sample(self) -> int:
        """Global position of the first traced sample (a shard's slice start)."""
        return self.shard.info.start if self.shard is not None else 0


@dataclass(frozen=True)
class Converted:
    """The deployed model, its float twin and the converter settings that made them."""

    int8_bytes: bytes
    twin_bytes: bytes
    options: conv.ConversionOptions
    aeq: AeqResult | None = None
    """How ai-edge-quantizer made the deployed model (None: the converter, or ``--tflite``)."""
    keep_float_ops: tuple[str, ...] = ()
    """The op names the conversion left in float for ``--keep-float`` (``conv.Conversion``)."""
    keras_export: str = ""
    """How the Keras model reached the converter (``conv.Conversion``)."""
    calibration: str = ""
    """How the calibration was made (``conv.Conversion``)."""


@dataclass(frozen=True)
class Matched:
    """The interpreters, the op table, and the layers (or ops) matched to tensors."""

    int8: LiteModel
    plain: LiteModel
    deploy: LiteModel | None
    twin: LiteModel
    table: OpTable
    local: LocalRefs | None
    records: list[LayerRecord]
    outputs: list[Any]
    out_index: Any
    runner: SegmentRunner | None
    weights: Any
    op_local: frozenset[str]
    """Layers whose local error is their single op's (``trace_loop.op_local_layers``)."""



def trace_attrs(
    loaded: LoadedModel, opt: TraceOptions, prep: Prepared, converted: Converted,
    matched: Matched, deployed: str, stored: int,
) -> dict[str, Any]:
    """The trace's root attributes (docs/trace-format.md)."""
    attrs: dict[str, Any] = {
        **software_versions(loaded.flavour),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command_line": opt.command_line or " ".join(sys.argv),
        "model_name": loaded.name,
        "model_source": loaded.source,
        "model_sha256": loaded.sha256,
        "keras_flavour": loaded.flavour,
        "data_source": prep.data.description,
        "calib_source": (
            prep.calib.description if opt.tflite is None
            else f"none: {Path(str(opt.tflite)).name} was given, calibrated already"
        ),
        "tflite_source": str(opt.tflite) if opt.tflite else "converted",
        "converter": (
            {**converted.options.as_dict(converted.keep_float_ops, converted.keras_export,
                                         converted.calibration),
             "calib_samples": prep.calib.taken}
            if opt.tflite is None and converted.aeq is None else {}
        ),
        "quantizer": quantizer_attr(opt, converted),
        "kernels": kernels_text(matched.int8, matched.deploy),
        "delegated_ops": matched.deploy.delegated_ops() if matched.deploy is not None else [],
        "input_names": prep.input_names,
        "view": VIEW_LAYERS if prep.graph is not None else VIEW_OPS,
        "deployed": deployed,
        "deployed_kind": DeployedKind.of(deployed).value,
        "reference": "float twin (the converter's float model, op by op)",
        "op_local_error": matched.local.method if matched.local else "not available",
    }
    if prep.shard is not None:
        attrs.update(prep.shard.info.attrs())
        attrs[ATTR_STORE] = stored  # what this run kept: the merge's budget
        attrs[ATTR_TFLITE_SHA256] = hashlib.sha256(converted.int8_bytes).hexdigest()
    return attrs


def quantizer_attr(opt: TraceOptions, converted: Converted) -> dict[str, Any]:
    """Root attribute ``quantizer`` (schema 1.4): what made the deployed model, its version,
    and the recipe ai-edge-quantizer applied."""
    if converted.aeq is not None:
        aeq = converted.aeq
        return {"name": QUANTIZER_AEQ, "version": aeq.version, "recipe_name": aeq.recipe_name,
                "recipe": json.loads(aeq.recipe_json), "repairs": list(aeq.repairs),
                "calib_samples": aeq.calibrated}
    if opt.tflite is not None:
        return {"name": QUANTIZER_GIVEN, "version": "", "recipe_name": "", "recipe": []}
    import tensorflow as tf

    return {"name": QUANTIZER_CONVERTER, "version": tf.__version__,
            "recipe_name": converted.options.scheme, "recipe": []}
