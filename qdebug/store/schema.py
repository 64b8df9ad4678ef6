"""The trace format: its names, version and the typed records of its tables. See
``docs/trace-format.md``; ``qdebug.store.meta`` types the root attributes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

FORMAT_NAME = "qdebug-trace"
#: ``major.minor``. Readers refuse another major; a newer minor only adds things.
SCHEMA_VERSION = "1.5"
SCHEMA_MAJOR = int(SCHEMA_VERSION.split(".")[0])
#: Root attribute: sha256 of ``/model/int8_tflite`` (shards, merged traces, ``--no-model`` copies).
ATTR_TFLITE_SHA256 = "int8_tflite_sha256"
#: Root attribute (1.3): true in a copy made by ``export --slim --no-model``, which has no
#: ``/model/int8_tflite``.
ATTR_NO_MODEL = "model_removed"

#: Match statuses of a layer (column ``status`` of ``/layers``).
STATUS_MATCHED = "matched"  # own TFLite tensor, verified numerically against a float twin
STATUS_INPUT = "input"  # a model input
STATUS_UNVERIFIED = "unverified"  # a tensor was found but the numerical check failed
STATUS_FUSED = (
    "fused"  # computed inside the op of a later layer (``related``), no tensor of its own
)
STATUS_FOLDED = "folded"  # no op at all (Dropout, identity); its value is the tensor of ``related``
STATUS_UNMATCHED = "unmatched"  # no tensor and no layer it went into was found
STATUSES = (
    STATUS_MATCHED,
    STATUS_INPUT,
    STATUS_UNVERIFIED,
    STATUS_FUSED,
    STATUS_FOLDED,
    STATUS_UNMATCHED,
)
#: Statuses whose layer has a tensor of its own, hence metrics.
MEASURED = (STATUS_MATCHED, STATUS_INPUT, STATUS_UNVERIFIED)
#: Statuses whose metrics may be ranked (worst layers, culprits, summary, diff verdicts): an
#: ``unverified`` row (written by schema ≤ 1.1 tracers) may hold another tensor's numbers.
RANKED = (STATUS_MATCHED, STATUS_INPUT)

#: The two views a trace can have (root attribute ``view``): Keras layers over the op graph,
#: or the ops themselves when the model has no Keras layer graph.
VIEW_LAYERS = "layers"
VIEW_OPS = "ops"


@dataclass
class LayerRecord:
    """One row of the layer table, in topological order."""

    name: str
    """Keras layer name; layers of nested models are ``outer/inner``."""
    class_name: str
    inbound: list[str] = field(default_factory=list)
    """Names of the layers whose outputs this layer consumes."""
    output_shape: list[int | None] = field(default_factory=list)
    status: str = STATUS_UNMATCHED
    related: str = ""
    """For ``fused``: the layer whose tensor holds the result; for ``folded``: the layer whose
    tensor holds the same value."""
    tensor_name: str = ""
    tensor_index: int = -1
    op_type: str = ""
    dtype: str = ""
    """``int8`` (or ``int16``) when quantized, ``float32`` for a float island."""
    scale: float = math.nan
    zero_point: int = 0
    match_rel_error: float = math.nan
    """‖keras − twin‖ / ‖keras‖ on the verification samples."""
    float_island: bool = False
    ops: list[int] = field(default_factory=list)
    """Rows of ``/ops`` this layer lowered to, in execution order; the last one computes its
    tensor. Empty for layers without ops of their own (schema 1.2; empty in older traces)."""

    @property
    def measured(self) -> bool:
        """Whether the layer has a tensor of its own and therefore metrics."""
        return self.status in MEASURED

    @property
    def ranked(self) -> bool:
        """Whether the layer's metrics may appear in rankings (matched and verified)."""
        return self.status in RANKED


#: Columns of ``/layers`` in order, with the HDF5 kind of each: s=string, j=JSON string,
#: i=int64, f=float64, b=bool.
LAYER_COLUMNS: dict[str, str] = {
    "name": "s",
    "class_name": "s",
    "inbound": "j",
    "output_shape": "j",
    "status": "s",
    "related": "s",
    "tensor_name": "s",
    "tensor_index": "i",
    "op_type": "s",
    "dtype": "s",
    "scale": "f",
    "zero_point": "i",
    "match_rel_error": "f",
    "float_island": "b",
    "ops": "j",
}
#: Columns a reader fills with their default when an older trace lacks them.
LAYER_OPTIONAL = ("ops",)

