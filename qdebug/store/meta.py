"""The trace's root attributes as a typed, frozen record (docs/trace-format.md, "Root
attributes"): what ``Trace.meta`` returns. Readers use its fields; ``raw`` keeps every attribute
as read (for ``qdebug merge``, which copies them, and for attributes newer than this module).
Nothing here is trusted more than the file: a field of the wrong type reads as its default."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class DeployedKind(enum.Enum):
    """What the deployed model is (root attribute ``deployed_kind``, schema 1.3; derived from
    the ``deployed`` phrase for older traces). The value is the attribute's text."""

    FULL_INTEGER = "full integer"
    INTEGER_WITH_FLOAT_OPS = "integer with float ops"
    INT16X8 = "int16x8"
    MIXED_INTEGER = "mixed integer"
    """int8 and int16 activations, op by op (a per-op recipe; schema 1.4)."""
    DYNAMIC_RANGE = "dynamic range"
    WEIGHT_ONLY = "weight-only"
    FLOAT16 = "float16"
    FLOAT = "float"
    UNKNOWN = "unknown"

    @classmethod
    def of(cls, deployed: str) -> DeployedKind:
        """The kind the ``deployed`` phrase (``LiteModel.describe``) names."""
        text = deployed.strip()
        if text.startswith("full integer"):
            return cls.FULL_INTEGER
        if text.startswith("int16x8"):
            return cls.INT16X8
        if text.startswith("mixed integer"):
            return cls.MIXED_INTEGER
        if text.startswith("integer"):
            return cls.INTEGER_WITH_FLOAT_OPS
        if text.startswith("dynamic range"):
            return cls.DYNAMIC_RANGE
        if text.startswith("weight-only"):
            return cls.WEIGHT_ONLY
        if text.startswith("float16"):
            return cls.FLOAT16
        if text.startswith("float"):
            return cls.FLOAT
        return cls.UNKNOWN

    @property
    def quantized_activations(self) -> bool:
        """Whether activations between ops are integers in the deployed model."""
        return self in (DeployedKind.FULL_INTEGER, DeployedKind.INTEGER_WITH_FLOAT_OPS,
                        DeployedKind.INT16X8, DeployedKind.MIXED_INTEGER)


@dataclass(frozen=True)
class ConverterSettings:
    """Root attribute ``converter``: how qdebug converted the model (empty for ``--tflite``)."""

    calib_samples: int | None = None
    int8_io: bool = False
    optimizations: str = ""
    supported_ops: str = ""
    keep_float: tuple[str, ...] = ()
    keep_float_ops: tuple[str, ...] = ()
    scheme: str = ""
    keras_export: str = ""
    calibration: str = ""
    """How the calibration was made (1.5): ``two threads``, ``the calibrator (why)``."""

    @property
    def converted(self) -> bool:
        """False for a given ``--tflite`` (qdebug converted nothing)."""
        return bool(self.supported_ops or self.optimizations)


#: Root attribute ``quantizer``'s ``name`` (schema 1.4): what made the deployed model.
QUANTIZER_CONVERTER = "converter"
QUANTIZER_AEQ = "ai-edge-quantizer"
QUANTIZER_GIVEN = "given"
"""A model given with ``--tflite``: qdebug did not quantize it."""


@dataclass(frozen=True)
class QuantizerInfo:
    """Root attribute ``quantizer`` (schema 1.4; derived from ``tflite_source`` before)."""

    name: str = QUANTIZER_GIVEN
    """``converter``, ``ai-edge-quantizer`` or ``given``."""
    version: str = ""
    recipe_name: str = ""
    """AEQ: the recipe as given (a name, a file's path, ``custom``); converter: its scheme."""
    recipe: tuple[Mapping[str, Any], ...] = ()
    """AEQ: the recipe's entries as it applied them (``qdebug export`` writes them)."""
    repairs: tuple[str, ...] = ()
    """AEQ: what qdebug repaired in the float ``.tflite`` before quantizing it."""

    def describe(self) -> str:
        """One phrase: ``ai-edge-quantizer 0.10.0, recipe int8``."""
        if self.name == QUANTIZER_GIVEN:
            return "given .tflite"
        text = f"{self.name} {self.version}".strip()
        return f"{text}, recipe {self.recipe_name}" if self.recipe_name else text


@dataclass(frozen=True)
class KernelOutput:
    """One output as the deployment kernels (XNNPACK, ``--xnnpack``) computed it, against the
    float model (root attribute ``kernel_outputs``, schema 1.4)."""

    sqnr_db: float
    top1_agreement: float
    """NaN where the output is not a classifier."""
    max_abs_diff: float
    """The largest difference from the reference kernels' output (dequantized units)."""
    max_abs_diff_lsb: float
    """The same in LSB of the output (NaN for an output without an integer grid)."""


def _db(value: Any) -> float:
    """A dB value as JSON holds it: a number, ``"inf"`` or ``"-inf"`` (no noise), null."""
    if value in ("inf", "-inf"):
        return float(value)
    return _float({"v": value}, "v")


def _kernel_outputs(value: Any) -> tuple[KernelOutput, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        KernelOutput(_db(v.get("sqnr_db")), _float(v, "top1_agreement"),
                     _float(v, "max_abs_diff"), _float(v, "max_abs_diff_lsb"))
        for v in value if isinstance(v, dict)
    )


def _str(raw: Mapping[str, Any], key: str, default: str = "") -> str:
    value = raw.get(key)
    return value if isinstance(value, str) else default


