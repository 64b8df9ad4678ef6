"""Writes a trace: streamed per-sample statistics, stored activations, then an atomic rename."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from qdebug import user_metrics
from qdebug.errors import QdebugError
from qdebug.store import analysis_groups, layer_worst
from qdebug.store.analysis_groups import UTF8_STR, write_table
from qdebug.store.layer_worst import LayerWorstSamples
from qdebug.store.outfile import check_trace_target, claim, temp_name
from qdebug.store.schema import (
    FLOAT_ISLAND_COLUMNS,
    FORMAT_NAME,
    LAYER_COLUMNS,
    OP_COLUMNS,
    OUTPUT_COLUMNS,
    SCHEMA_VERSION,
    AnalysisArrays,
    Culprit,
    CulpritRanker,
    FloatIsland,
    LayerRecord,
    OpRecord,
    OutputRecord,
)
from qdebug.store.stats_table import GROW, StatsTable
from qdebug.store.write_guard import (
    _FAILED,
    _constructing,
    _quiet_h5py_dealloc,
    _quiet_h5py_excepthook,
    _writing,
)
from qdebug.store.write_guard import failed_writes as failed_writes  # the CLI asks it here
from qdebug.user_metrics import StoredMetric, UserMetric


def check_target(path: Path) -> None:
    """Refuse a trace path that cannot or must not be written (checked before any work, and
    again here; see ``qdebug.store.outfile``)."""
    check_trace_target(Path(path))


def _json_attr(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class TraceWriter:
    """Writes one trace to a temporary file of its own next to ``path`` (``.<name>.<random>
    .partial``) and renames it to ``path`` on ``commit``, holding ``path``'s lock meanwhile.

    Used as a context manager: leaving the block by an exception (Ctrl-C, SIGTERM included)
    deletes the partial file, so no half-written trace is ever left under the final name.
    """

    @_constructing
    def __init__(
        self,
        path: Path,
        *,
        attrs: Mapping[str, Any],
        layers: Sequence[LayerRecord],
        outputs: Sequence[OutputRecord],
        input_names: Sequence[str],
        tflite: bytes,
        float_islands: Sequence[FloatIsland | Mapping[str, Any]],
        store_samples: int,
        ops: Sequence[OpRecord] = (),
        custom_metrics: Sequence[UserMetric] = (),
        rank_culprits: CulpritRanker | None = None,
    ) -> None:
        self.path = Path(path)
        self.rank_culprits = rank_culprits
        """Ranks the culprits at ``commit`` (``/analysis/culprits``); None writes none."""
        self.custom_metrics = list(custom_metrics)
        """User metrics (``--metric``), computed from the pooled statistics at ``commit``."""
        self._custom_values: dict[str, list[StoredMetric]] = {}
        self._claim = contextlib.ExitStack()
        self.layers = list(layers)
        self.outputs = list(outputs)
        self.ops = ops
        """Written at ``commit`` (the tracer fills in which ops got a local error)."""
        self.input_names = list(input_names)
        self.store_samples = int(store_samples)
        self._stored = 0
        self._slots: dict[tuple[str, str], h5py.Dataset] = {}
        self._failed = False
        check_target(self.path)
        self._claim.enter_context(claim(self.path))
        self.tmp = temp_name(self.path)
        # A failed write (disk full) shows first in h5py objects collected mid-write; the
        # error itself is raised by the next write or the close, as one line (``_writing``).
        self._hooks = sys.unraisablehook, sys.excepthook
        sys.unraisablehook, sys.excepthook = _quiet_h5py_dealloc, _quiet_h5py_excepthook
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.f = h5py.File(self.tmp, "w", libver=("earliest", "v110"))  # h5dump 1.10 reads it
        except OSError as exc:
            raise QdebugError(
                f"cannot write the trace to {self.path.parent}/: {exc.strerror or exc}",
                "choose a writable folder with --out",
            ) from exc
        f = self.f
        f.attrs["format"] = FORMAT_NAME
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["complete"] = False
        for key, value in attrs.items():
            f.attrs[key] = (
                value if isinstance(value, str | int | float | bool) else _json_attr(value)
            )
        model = f.create_group("model")
        model.create_dataset(
            "int8_tflite", data=np.frombuffer(tflite, dtype=np.uint8), compression="gzip"
        )
        write_table(f.create_group("layers"), self.layers, LAYER_COLUMNS)
        write_table(f.create_group("outputs"), self.outputs, OUTPUT_COLUMNS)
        # Written as a table without the ``columns`` attribute, as earlier versions did.
        fi = model.create_group("float_islands")
        islands = [FloatIsland.of(i) for i in float_islands]
        for col, kind in FLOAT_ISLAND_COLUMNS.items():
            vals = [getattr(i, col) for i in islands]
            if kind == "s":
                fi.create_dataset(col, data=np.array(vals, dtype=object), dtype=UTF8_STR)
            else:
                fi.create_dataset(col, data=np.array(vals, dtype=np.int64))
        m = f.create_group("metrics")
        self._layer_stats = StatsTable(m.create_group("layers"), len(self.layers))
        self._output_stats = StatsTable(m.create_group("outputs"), len(self.outputs))
        self._op_stats = (
            StatsTable(m.create_group("ops"), len(self.ops), per_sample=False)
            if self.ops
            else None
        )
        self._top1 = m["outputs"].create_dataset(
            "top1_match",
            shape=(0, len(self.outputs)),
            maxshape=(None, len(self.outputs)),
            dtype=np.int8,
            chunks=(GROW, max(len(self.outputs), 1)),
        )
        s = f.create_group("samples")
        self._sample_index = s.create_dataset(
            "index", shape=(0,), maxshape=(self.store_samples,), dtype=np.int64, chunks=True
        )
        s.create_group("inputs")
        f.create_group("activations")

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.discard()

    def discard(self) -> None:
        """Close and delete the partial file."""
        try:
            self.f.close()
        except (OSError, RuntimeError):
            if not self._failed:
                raise
        finally:
            self.tmp.unlink(missing_ok=True)
            self._claim.close()
            if not self._failed:
                sys.unraisablehook, sys.excepthook = self._hooks

    def _abandon(self) -> None:
        """Undo a constructor that failed part way (any of its steps)."""
        f = getattr(self, "f", None)
        if f is not None:
            try:
                f.close()
            except (OSError, RuntimeError):
                self._failed = True
                _FAILED.append(self.path)
        tmp = getattr(self, "tmp", None)
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        stack = getattr(self, "_claim", None)
        if stack is not None:
            stack.close()
        hooks = getattr(self, "_hooks", None)
        if hooks is not None and not getattr(self, "_failed", False):
            sys.unraisablehook, sys.excepthook = hooks

    @_writing
    def add_batch(
        self,
        layer_stats: Mapping[str, np.ndarray],
        output_stats: Mapping[str, np.ndarray],
        top1: np.ndarray,
        op_stats: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Append the statistics of a batch of samples: layers (B, L), outputs (B, O), ops
        (B, ops; pooled only)."""
        self._layer_stats.append(layer_stats)
        if self._op_stats is not None and op_stats is not None:
            self._op_stats.append(op_stats)
        self._output_stats.append(output_stats)
        n = self._top1.shape[0]
        self._top1.resize(n + top1.shape[0], axis=0)
        self._top1[n:] = top1.astype(np.int8)

    def add_custom(self, parts: Mapping[str, Sequence[StoredMetric]]) -> None:
        """User metrics computed while tracing (per-sample and output metrics) or merged, per
        part (``layers``, ``outputs``, ``ops``, ``model``), written at ``commit``."""
        for part, stored in parts.items():
            if part not in user_metrics.PARTS:
                raise ValueError(part)
            self._custom_values.setdefault(part, []).extend(stored)

    @property
    def wants_samples(self) -> bool:
        """Whether another sample's activations should still be stored."""
        return self._stored < self.store_samples

    def store_sample(
        self,
        sample: int,
        inputs: Sequence[np.ndarray],
        activations: Mapping[int, tuple[np.ndarray, np.ndarray]],
        local_ref: Mapping[int, np.ndarray] | None = None,
    ) -> None:
        """Keep one sample's inputs and, per layer index, its (float, raw int8) activations and
        f(x̂), the layer's float computation on the int8 inputs, where there is one."""
        self.store_samples_of(
            sample, 1, [np.asarray(x)[None] for x in inputs],
            {i: (np.asarray(f)[None], np.asarray(q)[None]) for i, (f, q) in activations.items()},
            None if local_ref is None else {i: np.asarray(v)[None] for i, v in local_ref.items()},
        )

    @_writing
    def store_samples_of(
        self,
        first: int,
        count: int,
        inputs: Sequence[np.ndarray],
        activations: Mapping[int, tuple[np.ndarray, np.ndarray]],
        local_ref: Mapping[int, np.ndarray] | None = None,
    ) -> int:
        """``store_sample`` for the ``count`` consecutive samples ``first``, ``first`` + 1, …
        at once: each array holds them along its first axis (a batch). One write per dataset
        instead of one per dataset and sample, whose overhead was most of storing 16 samples
        of a small model. Keeps as many as there are slots left; returns how many."""
        k = self._stored
        m = min(self.store_samples - k, count)
        if m <= 0:
            return 0
        self._sample_index.resize(k + m, axis=0)
        self._sample_index[k:k + m] = np.arange(first, first + m)
        for i, (name, x) in enumerate(zip(self.input_names, inputs, strict=True)):
            self._slot("samples/inputs", str(i), x[0], name)[k:k + m] = x[:m]
        for idx, (fl, q) in activations.items():
            where = f"activations/{idx:05d}"
            self._slot(where, "float", fl[0])[k:k + m] = fl[:m]
            self._slot(where, "int8", q[0])[k:k + m] = q[:m]
            if local_ref is not None and idx in local_ref:
                ref = np.asarray(local_ref[idx][:m], dtype=np.float32)
                self._slot(where, "float_local", ref[0])[k:k + m] = ref
        self._stored += m
        return m

    def _slot(self, where: str, name: str, x: np.ndarray, input_name: str = "") -> h5py.Dataset:
        """The dataset ``where/name`` of the stored samples, made (with its group's and its own
        attributes) on the first sample; later samples find it here, not through h5py's
        lookups (the time of storing 16 samples of a small model was mostly these)."""
        ds = self._slots.get((where, name))
        if ds is not None:
            return ds
        group = self.f.require_group(where)
        if where.startswith("activations/"):
            group.attrs["layer"] = self.layers[int(where.rpartition("/")[2])].name
        shape = (self.store_samples, *x.shape)
        ds = group[name] if name in group else group.create_dataset(
            name,
            shape=shape,
            maxshape=shape,
            dtype=x.dtype,
            chunks=(1, *x.shape),
            compression="lzf" if x.size else None,
        )
        if input_name:
            ds.attrs["name"] = input_name
        self._slots[(where, name)] = ds
        return ds

    @_writing
    def write_analysis(
        self, analysis: AnalysisArrays | Mapping[str, Any], weights: Sequence[Any]
    ) -> None:
        """Ranges, per-channel sums, worst samples and weight statistics (``/analysis``)."""
        analysis_groups.write_analysis(self.f, AnalysisArrays.of(analysis), weights,
                                       self.input_names)

    @_writing
    def write_labels(
        self, labels: np.ndarray, float_pred: np.ndarray, int8_pred: np.ndarray, output: str,
        source: str,
    ) -> None:
        """``/labels`` (1.2, optional): per sample the label and the float and int8 arg-max
        class of the classifier output ``output``."""
        g = self.f.create_group("labels")
        for key, values in (("label", labels), ("float_pred", float_pred),
                            ("int8_pred", int8_pred)):
            g.create_dataset(key, data=np.asarray(values, dtype=np.int64))
        g.attrs["output"] = output
        g.attrs["source"] = source

    def write_layer_worst(self, worst: LayerWorstSamples) -> None:
        """Per layer its worst samples, and the inputs of the worst few
        (``/samples/layer_worst``)."""
        layer_worst.write(self.f, worst, self.input_names)

    def _rank_per_output(
        self, layer_m: dict[str, np.ndarray], out_m: dict[str, np.ndarray],
        op_m: dict[str, np.ndarray] | None,
    ) -> list[Culprit]:
        """Each output's culprits (``rank_culprits`` against that output), in the outputs'
        order, each tagged with the output it is about."""
        assert self.rank_culprits is not None
        op_sums = self._op_stats.sums if self._op_stats is not None else None
        found: list[Culprit] = []
        for j, o in enumerate(self.outputs):
            top1 = float("nan")
            if o.classifier and self._top1.shape[0]:
                top1 = float(np.mean(self._top1[:, j] == 1))
            ranked = self.rank_culprits(
                self.layers, layer_m, self._layer_stats.sums, float(out_m["sqnr_db"][j]),
                o.layer, top1_agreement=top1, ops=self.ops or (), op_m=op_m,
                op_stats=op_sums or None,
            )
            found += [replace(c, output=o.name) for c in ranked]
        return found

    @_writing
    def commit(self, **final_attrs: Any) -> Path:
        """Finish pooled metrics and the culprits (ranked by ``rank_culprits``), mark complete,
        and rename to the final path."""
        f = self.f
        scales = np.array([r.scale for r in self.layers], dtype=np.float64)
        layer_m = self._layer_stats.finish(scales)
        out_scales = np.array([o.scale for o in self.outputs], dtype=float)
        out_m = self._output_stats.finish(out_scales)
        user_metrics.write(f["metrics/layers"], self.custom_metrics, self._layer_stats.sums, scales)
        user_metrics.write(f["metrics/outputs"], self.custom_metrics, self._output_stats.sums,
                           out_scales)
        op_m: dict[str, np.ndarray] | None = None
        if self._op_stats is not None:
            op_m = self._op_stats.finish(np.array([o.scale for o in self.ops], dtype=np.float64))
            write_table(f.create_group("ops"), self.ops, OP_COLUMNS)
        for part, stored in self._custom_values.items():
            if stored and (part != "ops" or self._op_stats is not None):
                user_metrics.write_stored(f["metrics"].require_group(part), stored)
        sums = self._layer_stats.sums
        if sums and self.rank_culprits is not None:
            analysis_groups.write_culprits(self.f, self._rank_per_output(layer_m, out_m, op_m))
        n = self._stored
        for group in (f["samples/inputs"], *[g for g in f["activations"].values()]):
            for ds in group.values():
                ds.resize(n, axis=0)
        f.attrs["n_samples"] = self._layer_stats.rows
        f.attrs["n_stored"] = n
        for key, value in final_attrs.items():
            f.attrs[key] = (
                value if isinstance(value, str | int | float | bool) else _json_attr(value)
            )
        f.attrs["complete"] = True
        f.close()
        os.replace(self.tmp, self.path)
        self._claim.close()
        sys.unraisablehook, sys.excepthook = self._hooks
        return self.path