assert list(LAYER_COLUMNS) == [f.name for f in fields(LayerRecord)]


@dataclass
class OutputRecord:
    """One model output."""

    name: str
    layer: str
    """The Keras layer producing it."""
    tensor_name: str
    scale: float = math.nan
    zero_point: int = 0
    classifier: bool = False
    """Whether top-1 agreement applies (rank-2 output with more than one class)."""


OUTPUT_COLUMNS: dict[str, str] = {
    "name": "s",
    "layer": "s",
    "tensor_name": "s",
    "scale": "f",
    "zero_point": "i",
    "classifier": "b",
}
assert list(OUTPUT_COLUMNS) == [f.name for f in fields(OutputRecord)]


#: Op statuses (column ``status`` of ``/ops``).
OP_MEASURED = "measured"  # an activation tensor compared with the float twin's
OP_INTEGER = "integer"  # computes integer values (shapes, indices): nothing to compare
OP_UNMAPPED = "unmapped"  # no counterpart in the float twin (e.g. the output's DEQUANTIZE)
OP_HIDDEN = "hidden"  # run inside a delegate: its tensor is not readable


@dataclass
class OpRecord:
    """One operator of the deployed model, in execution order (a row of ``/ops``)."""

    index: int
    """The op's index in the ``.tflite`` subgraph."""
    op_type: str
    name: str
    """A readable label: the op's scope in the model (``block1/conv``), unique in the table."""
    tensor_name: str
    tensor_index: int
    dtype: str
    scale: float = math.nan
    zero_point: int = 0
    inputs: list[int] = field(default_factory=list)
    """Rows of ``/ops`` whose tensors this op consumes (graph inputs: the QUANTIZE row)."""
    layer: str = ""
    """The Keras layer this op belongs to (``""``: none, or no layer view)."""
    status: str = OP_MEASURED
    has_local: bool = False
    """Whether the local error was measured (the float op fed the quantized model's own
    dequantized inputs, from the converter's numeric-verify model)."""
    precision: str = ""
    """What the op computes in (schema 1.4): ``int8``, ``int16`` (its output's quantized type),
    ``dynamic`` (float output, int8 weights: activations quantized inside the kernel),
    ``float``; ``""`` for ops computing integers (shapes, indices) and in older traces."""

    @property
    def measured(self) -> bool:
        """Whether the op has metrics."""
        return self.status == OP_MEASURED


OP_COLUMNS: dict[str, str] = {
    "index": "i",
    "op_type": "s",
    "name": "s",
    "tensor_name": "s",
    "tensor_index": "i",
    "dtype": "s",
    "scale": "f",
    "zero_point": "i",
    "inputs": "j",
    "layer": "s",
    "status": "s",
    "has_local": "b",
    "precision": "s",
}
#: Op columns added after 1.2 (absent from older traces: their defaults).
OP_OPTIONAL = ("precision",)
assert list(OP_COLUMNS) == [f.name for f in fields(OpRecord)]


#: Pooled metrics every trace has (schema 1.0 on): a reader refuses a trace without them, and
#: reports write them first for every layer.
REQUIRED_METRICS: tuple[str, ...] = (
    "sqnr_db", "rmse_lsb", "mse", "max_abs_error", "mean_error", "cosine", "saturation",
    "clip_fraction",
)


class CulpritKind(StrEnum):
    """Why a culprit matters (column ``kind`` of ``/analysis/culprits``). A ``str``: written
    to the trace and compared as its text."""

    FLOAT_ISLAND = "float island"
    AMPLIFIES = "amplifies"
    CLIPPING = "clipping"
    RESOLUTION = "resolution"
    INJECTS = "injects"
    ROUNDING = "rounding"


@dataclass(frozen=True)
class Culprit:
    """One ranked layer and why it matters (a row of ``/analysis/culprits``)."""

    layer: str
    """The layer's name."""
    index: int
    """Its row in ``/layers``."""
    kind: CulpritKind | str
    """Why; a kind this qdebug does not know (a newer trace) stays its text."""
    score: float
    """Its error relative to the output's (see docs/metrics.md); higher matters more."""
    reason: str
    """One line for people."""
    output: str = ""
    """The model output whose error it is about (its name): each output not healthy has its
    own culprits. Traces written before read as their first output."""