def _int(raw: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _float(raw: Mapping[str, Any], key: str) -> float:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _converter(value: Any) -> ConverterSettings:
    if not isinstance(value, dict):
        return ConverterSettings()
    calib = value.get("calib_samples")
    return ConverterSettings(
        calib_samples=calib if isinstance(calib, int) and not isinstance(calib, bool) else None,
        int8_io=value.get("int8_io") is True,
        optimizations=_str(value, "optimizations"),
        supported_ops=_str(value, "supported_ops"),
        keep_float=_strs(value.get("keep_float")),
        keep_float_ops=_strs(value.get("keep_float_ops")),
        scheme=_str(value, "scheme"),
        keras_export=_str(value, "keras_export"),
        calibration=_str(value, "calibration"),
    )


def _quantizer(raw: Mapping[str, Any]) -> QuantizerInfo:
    value = raw.get("quantizer")
    if not isinstance(value, dict):  # before 1.4
        if _str(raw, "tflite_source") == "converted":
            return QuantizerInfo(QUANTIZER_CONVERTER, _str(raw, "tensorflow_version"))
        return QuantizerInfo()
    recipe = value.get("recipe")
    return QuantizerInfo(
        name=_str(value, "name", QUANTIZER_GIVEN),
        version=_str(value, "version"),
        recipe_name=_str(value, "recipe_name"),
        recipe=tuple(e for e in recipe if isinstance(e, dict)) if isinstance(recipe, list)
        else (),
        repairs=_strs(value.get("repairs")),
    )


def _kind(raw: Mapping[str, Any]) -> DeployedKind:
    written = raw.get("deployed_kind")
    if isinstance(written, str):
        try:
            return DeployedKind(written)
        except ValueError:
            pass
    return DeployedKind.of(_str(raw, "deployed"))


@dataclass(frozen=True)
class TraceMeta(Mapping[str, Any]):
    """The root attributes of a trace, typed. As a ``Mapping`` it is the attributes as read."""

    model_name: str
    model_source: str
    model_sha256: str
    keras_flavour: str
    data_source: str
    calib_source: str
    tflite_source: str
    created: str
    command_line: str
    n_samples: int
    n_stored: int
    converter: ConverterSettings
    quantizer: QuantizerInfo
    deployed: str
    """What the deployed model is, for people."""
    deployed_kind: DeployedKind
    kernels: str
    delegated_ops: tuple[int, ...]
    kernel_mismatched_samples: int | None
    """With ``--xnnpack``: samples whose outputs differ between XNNPACK and the reference."""
    kernel_max_abs_diff: float
    kernel_outputs: tuple[KernelOutput, ...]
    """With ``--xnnpack`` (1.4): each output as XNNPACK computed it, in ``/outputs`` order."""
    kernel_accuracy: float
    """With ``--xnnpack`` and ``--labels`` (1.4): XNNPACK's task accuracy (else NaN)."""
    instrumentation_mismatched_samples: int
    instrumentation_max_abs_diff: float
    instrumentation_checked_samples: int
    """Samples whose outputs were compared with a plain interpreter (1.5; before, all)."""
    segments: int
    warnings: tuple[str, ...]
    input_names: tuple[str, ...]
    view: str
    reference: str
    op_local_error: str
    int8_tflite_sha256: str
    shard: str
    """``K/N`` in a shard trace, else empty."""
    slim: bool
    model_removed: bool
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_attrs(cls, raw: Mapping[str, Any]) -> TraceMeta:
        """The record of attributes as the reader decoded them (``h5safe.decode_attr``)."""
        mismatched = raw.get("kernel_mismatched_samples")
        return cls(
            model_name=_str(raw, "model_name", "?"),
            model_source=_str(raw, "model_source"),
            model_sha256=_str(raw, "model_sha256"),
            keras_flavour=_str(raw, "keras_flavour", "?"),
            data_source=_str(raw, "data_source"),
            calib_source=_str(raw, "calib_source"),
            tflite_source=_str(raw, "tflite_source"),
            created=_str(raw, "created"),
            command_line=_str(raw, "command_line"),
            n_samples=_int(raw, "n_samples"),
            n_stored=_int(raw, "n_stored"),
            converter=_converter(raw.get("converter")),
            quantizer=_quantizer(raw),
            deployed=_str(raw, "deployed"),
            deployed_kind=_kind(raw),
            kernels=_str(raw, "kernels", "?"),
            delegated_ops=tuple(
                v for v in raw.get("delegated_ops", []) or []
                if isinstance(v, int) and not isinstance(v, bool)
            ) if isinstance(raw.get("delegated_ops"), list) else (),
            kernel_mismatched_samples=(
                mismatched if isinstance(mismatched, int) and not isinstance(mismatched, bool)
                else None
            ),
            kernel_max_abs_diff=_float(raw, "kernel_max_abs_diff"),
            kernel_outputs=_kernel_outputs(raw.get("kernel_outputs")),
            kernel_accuracy=_float(raw, "kernel_accuracy"),
            instrumentation_mismatched_samples=_int(raw, "instrumentation_mismatched_samples"),
            instrumentation_max_abs_diff=_float(raw, "instrumentation_max_abs_diff"),
            instrumentation_checked_samples=_int(raw, "instrumentation_checked_samples",
                                                 _int(raw, "n_samples")),
            segments=_int(raw, "segments"),
            warnings=_strs(raw.get("warnings")),
            input_names=_strs(raw.get("input_names")),
            view=_str(raw, "view"),
            reference=_str(raw, "reference"),
            op_local_error=_str(raw, "op_local_error"),
            int8_tflite_sha256=_str(raw, "int8_tflite_sha256"),
            shard=_str(raw, "shard"),
            slim=raw.get("slim") is True,
            model_removed=raw.get("model_removed") is True,
            raw=dict(raw),
        )

    # -- the attributes as read, for code that copies them (``qdebug merge``) -----------------

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)
