"""Reads a trace lazily: tables at open, metrics and activations on demand. No TensorFlow.

A trace may come from a stranger (attached to a bug report), so nothing in it is trusted:
no pickle, no model deserialization (the embedded ``.tflite`` stays bytes), every declared size
and shape is checked against the layer table and ``n_samples`` before anything is allocated,
and every failure of h5py or numpy while reading becomes a ``TraceFileError`` with one line.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import h5py
import numpy as np

from qdebug import metrics, user_metrics
from qdebug.channels import channel_metrics
from qdebug.culprits import Culprit
from qdebug.errors import TraceFileError
from qdebug.store.h5safe import refuse_outside_references
from qdebug.store.layer_worst import KEY as LAYER_WORST
from qdebug.store.schema import (
    FORMAT_NAME,
    LAYER_COLUMNS,
    LAYER_OPTIONAL,
    OP_COLUMNS,
    OUTPUT_COLUMNS,
    SCHEMA_MAJOR,
    SCHEMA_VERSION,
    VIEW_LAYERS,
    LayerRecord,
    OpRecord,
    OutputRecord,
)
from qdebug.user_metrics import StoredMetric

#: Largest table a trace may declare (rows); beyond it the file is refused as corrupt.
MAX_ROWS = 1_000_000
#: Largest ``n_samples`` a trace may declare.
MAX_SAMPLES = 100_000_000
#: Largest single array read from a trace; a trace declaring more for one read is refused
#: (per-layer reads such as ``layer_sample_metrics(name, layer=i)`` stay far below it).
MAX_READ_BYTES = 1 << 30

#: What h5py and numpy raise on a damaged file or a value of the wrong kind.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    LookupError,
    ValueError,
    TypeError,
    AttributeError,
    RuntimeError,
    ArithmeticError,
    MemoryError,
)

_F = TypeVar("_F", bound=Callable[..., Any])

#: Root attributes whose type consumers rely on: name → accepted Python types.
_ATTR_TYPES: dict[str, tuple[type, ...]] = {
    "n_samples": (int,),
    "n_stored": (int,),
    "instrumentation_mismatched_samples": (int,),
    "instrumentation_max_abs_diff": (int, float),
    "segments": (int,),
    "warnings": (list,),
    "converter": (dict,),
    "input_names": (list,),
}
_NUMERIC = "biuf"
#: Pooled metrics every trace has (schema 1.0 on) and reports index directly.
REQUIRED_METRICS = (
    "sqnr_db", "rmse_lsb", "mse", "max_abs_error", "mean_error", "cosine", "saturation",
    "clip_fraction",
)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_index_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_ROWS for v in value
    )


def _is_shape(value: Any) -> bool:
    return isinstance(value, list) and all(
        v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in value
    )


#: Checks of the JSON columns of the layer table (consumers index and hash their items).
_JSON_CHECKS: dict[str, Callable[[Any], bool]] = {
    "inbound": _is_str_list,
    "output_shape": _is_shape,
    "ops": _is_index_list,
    "inputs": _is_index_list,
}


#: Address space a read may use beyond what its declared size needs (variable-length strings,
#: HDF5's buffers).
_MARGIN = 256 << 20
_cap_lock = threading.Lock()
_cap_depth = 0


def _address_space() -> int | None:
    """This process's virtual memory size in bytes (Linux), else None."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@contextlib.contextmanager
def memory_cap(extra: int) -> Iterator[None]:
    """While reading from a trace, allow the process at most ``extra`` more bytes of address
    space (Linux; elsewhere a no-op). HDF5 trusts the lengths stored in a file (a variable-length
    string whose stored length was flipped makes it allocate gigabytes before it notices); with
    the cap that allocation fails, and the read fails as a damaged trace instead."""
    global _cap_depth
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with _cap_lock:
        _cap_depth += 1
        outer = _cap_depth == 1
        old = resource.getrlimit(resource.RLIMIT_AS) if outer else None
        used = _address_space() if outer else None
        if old is not None and used is not None:
            soft, hard = old
            cap = used + extra
            if hard != resource.RLIM_INFINITY:
                cap = min(cap, hard)
            if soft == resource.RLIM_INFINITY or cap < soft:
                try:
                    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
                except (ValueError, OSError):
                    old = None
            else:
                old = None
        else:
            old = None
    try:
        yield
    finally:
        with _cap_lock:
            _cap_depth -= 1
            if old is not None:
                resource.setrlimit(resource.RLIMIT_AS, old)