#: The member of an ``qdebug export --inputs`` ``.npz`` holding each row's position in the
#: traced data (``int64``, one per sample); ``qdebug trace --data`` passes over it.
SAMPLE_INDEX = "qdebug_sample_index"


class CulpritRanker(Protocol):
    """Ranks the culprits of a finished trace: (layer table, pooled layer metrics, pooled
    statistics, first output's SQNR in dB, first output's layer; its top-1 agreement, the op
    table with its pooled metrics and statistics) → culprits, best first. The writer is given
    one (``qdebug.analysis.culprits.find_culprits``) so that the store does not rank."""

    def __call__(
        self,
        layers: Sequence[LayerRecord],
        m: dict[str, np.ndarray],
        stats: dict[str, np.ndarray],
        output_sqnr_db: float,
        output_layer: str = "",
        *,
        top1_agreement: float = ...,
        ops: Sequence[OpRecord] = ...,
        op_m: dict[str, np.ndarray] | None = ...,
        op_stats: dict[str, np.ndarray] | None = ...,
    ) -> Sequence[Culprit]: ...


@dataclass(frozen=True)
class FloatIsland:
    """An op of the INT8 model whose output stays float32 (a row of ``/model/float_islands``).

    Subscriptable by column name as well, as the dicts of earlier versions were."""

    op_index: int
    """The op's index in the ``.tflite``."""
    op_type: str
    """``NEG``, ``FULLY_CONNECTED``, …"""
    tensor_name: str
    """Its output tensor in the deployed model."""

    def __getitem__(self, column: str) -> Any:
        if column not in FLOAT_ISLAND_COLUMNS:
            raise KeyError(column)
        return getattr(self, column)

    @classmethod
    def of(cls, row: FloatIsland | Mapping[str, Any]) -> FloatIsland:
        """A record from a record or a mapping with the three columns."""
        if isinstance(row, FloatIsland):
            return row
        return cls(int(row["op_index"]), str(row["op_type"]), str(row["tensor_name"]))


FLOAT_ISLAND_COLUMNS: dict[str, str] = {"op_index": "i", "op_type": "s", "tensor_name": "s"}
assert list(FLOAT_ISLAND_COLUMNS) == [f.name for f in fields(FloatIsland)]


class ChannelSums(Protocol):
    """Per-channel sums (last axis) of one layer over all samples, as ``/analysis/channels``
    stores them."""

    sum_f2: np.ndarray
    sum_e2: np.ndarray
    clipped: np.ndarray
    saturated: np.ndarray | None


@dataclass(frozen=True)
class AnalysisArrays:
    """What the tracer hands the writer for ``/analysis`` and ``/samples/worst``."""

    channels: Mapping[int, ChannelSums]
    """Per layer index, its per-channel sums."""
    float_min: np.ndarray
    """Per layer, the smallest float reference value seen."""
    float_max: np.ndarray
    quantized_min: np.ndarray
    """Per layer, the smallest raw integer of the quantized tensor seen (stored as
    ``int8_min`` whatever the bits: the trace format's name)."""
    quantized_max: np.ndarray
    worst_index: np.ndarray
    """The samples with the lowest output SQNR, worst first."""
    segment_check: np.ndarray
    """Per layer, ‖f_s − f‖/‖f‖ of the re-run segment on the first batch (NaN: none)."""
    worst_inputs: Sequence[Sequence[np.ndarray]]
    """The model inputs of each worst sample."""

    @classmethod
    def of(cls, analysis: AnalysisArrays | Mapping[str, Any]) -> AnalysisArrays:
        """A record from a record or from ``Measurer.analysis()``'s dict (keys as stored:
        ``int8_min``/``int8_max`` for the quantized ranges)."""
        if isinstance(analysis, AnalysisArrays):
            return analysis
        return cls(
            channels=analysis["channels"],
            float_min=analysis["float_min"],
            float_max=analysis["float_max"],
            quantized_min=analysis["int8_min"],
            quantized_max=analysis["int8_max"],
            worst_index=analysis["worst_index"],
            segment_check=analysis["segment_check"],
            worst_inputs=analysis["worst_inputs"],
        )
