"""Reads a trace lazily: tables at open, metrics and activations on demand. No TensorFlow.

``Trace`` is assembled from three parts: this module (opening, the tables, metrics), the stored
samples (``qdebug.store.trace_samples``) and the tracer's analysis
(``qdebug.store.trace_analysis``). Every read goes through ``qdebug.store.h5safe``: a trace
may come from a stranger, so nothing in it is trusted — no pickle, no model deserialization
(the embedded ``.tflite`` stays bytes), every declared size and shape is checked against the
layer table and ``n_samples`` before anything is allocated, and every failure of h5py or numpy
while reading becomes a ``TraceFileError`` with one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from qdebug import metrics
from qdebug.errors import TraceFileError
from qdebug.store.h5safe import (
    MARGIN,
    MAX_ROWS,
    MAX_SAMPLES,
    READ_ERRORS,
    decode_attr,
    guarded,
    memory_cap,
    refuse_outside_references,
    text,
)
from qdebug.store.layer_metrics import LayerMetrics
from qdebug.store.meta import TraceMeta
from qdebug.store.schema import (
    FORMAT_NAME,
    LAYER_COLUMNS,
    LAYER_OPTIONAL,
    OP_COLUMNS,
    OP_OPTIONAL,
    OUTPUT_COLUMNS,
    REQUIRED_METRICS,
    SCHEMA_MAJOR,
    SCHEMA_VERSION,
    VIEW_LAYERS,
    FloatIsland,
    LayerRecord,
    OpRecord,
    OutputRecord,
)
from qdebug.store.trace_analysis import AnalysisReads
from qdebug.store.trace_samples import Activation

__all__ = ["MAX_ROWS", "Activation", "Trace", "open_trace"]

#: Root attributes whose type consumers rely on: name → accepted Python types.
_ATTR_TYPES: dict[str, tuple[type, ...]] = {
    "n_samples": (int,),
    "n_stored": (int,),
    "instrumentation_mismatched_samples": (int,),
    "instrumentation_checked_samples": (int,),
    "instrumentation_max_abs_diff": (int, float),
    "segments": (int,),
    "warnings": (list,),
    "converter": (dict,),
    "input_names": (list,),
}

class Trace(AnalysisReads):
    """An open trace file. Tables are read at open; everything else when asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise TraceFileError(f"{self.path}: no such file", "check the path")
        if self.path.is_dir():
            raise TraceFileError(f"{self.path} is a folder, not a trace", "give the .h5 file")
        if not self.path.is_file():
            raise TraceFileError(
                f"{self.path} is not a regular file (a device or a pipe)",
                "save the trace to a file and give its path",
            )
        try:
            is_h5 = h5py.is_hdf5(self.path)
        except OSError as exc:
            raise TraceFileError(f"{self.path}: cannot read ({exc})", "check permissions") from exc
        if not is_h5:
            raise TraceFileError(
                f"{self.path} is not an HDF5 file",
                "give a trace written by `qdebug trace` (it may be truncated or another format)",
            )
        try:
            self._f = h5py.File(self.path, "r")
        except READ_ERRORS as exc:
            raise TraceFileError(
                f"{self.path} is a damaged HDF5 file ({type(exc).__name__}: {exc})",
                "re-create or re-download the trace",
            ) from exc
        try:
            refuse_outside_references(self._f, self.path)  # before anything is read
            self._load()
        except TraceFileError:
            self._f.close()
            raise
        except READ_ERRORS as exc:
            self._f.close()
            raise self._damaged("the layer table and attributes", exc) from exc

    # -- open -------------------------------------------------------------------------------------

    def _load(self) -> None:
        f = self._f
        fmt = text(f.attrs.get("format", ""))
        if fmt != FORMAT_NAME:
            raise TraceFileError(
                f"{self.path} is an HDF5 file but not a qdebug trace (no format='{FORMAT_NAME}')",
                "give a trace written by `qdebug trace`",
            )
        version = text(f.attrs.get("schema_version", ""))
        try:
            major = int(version.split(".")[0])
        except ValueError:
            major = -1
        if major != SCHEMA_MAJOR:
            raise TraceFileError(
                f"{self.path} has trace schema {version[:20] or '?'}, this qdebug reads "
                f"{SCHEMA_MAJOR}.x (it writes {SCHEMA_VERSION})",
                "upgrade qdebug to read it"
                if major > SCHEMA_MAJOR
                else "re-create the trace with this qdebug",
            )
        complete = f.attrs.get("complete", False)
        if not isinstance(complete, bool | np.bool_) or not complete:
            raise TraceFileError(
                f"{self.path} is an incomplete trace (the run that wrote it was interrupted)",
                "run `qdebug trace` again",
            )
        self.schema_version = version
        with memory_cap(MARGIN):
            raw: dict[str, Any] = {text(k): decode_attr(v) for k, v in f.attrs.items()}
        for key, types in _ATTR_TYPES.items():
            value = raw.get(key)
            if key in ("n_samples", "n_stored") and value is None:
                raise self._corrupt(f"the attribute {key} is missing")
            if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
                raise self._corrupt(f"the attribute {key} is not a {types[0].__name__}")
        self.meta = TraceMeta.from_attrs(raw)
        """The root attributes, typed (``qdebug.store.meta``)."""
        n = raw["n_samples"]
        if not 0 <= n <= MAX_SAMPLES:
            raise self._corrupt(f"n_samples is {n}")
        self.n_samples = int(n)
        self.layers: list[LayerRecord] = self._read_table(
            "layers", LAYER_COLUMNS, LayerRecord, MAX_ROWS, LAYER_OPTIONAL
        )
        self.ops: list[OpRecord] = (
            self._read_table("ops", OP_COLUMNS, OpRecord, MAX_ROWS, OP_OPTIONAL)
            if "ops" in f else []
        )
        if any(i >= len(self.ops) for r in self.layers for i in r.ops) or any(
            i >= len(self.ops) for o in self.ops for i in o.inputs
        ):
            raise self._corrupt("a row refers to an op the table does not have")
        self.view = text(f.attrs.get("view", VIEW_LAYERS))
        n_layers = len(self.layers)
        # One layer may compute several outputs (a subclassed model returning three tensors is
        # one layer of its functional wrapper): the bound is the tables', not the layer count.
        self.outputs: list[OutputRecord] = self._read_table(
            "outputs", OUTPUT_COLUMNS, OutputRecord, MAX_ROWS
        )
        self._index = {r.name: i for i, r in enumerate(self.layers)}
        for part, width in (("layers", n_layers), ("outputs", len(self.outputs))):
            self._check_stats(f"metrics/{part}", width)
        if self.ops:
            self._check_stats("metrics/ops", len(self.ops), per_sample=False)
        top1 = self._dataset("metrics/outputs/top1_match")
        self._check_shape(top1, (self.n_samples, len(self.outputs)))
        self._check_storage(top1)
        self.stored_samples: np.ndarray = np.asarray(
            self._read("samples/index", (None,), "iu"), dtype=np.int64
        )
        if len(self.stored_samples) > self.n_samples:
            raise self._corrupt(
                f"{len(self.stored_samples)} stored samples but n_samples is {self.n_samples}"
            )

    def _check_stats(self, group: str, width: int, per_sample: bool = True) -> None:
        """Per-sample statistics (samples, width) and pooled metrics (width,), from metadata."""
        parts = [("per_sample", (self.n_samples, width))] if per_sample else []
        for sub, shape in (*parts, ("pooled", (width,))):
            g = self._f.get(f"{group}/{sub}")
            if not isinstance(g, h5py.Group):
                raise self._corrupt(f"{group}/{sub} is missing")
            if sub == "pooled":
                missing = [k for k in REQUIRED_METRICS if k not in g]
                if missing:
                    raise self._corrupt(f"{group}/pooled lacks {', '.join(missing)}")
            for key in g:
                ds = self._dataset(f"{group}/{sub}/{key}")
                self._check_shape(ds, shape)
                self._check_storage(ds)

    # -- context management -------------------------------------------------------------------

    def close(self) -> None:
        """Close the file."""
        self._f.close()

    def __enter__(self) -> Trace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- model-level facts ----------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The model's name."""
        return self.meta.model_name

    @property
    @guarded("the float islands")
    def float_islands(self) -> list[FloatIsland]:
        """Ops of the INT8 model whose outputs are float (``/model/float_islands``)."""
        key = "model/float_islands"
        idx = self._read(f"{key}/op_index", (None,))
        if len(idx) > MAX_ROWS:
            raise self._corrupt(f"{key} declares {len(idx):,} rows")
        types = self._strings(f"{key}/op_type", len(idx))
        names = self._strings(f"{key}/tensor_name", len(idx))
        return [FloatIsland(int(i), t, n) for i, t, n in zip(idx, types, names, strict=True)]

    @property
    def has_model(self) -> bool:
        """False for a copy made by ``export --slim --no-model``: the model's sha256 is kept,
        its bytes are not."""
        return "model/int8_tflite" in self._f or not self.meta.model_removed

    @guarded("the INT8 model")
    def tflite_bytes(self) -> bytes:
        """The INT8 ``.tflite`` model the trace was made from (bytes; never executed here)."""
        if not self.has_model:
            sha = self.meta.int8_tflite_sha256[:64]
            raise TraceFileError(
                f"{self.path} was exported with --slim --no-model: it keeps the INT8 model's "
                f"sha256 ({sha or 'unknown'}) and converter settings, not the model",
                "export the .tflite from the full trace, or re-run `qdebug trace` with the "
                "settings that `qdebug report --format json` lists under converter",
            )
        raw = self._read("model/int8_tflite", (None,), "iu")
        if raw.dtype.itemsize != 1:
            raise self._corrupt(f"model/int8_tflite has dtype {raw.dtype}, expected uint8")
        return bytes(raw.astype(np.uint8, copy=False).tobytes())

    @guarded("the INT8 model")
    def model_stored_bytes(self) -> int:
        """Bytes the INT8 model takes in the file (compressed; read from metadata only)."""
        if not self.has_model:
            return 0
        return int(self._dataset("model/int8_tflite", "iu").id.get_storage_size())

    @guarded("the layer metrics")
    def layer_metrics(self) -> dict[str, np.ndarray]:
        """Pooled metrics of every layer, each an array of shape (layers,); NaN where the layer
        has no tensor of its own. Includes ``weight_sqnr_db`` and ``range_use`` (the share of
        the layer's integer range its raw values spanned) when the trace has the analysis
        (schema ≥ 1.1)."""
        n = len(self.layers)
        key = "metrics/layers/pooled"
        out = {k: self._float(f"{key}/{k}", (n,)) for k in metrics.METRICS if k in self._f[key]}
        if "analysis/weights" in self._f:
            w = np.full(n, np.nan)
            idx = np.asarray(self._read("analysis/weights/layer", (None,), "iu"), dtype=np.int64)
            sq = self._float("analysis/weights/sqnr_db", (len(idx),))
            ok = (idx >= 0) & (idx < n)
            w[idx[ok]] = sq[ok]
            out["weight_sqnr_db"] = w
        if "analysis/ranges" in self._f:
            lo = self._float("analysis/ranges/int8_min", (n,))
            hi = self._float("analysis/ranges/int8_max", (n,))
            # Steps of each layer's own integer grid: an int16 tensor has 65535, not 255.
            levels = np.array([_levels(r.dtype) for r in self.layers], dtype=np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                out["range_use"] = np.where(np.isfinite(hi - lo), (hi - lo) / levels, np.nan)
        return out

    def typed_layer_metrics(self) -> LayerMetrics:
        """``layer_metrics`` as a frozen record with a named array per metric (all NaN for a
        metric the trace lacks; ``has`` says which it has)."""
        return LayerMetrics.from_arrays(self.layer_metrics(), len(self.layers))

    @guarded("the op metrics")
    def op_metrics(self) -> dict[str, np.ndarray]:
        """Pooled metrics of every op of ``ops``, each an array of shape (ops,); NaN where the
        op has no metrics. Empty for traces without an op table (schema ≤ 1.1)."""
        if not self.ops:
            return {}
        n = len(self.ops)
        key = "metrics/ops/pooled"
        return {k: self._float(f"{key}/{k}", (n,)) for k in metrics.METRICS if k in self._f[key]}

    def layer_sample_metrics(self, name: str, layer: int | str | None = None) -> np.ndarray:
        """One metric per sample and layer, shape (samples, layers); with ``layer``, only that
        layer's column, shape (samples,), read without loading the others."""
        col = None if layer is None else self.layer_index(layer)
        return self._per_sample_metric("metrics/layers/per_sample", name, self._layer_scales(), col)

    @guarded("the per-sample statistics")
    def layer_sample_stats(self) -> dict[str, np.ndarray]:
        """The sufficient statistics per sample and layer, each (samples, layers)."""
        key = "metrics/layers/per_sample"
        shape = (self.n_samples, len(self.layers))
        return {s: self._float(f"{key}/{s}", shape) for s in metrics.STATS if s in self._f[key]}

    @guarded("the pooled statistics")
    def layer_pooled_stats(self) -> dict[str, np.ndarray]:
        """The pooled sufficient statistics of every layer (``/metrics/layers/pooled/stat_*``),
        each of shape (layers,), for the statistics the trace has."""
        key = "metrics/layers/pooled"
        n = (len(self.layers),)
        return {s: self._float(f"{key}/stat_{s}", n) for s in metrics.STATS
                if f"stat_{s}" in self._f[key]}

    def _layer_scales(self) -> np.ndarray:
        return np.array([r.scale for r in self.layers], dtype=np.float64)

    @guarded("the per-sample metrics")
    def _per_sample_metric(
        self, group: str, name: str, scale: np.ndarray, col: int | None = None
    ) -> np.ndarray:
        if name not in metrics.METRICS:
            raise TraceFileError(
                f"unknown metric {name!r}", f"use one of {sorted(metrics.METRICS)}"
            )
        g = self._f[group]
        m = metrics.METRICS[name]
        missing = [s for s in m.needs if s not in g]
        if missing:
            raise TraceFileError(
                f"{self.path} has no {name!r} (written by an older qdebug, schema "
                f"{self.schema_version})",
                "re-create the trace with this qdebug",
            )
        shape = (self.n_samples, len(scale))
        if col is not None:
            stats = {s: self._float(f"{group}/{s}", shape, (slice(None), col)) for s in m.needs}
            return m.compute(stats, scale[col : col + 1])
        stats = {s: self._float(f"{group}/{s}", shape) for s in m.needs}
        return m.compute(stats, scale[None, :])

    # -- outputs --------------------------------------------------------------------------------

    @guarded("the output metrics")
    def output_metrics(self) -> dict[str, np.ndarray]:
        """Pooled metrics of every model output, each of shape (outputs,), plus
        ``top1_agreement`` (NaN where the output is not a classifier)."""
        key = "metrics/outputs/pooled"
        n = (len(self.outputs),)
        out = {k: self._float(f"{key}/{k}", n) for k in metrics.METRICS if k in self._f[key]}
        top1 = self.top1_match()
        agree = np.full(len(self.outputs), np.nan)
        for j, o in enumerate(self.outputs):
            if o.classifier and top1.shape[0]:
                agree[j] = float(np.mean(top1[:, j] == 1))
        out["top1_agreement"] = agree
        return out

    def output_sample_metrics(self, name: str) -> np.ndarray:
        """One metric per sample and output, shape (samples, outputs)."""
        scales = np.array([o.scale for o in self.outputs], dtype=np.float64)
        return self._per_sample_metric("metrics/outputs/per_sample", name, scales)

    @guarded("the top-1 flags")
    def top1_match(self) -> np.ndarray:
        """Per sample and output: 1 if float and int8 agree on the top class, 0 if not, -1 when
        the output is not a classifier."""
        raw = self._read("metrics/outputs/top1_match", (self.n_samples, len(self.outputs)))
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(raw).astype(np.int8)

    def to_dataframe(self) -> Any:
        """A pandas DataFrame, one row per layer, the JSON report's layer columns."""
        from qdebug.output.notebook import layers_dataframe

        return layers_dataframe(self)

    def ops_dataframe(self) -> Any:
        """A pandas DataFrame, one row per op, the JSON report's op columns."""
        from qdebug.output.notebook import ops_dataframe

        return ops_dataframe(self)

    def _repr_html_(self) -> str:
        """Jupyter's view: a small table of pooled numbers (no activations are read)."""
        from qdebug.output.notebook import trace_html

        return trace_html(self)

    def iter_layers(self) -> Iterator[tuple[int, LayerRecord]]:
        """(index, record) of every layer in topological order."""
        return iter(enumerate(self.layers))

    def precision(self, layer: int) -> str:
        """What the op computing a layer's tensor computes in (``OpRecord.precision``;
        empty for a layer without ops, and in traces before schema 1.4)."""
        ops = self.layers[layer].ops
        return self.ops[ops[-1]].precision if ops else ""

    @property
    def mixed_precision(self) -> bool:
        """Whether the measured ops compute in more than one precision (a per-op recipe)."""
        return len({o.precision for o in self.ops if o.measured and o.precision}) > 1




def _levels(dtype: str) -> int:
    """Steps of a quantized tensor's integer grid (``qmax − qmin``), from its stored dtype."""
    info = np.iinfo(np.int16 if dtype == "int16" else np.int8)
    return int(info.max) - int(info.min)


def open_trace(path: str | Path) -> Trace:
    """Open a trace for reading. Raises ``TraceFileError`` with a clear message when the file
    is missing, not HDF5, not a trace, incomplete, of an unsupported schema major version, or
    damaged (any read that fails, any declared size or shape that does not add up)."""
    return Trace(path)