def _guarded(what: str) -> Callable[[_F], _F]:
    """Turn any h5py/numpy failure inside a ``Trace`` method into a ``TraceFileError``."""

    def wrap(method: _F) -> _F:
        @functools.wraps(method)
        def guarded(self: Trace, *args: Any, **kwargs: Any) -> Any:
            if not self._f:  # a programming error, as for Python's own files
                raise ValueError(f"{self.path}: I/O operation on a closed trace")
            try:
                return method(self, *args, **kwargs)
            except TraceFileError:
                raise
            except READ_ERRORS as exc:
                raise self._damaged(what, exc) from exc

        return guarded  # type: ignore[return-value]

    return wrap


@dataclass(frozen=True)
class Activation:
    """One stored sample of one layer."""

    float: np.ndarray
    """The float reference, float32."""
    raw: np.ndarray
    """The int8 model's tensor as stored: raw integers, or float32 for a float island."""
    qp: metrics.QuantParams | None
    local_ref: np.ndarray | None = None
    """f(x̂): the layer's float computation on the int8 model's inputs (schema ≥ 1.1)."""

    @property
    def dequantized(self) -> np.ndarray:
        """The int8 tensor's real values."""
        return metrics.dequantize(self.raw, self.qp)


class Trace:
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

    def _damaged(self, what: str, exc: BaseException) -> TraceFileError:
        detail = " ".join(str(exc).split())[:200]
        return TraceFileError(
            f"{self.path} is a damaged trace: cannot read {what} ({type(exc).__name__}: {detail})",
            "re-create it with `qdebug trace`, or ask for the file again",
        )

    def _corrupt(self, detail: str) -> TraceFileError:
        return TraceFileError(
            f"{self.path} is a damaged trace: {detail}",
            "re-create it with `qdebug trace`, or ask for the file again",
        )

    # -- checked reads ----------------------------------------------------------------------------

    def _dataset(self, key: str, kinds: str = _NUMERIC) -> h5py.Dataset:
        """The dataset at ``key``; refused when missing, not a dataset, or of another kind
        (``kinds``: numpy dtype kinds, ``s`` for strings)."""
        obj = self._f.get(key)
        if obj is None:
            raise self._corrupt(f"{key} is missing")
        if not isinstance(obj, h5py.Dataset):
            raise self._corrupt(f"{key} is not a dataset")
        dtype = obj.dtype
        ok = (
            h5py.check_string_dtype(dtype) is not None or dtype.kind == "S"
            if kinds == "s"
            else dtype.kind in kinds and dtype.fields is None and not dtype.subdtype
        )
        if not ok:
            raise self._corrupt(f"{key} has dtype {dtype}, expected {_kind_name(kinds)}")
        return obj

    def _check_shape(self, ds: h5py.Dataset, shape: tuple[int | None, ...]) -> tuple[int, ...]:
        """``ds.shape`` if it matches ``shape`` (None: any length)."""
        got = tuple(ds.shape or ())
        if len(got) != len(shape) or any(
            w is not None and w != g for w, g in zip(shape, got, strict=False)
        ):
            want = "(" + ", ".join("?" if w is None else str(w) for w in shape) + ")"
            raise self._corrupt(f"{ds.name} has shape {got}, expected {want}")
        return got

    def _check_storage(self, ds: h5py.Dataset) -> None:
        """Refuse an uncompressed dataset that declares more bytes than the file stores for it
        (an absurd shape over unwritten chunks would otherwise be allocated on read)."""
        declared = int(np.prod(ds.shape or (), dtype=np.float64)) * ds.dtype.itemsize
        if declared and ds.id.get_create_plist().get_nfilters() == 0:
            stored = ds.id.get_storage_size()
            if stored < declared:
                raise self._corrupt(
                    f"{ds.name} declares {declared:,} bytes but the file holds {stored:,}"
                )

    def _read(
        self, key: str, shape: tuple[int | None, ...], kinds: str = _NUMERIC, sel: Any = ()
    ) -> np.ndarray:
        """Read ``key`` (or the selection ``sel`` of it) after checking kind, shape and size."""
        ds = self._dataset(key, kinds)
        got = self._check_shape(ds, shape)
        if kinds == "s" and got and got[0] > MAX_ROWS:
            raise self._corrupt(f"{key} declares {got[0]:,} strings")
        rows = got
        if isinstance(sel, int):
            rows = got[1:]
        elif isinstance(sel, tuple) and len(sel) == 2 and isinstance(sel[1], int):
            rows = got[:1]
        nbytes = float(np.prod(rows, dtype=np.float64)) * ds.dtype.itemsize
        if nbytes > MAX_READ_BYTES:
            raise TraceFileError(
                f"{self.path}: {key} would need {nbytes / 2**30:.1f} GiB in memory "
                f"(limit {MAX_READ_BYTES / 2**30:.0f} GiB)",
                "read it in parts with h5py, or re-create a smaller trace",
            )
        if sel == ():
            self._check_storage(ds)
        with memory_cap(int(3 * nbytes) + _MARGIN):
            return np.asarray(ds[sel])

    def _float(self, key: str, shape: tuple[int | None, ...], sel: Any = ()) -> np.ndarray:
        return np.asarray(self._read(key, shape, _NUMERIC, sel), dtype=np.float64)

    def _strings(self, key: str, n: int | None) -> list[str]:
        return [_text(v) for v in self._read(key, (n,), "s")]

    def _read_table(
        self,
        group: str,
        columns: Mapping[str, str],
        cls: type,
        limit: int,
        optional: tuple[str, ...] = (),
    ) -> list[Any]:
        g = self._f.get(group)
        if not isinstance(g, h5py.Group):
            raise self._corrupt(f"{group} is missing")
        # Columns added by a later minor version are absent from older traces: their defaults.
        columns = {c: k for c, k in columns.items() if c not in optional or c in g}
        n: int | None = None
        for col in columns:
            ds = self._dataset(f"{group}/{col}", "s" if columns[col] in "sj" else _NUMERIC)
            shape = tuple(ds.shape or ())
            if len(shape) != 1 or (n is not None and shape[0] != n):
                raise self._corrupt(f"table {group} has columns of different lengths")
            n = shape[0]
        rows = n or 0
        if rows > limit:
            raise self._corrupt(f"table {group} declares {rows:,} rows (at most {limit:,})")
        data: dict[str, list[Any]] = {}
        for col, kind in columns.items():
            if kind in "sj":
                values: list[Any] = self._strings(f"{group}/{col}", rows)
                if kind == "j":
                    values = [json.loads(v) for v in values]
                    check = _JSON_CHECKS.get(col)
                    if check is not None and not all(check(v) for v in values):
                        raise self._corrupt(f"{group}/{col} holds values of the wrong type")
            else:
                raw = self._read(f"{group}/{col}", (rows,))
                if kind == "i":
                    values = [int(v) for v in np.asarray(raw, dtype=np.int64)]
                elif kind == "f":
                    values = [float(v) for v in np.asarray(raw, dtype=np.float64)]
                else:
                    values = [bool(v) for v in raw]
            data[col] = values
        return [cls(**{c: data[c][i] for c in columns}) for i in range(rows)]

    # -- open -------------------------------------------------------------------------------------

    def _load(self) -> None:
        f = self._f
        fmt = _text(f.attrs.get("format", ""))
        if fmt != FORMAT_NAME:
            raise TraceFileError(
                f"{self.path} is an HDF5 file but not a qdebug trace (no format='{FORMAT_NAME}')",
                "give a trace written by `qdebug trace`",
            )
        version = _text(f.attrs.get("schema_version", ""))
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
        with memory_cap(_MARGIN):
            self.meta: dict[str, Any] = {
                _text(k): _decode_attr(v) for k, v in f.attrs.items()
            }
        for key, types in _ATTR_TYPES.items():
            value = self.meta.get(key)
            if key in ("n_samples", "n_stored") and value is None:
                raise self._corrupt(f"the attribute {key} is missing")
            if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
                raise self._corrupt(f"the attribute {key} is not a {types[0].__name__}")
        n = self.meta["n_samples"]
        if not 0 <= n <= MAX_SAMPLES:
            raise self._corrupt(f"n_samples is {n}")
        self.n_samples = int(n)
        self.layers: list[LayerRecord] = self._read_table(
            "layers", LAYER_COLUMNS, LayerRecord, MAX_ROWS, LAYER_OPTIONAL
        )
        self.ops: list[OpRecord] = (
            self._read_table("ops", OP_COLUMNS, OpRecord, MAX_ROWS) if "ops" in f else []
        )
        if any(i >= len(self.ops) for r in self.layers for i in r.ops) or any(
            i >= len(self.ops) for o in self.ops for i in o.inputs
        ):
            raise self._corrupt("a row refers to an op the table does not have")
        self.view = _text(f.attrs.get("view", VIEW_LAYERS))
        n_layers = len(self.layers)
        self.outputs: list[OutputRecord] = self._read_table(
            "outputs", OUTPUT_COLUMNS, OutputRecord, n_layers
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
        return str(self.meta.get("model_name", "?"))

    @property
    @_guarded("the float islands")
    def float_islands(self) -> list[dict[str, Any]]:
        """Ops of the INT8 model whose outputs are float: ``op_index``, ``op_type``,
        ``tensor_name``."""
        key = "model/float_islands"
        idx = self._read(f"{key}/op_index", (None,))
        if len(idx) > MAX_ROWS:
            raise self._corrupt(f"{key} declares {len(idx):,} rows")
        types = self._strings(f"{key}/op_type", len(idx))
        names = self._strings(f"{key}/tensor_name", len(idx))
        return [
            {"op_index": int(i), "op_type": t, "tensor_name": n}
            for i, t, n in zip(idx, types, names, strict=True)
        ]

    @_guarded("the INT8 model")
    def tflite_bytes(self) -> bytes:
        """The INT8 ``.tflite`` model the trace was made from (bytes; never executed here)."""
        raw = self._read("model/int8_tflite", (None,), "iu")
        if raw.dtype.itemsize != 1:
            raise self._corrupt(f"model/int8_tflite has dtype {raw.dtype}, expected uint8")
        return bytes(raw.astype(np.uint8, copy=False).tobytes())

    # -- layers ---------------------------------------------------------------------------------

    def layer_index(self, layer: int | str) -> int:
        """Index of a layer given by index or name."""
        if isinstance(layer, int | np.integer):
            if not 0 <= layer < len(self.layers):
                raise TraceFileError(f"no layer {layer} (the trace has {len(self.layers)})")
            return int(layer)
        if layer not in self._index:
            raise TraceFileError(f"no layer named {layer!r} in {self.path}", "see `qdebug report`")
        return self._index[layer]

    @_guarded("the layer metrics")
    def layer_metrics(self) -> dict[str, np.ndarray]:
        """Pooled metrics of every layer, each an array of shape (layers,); NaN where the layer
        has no tensor of its own. Includes ``weight_sqnr_db`` and ``range_use`` when the trace
        has the analysis (schema ≥ 1.1)."""
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
            with np.errstate(invalid="ignore", over="ignore"):
                out["range_use"] = np.where(np.isfinite(hi - lo), (hi - lo) / 255.0, np.nan)
        return out

    @_guarded("the op metrics")
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

    @_guarded("the per-sample statistics")
    def layer_sample_stats(self) -> dict[str, np.ndarray]:
        """The sufficient statistics per sample and layer, each (samples, layers)."""
        key = "metrics/layers/per_sample"
        shape = (self.n_samples, len(self.layers))
        return {s: self._float(f"{key}/{s}", shape) for s in metrics.STATS if s in self._f[key]}

    @_guarded("the pooled statistics")
    def layer_pooled_stats(self) -> dict[str, np.ndarray]:
        """The pooled sufficient statistics of every layer (``/metrics/layers/pooled/stat_*``),
        each of shape (layers,), for the statistics the trace has."""
        key = "metrics/layers/pooled"
        n = (len(self.layers),)
        return {s: self._float(f"{key}/stat_{s}", n) for s in metrics.STATS
                if f"stat_{s}" in self._f[key]}

    def _layer_scales(self) -> np.ndarray:
        return np.array([r.scale for r in self.layers], dtype=np.float64)

    @_guarded("the per-sample metrics")
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

    @_guarded("the output metrics")
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

    @_guarded("the top-1 flags")
    def top1_match(self) -> np.ndarray:
        """Per sample and output: 1 if float and int8 agree on the top class, 0 if not, -1 when
        the output is not a classifier."""
        raw = self._read("metrics/outputs/top1_match", (self.n_samples, len(self.outputs)))
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(raw).astype(np.int8)

    @_guarded("the labels")
    def labels(self) -> dict[str, Any] | None:
        """Per sample ``label``, ``float_pred`` and ``int8_pred`` (class ids) and the ``output``
        and ``source`` they came from (1.2, ``--labels``); None in a trace without labels.
        ``qdebug.accuracy.accuracy`` turns them into accuracies and flipped samples."""
        if "labels" not in self._f:
            return None
        n = (self.n_samples,)
        out: dict[str, Any] = {
            k: np.asarray(self._read(f"labels/{k}", n, "iu"), dtype=np.int64)
            for k in ("label", "float_pred", "int8_pred")
        }
        attrs = self._f["labels"].attrs
        out["output"] = _text(attrs.get("output", ""))
        out["source"] = _text(attrs.get("source", ""))
        return out

    # -- stored samples ---------------------------------------------------------------------------

    def _stored_position(self, sample: int) -> int:
        hits = np.nonzero(self.stored_samples == sample)[0]
        if not len(hits):
            raise TraceFileError(
                f"sample {sample} is not stored in {self.path}",
                f"stored samples: {self.stored_samples.tolist()[:20]}",
            )
        return int(hits[0])

    @_guarded("the stored activations")
    def has_activations(self, layer: int | str) -> bool:
        """Whether stored activations exist for a layer."""
        return f"activations/{self.layer_index(layer):05d}" in self._f

    def _stored(self, key: str, pos: int, kinds: str = _NUMERIC) -> np.ndarray:
        """Row ``pos`` of a (stored samples, …) dataset."""
        k = len(self.stored_samples)
        ds = self._dataset(key, kinds)
        return self._read(key, (k, *([None] * (len(ds.shape or ()) - 1))), kinds, pos)

    @_guarded("the stored activations")
    def activation(self, layer: int | str, sample: int) -> Activation:
        """The stored float and int8 activation of one layer for one stored sample."""
        idx = self.layer_index(layer)
        key = f"activations/{idx:05d}"
        if key not in self._f:
            raise TraceFileError(f"layer {self.layers[idx].name!r} has no stored activations")
        pos = self._stored_position(sample)
        rec = self.layers[idx]
        raw = self._stored(f"{key}/int8", pos, "iuf")
        fl = np.asarray(self._stored(f"{key}/float", pos), dtype=np.float32)
        ref = None
        if f"{key}/float_local" in self._f:
            ref = np.asarray(self._stored(f"{key}/float_local", pos), dtype=np.float32)
        for other in (fl, ref):
            if other is not None and other.shape != raw.shape:
                raise self._corrupt(
                    f"{key} holds float {other.shape} and int8 {raw.shape} of different shapes"
                )
        qp = None
        if np.issubdtype(raw.dtype, np.integer) and math.isfinite(rec.scale):
            info = np.iinfo(raw.dtype)
            qp = metrics.QuantParams(rec.scale, rec.zero_point, int(info.min), int(info.max))
        elif not np.issubdtype(raw.dtype, np.floating):
            raw = raw.astype(np.float32)
        return Activation(fl, raw, qp, ref)

    @_guarded("the stored inputs")
    def inputs(self, sample: int) -> dict[str, np.ndarray]:
        """The model inputs of one sample, by input name: a stored sample, or one kept as a
        layer's worst (``input_samples``)."""
        if sample not in set(self.stored_samples.tolist()) and sample in set(
            self._layer_worst_index().tolist()
        ):
            pos = int(np.nonzero(self._layer_worst_index() == sample)[0][0])
            g = self._f[f"{LAYER_WORST}/inputs"]
            n = len(self._layer_worst_index())
            out = {}
            for k in sorted(g):
                ds = self._dataset(f"{LAYER_WORST}/inputs/{k}")
                shape = (n, *([None] * (len(ds.shape or ()) - 1)))
                out[_text(ds.attrs.get("name", k))] = self._read(ds.name, shape, _NUMERIC, pos)
            return out
        pos = self._stored_position(sample)
        g = self._f["samples/inputs"]
        return {
            _text(g[k].attrs.get("name", k)): self._stored(f"samples/inputs/{k}", pos)
            for k in sorted(g)
        }

    def _sample_bound(self) -> int:
        """One past the largest sample position the trace may name: ``n_samples``, or a
        shard's ``shard_total`` (its samples keep their positions in the whole data)."""
        total = self.meta.get("shard_total")
        if isinstance(total, int) and not isinstance(total, bool) and self.n_samples <= total:
            return min(total, MAX_SAMPLES)
        return self.n_samples

    def _layer_worst_index(self) -> np.ndarray:
        if f"{LAYER_WORST}/index" not in self._f:
            return np.zeros(0, dtype=np.int64)
        idx = np.asarray(self._read(f"{LAYER_WORST}/index", (None,), "iu"), dtype=np.int64)
        bound = self._sample_bound()
        if len(idx) > self.n_samples or np.any((idx < 0) | (idx >= max(bound, 1))):
            raise self._corrupt(f"{LAYER_WORST}/index names samples the trace does not have")
        return idx

    @_guarded("the worst samples per layer")
    def input_samples(self) -> np.ndarray:
        """Every sample whose inputs the trace keeps (stored, or a layer's worst), sorted."""
        both = np.concatenate([self.stored_samples, self._layer_worst_index()])
        return np.unique(both).astype(np.int64)

    @_guarded("the worst samples per layer")
    def layer_worst_samples(self, layer: int | str) -> list[tuple[int, float]]:
        """(sample, the layer's SQNR in dB on it) of the layer's worst samples by its own
        per-sample SQNR, worst first (at most 4; empty for traces before 1.2 and layers
        without a tensor). ``input_samples`` says which of them have their inputs kept."""
        idx = self.layer_index(layer)
        if f"{LAYER_WORST}/layers" not in self._f:
            return []
        ds = self._dataset(f"{LAYER_WORST}/layers", "iu")
        k = self._check_shape(ds, (len(self.layers), None))[1]
        if k > 64:
            raise self._corrupt(f"{LAYER_WORST}/layers keeps {k} samples per layer")
        samples = np.asarray(self._read(ds.name, (len(self.layers), k), "iu", idx), np.int64)
        sq = self._float(f"{LAYER_WORST}/sqnr_db", (len(self.layers), k), idx)
        if np.any(samples >= self._sample_bound()):
            raise self._corrupt(f"{LAYER_WORST}/layers names samples the trace does not have")
        return [(int(s), float(v)) for s, v in zip(samples, sq, strict=True) if s >= 0]

    @_guarded("the culprits")
    def culprits(self) -> list[Culprit]:
        """The ranked culprits written by the tracer (empty for schema 1.0 traces)."""
        key = "analysis/culprits"
        if key not in self._f:
            return []
        index = np.asarray(self._read(f"{key}/index", (None,), "iu"), dtype=np.int64)
        n = len(index)
        if n > len(self.layers) or np.any((index < 0) | (index >= len(self.layers))):
            raise self._corrupt(f"{key} names layers the trace does not have")
        layer, kind, reason = (self._strings(f"{key}/{c}", n) for c in ("layer", "kind", "reason"))
        score = self._float(f"{key}/score", (n,))
        # Older tracers ranked rows whose tensor was never verified: never show those.
        return [
            Culprit(a, int(b), c, float(d), e)
            for a, b, c, d, e in zip(layer, index, kind, score, reason, strict=True)
            if self.layers[int(b)].ranked and math.isfinite(float(d))
        ]

    @_guarded("the weight statistics")
    def weight_channels(self, layer: int | str) -> dict[str, np.ndarray] | None:
        """Per output channel of a layer's weights: ``sqnr_db`` and ``range`` (max |w|)."""
        key = f"analysis/weights/channels/{self.layer_index(layer):05d}"
        if key not in self._f:
            return None
        sq = self._float(f"{key}/sqnr_db", (None,))
        return {"sqnr_db": sq, "range": self._float(f"{key}/range", (len(sq),))}

    @_guarded("the per-channel sums")
    def channel_sqnr_db(self, layer: int | str) -> np.ndarray | None:
        """Accumulated SQNR per channel (last axis) of a layer's activations, all samples."""
        key = f"analysis/channels/{self.layer_index(layer):05d}"
        if key not in self._f:
            return None
        f2 = self._float(f"{key}/sum_f2", (None,))
        e2 = self._float(f"{key}/sum_e2", (len(f2),))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(10 * np.log10(f2 / e2))

    @_guarded("the custom metrics")
    def custom_metrics(self, part: str = "layers") -> dict[str, StoredMetric]:
        """The user metrics the trace was made with (``qdebug trace --metric``) by name, each
        with one value per layer (``part="layers"``) or per output (``"outputs"``): values and
        definitions as stored; the code that computed them is never imported."""
        if part not in ("layers", "outputs"):
            raise ValueError(part)
        width = len(self.layers) if part == "layers" else len(self.outputs)
        key = f"metrics/{part}/{user_metrics.GROUP}"
        g = self._f.get(key)
        if not isinstance(g, h5py.Group):
            return {}
        if len(g) > MAX_ROWS:
            raise self._corrupt(f"{key} declares {len(g):,} metrics")
        out = {}
        for name in sorted(g):
            ds = self._dataset(f"{key}/{name}")
            with memory_cap(_MARGIN):
                attrs = {a: _text(_plain(ds.attrs.get(a, "")))[:1000] for a in
                         ("unit", "definition", "source", "error")}
            out[_text(name)] = StoredMetric(
                _text(name), attrs["unit"], attrs["definition"], attrs["source"],
                self._float(f"{key}/{name}", (width,)), attrs["error"],
            )
        return out

    @_guarded("the per-channel sums")
    def channel_stats(self, layer: int | str) -> dict[str, np.ndarray] | None:
        """Per channel (last axis) of a layer's activations, over all samples: ``sum_f2``,
        ``sum_e2``, ``sqnr_db``, ``clipped`` (float values outside the calibrated range),
        ``saturated`` (raw values at a range end not representing 0; traces from 1.2 on, else
        absent), ``count`` (values per channel) and the fractions ``clip_fraction`` and
        ``saturation``. None when the trace has no per-channel sums for the layer."""
        idx = self.layer_index(layer)
        key = f"analysis/channels/{idx:05d}"
        if key not in self._f:
            return None
        f2 = self._float(f"{key}/sum_f2", (None,))
        c = len(f2)
        out = {"sum_f2": f2, "sum_e2": self._float(f"{key}/sum_e2", (c,)),
               "clipped": self._float(f"{key}/clipped", (c,))}
        if f"{key}/saturated" in self._f:
            out["saturated"] = self._float(f"{key}/saturated", (c,))
        return channel_metrics(out, self._pooled_count(idx))

    def _pooled_count(self, idx: int) -> float:
        key = "metrics/layers/pooled/stat_count"
        if key not in self._f:
            return math.nan
        return float(self._float(key, (len(self.layers),))[idx])

    @_guarded("the worst samples")
    def worst_samples(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The samples with the lowest output SQNR (worst first) and their inputs by name."""
        if "samples/worst" not in self._f:
            return np.zeros(0, dtype=np.int64), {}
        idx = np.asarray(self._read("samples/worst/index", (None,), "iu"), dtype=np.int64)
        if len(idx) > self.n_samples:
            raise self._corrupt(f"{len(idx)} worst samples but n_samples is {self.n_samples}")
        g = self._f["samples/worst/inputs"]
        ins = {}
        for k in g:
            ds = self._dataset(f"samples/worst/inputs/{k}")
            shape = (len(idx), *([None] * (len(ds.shape or ()) - 1)))
            ins[_text(ds.attrs.get("name", k))] = self._read(ds.name, shape)
        return idx, ins

    def to_dataframe(self) -> Any:
        """A pandas DataFrame, one row per layer, the JSON report's layer columns."""
        from qdebug.notebook import layers_dataframe

        return layers_dataframe(self)

    def ops_dataframe(self) -> Any:
        """A pandas DataFrame, one row per op, the JSON report's op columns."""
        from qdebug.notebook import ops_dataframe

        return ops_dataframe(self)

    def _repr_html_(self) -> str:
        """Jupyter's view: a small table of pooled numbers (no activations are read)."""
        from qdebug.notebook import trace_html

        return trace_html(self)

    def iter_layers(self) -> Iterator[tuple[int, LayerRecord]]:
        """(index, record) of every layer in topological order."""
        return iter(enumerate(self.layers))


def _kind_name(kinds: str) -> str:
    return "strings" if kinds == "s" else "numbers"


def _plain(value: Any) -> Any:
    """An attribute value as plain, JSON-serializable Python (whatever the file holds)."""
    if isinstance(value, np.void):
        value = value.tobytes()
    elif isinstance(value, np.ndarray):
        value = [_plain(v) for v in value.tolist()] if value.size <= MAX_ROWS else str(value)
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _decode_attr(value: Any) -> Any:
    value = _plain(value)
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


def open_trace(path: str | Path) -> Trace:
    """Open a trace for reading. Raises ``TraceFileError`` with a clear message when the file
    is missing, not HDF5, not a trace, incomplete, of an unsupported schema major version, or
    damaged (any read that fails, any declared size or shape that does not add up)."""
    return Trace(path)
