"""The stored samples of a trace: activations, model inputs, the worst samples of the output
and of each layer, and labels. The part of ``Trace`` that reads ``/samples``, ``/activations``
and ``/labels``; see ``qdebug.store.reader``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from qdebug import metrics
from qdebug.errors import TraceFileError
from qdebug.store.h5safe import MAX_SAMPLES, NUMERIC, CheckedFile, guarded, text
from qdebug.store.layer_worst import KEY as LAYER_WORST
from qdebug.store.meta import TraceMeta
from qdebug.store.schema import LayerRecord, OutputRecord


@dataclass(frozen=True)
class Activation:
    """One stored sample of one layer."""

    float: np.ndarray
    """The float reference, float32."""
    raw: np.ndarray
    """The int8 model's tensor as stored: raw integers, or float32 for a float island."""
    qp: metrics.QuantParams | None
    float_local: np.ndarray | None = None
    """f(x̂): the layer's float computation on the quantized model's own inputs (schema ≥ 1.1;
    the trace's ``float_local`` dataset)."""

    @property
    def local_ref(self) -> np.ndarray | None:
        """``float_local`` under its earlier name (kept for existing code)."""
        return self.float_local

    @property
    def dequantized(self) -> np.ndarray:
        """The int8 tensor's real values."""
        return metrics.dequantize(self.raw, self.qp)




class SampleReads(CheckedFile):
    """Lookups in the layer table, and reads of the stored samples."""

    layers: list[LayerRecord]
    outputs: list[OutputRecord]
    n_samples: int
    stored_samples: np.ndarray
    meta: TraceMeta
    _index: dict[str, int]

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

    @guarded("the labels")
    def labels(self) -> dict[str, Any] | None:
        """Per sample ``label``, ``float_pred`` and ``int8_pred`` (class ids) and the ``output``
        and ``source`` they came from (1.2, ``--labels``); None in a trace without labels.
        ``qdebug.analysis.accuracy.accuracy`` turns them into accuracies and flipped samples."""
        if "labels" not in self._f:
            return None
        n = (self.n_samples,)
        out: dict[str, Any] = {
            k: np.asarray(self._read(f"labels/{k}", n, "iu"), dtype=np.int64)
            for k in ("label", "float_pred", "int8_pred")
        }
        attrs = self._f["labels"].attrs
        out["output"] = text(attrs.get("output", ""))
        out["source"] = text(attrs.get("source", ""))
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

    @guarded("the stored activations")
    def has_activations(self, layer: int | str) -> bool:
        """Whether stored activations exist for a layer."""
        return f"activations/{self.layer_index(layer):05d}" in self._f

    def _stored(self, key: str, pos: int, kinds: str = NUMERIC) -> np.ndarray:
        """Row ``pos`` of a (stored samples, …) dataset."""
        k = len(self.stored_samples)
        ds = self._dataset(key, kinds)
        return self._read(key, (k, *([None] * (len(ds.shape or ()) - 1))), kinds, pos)

    def _worst_position(self, idx: int, sample: int) -> int | None:
        """Where ``sample``'s activation of layer ``idx`` is among the layer's worst samples'
        kept activations (``/samples/layer_worst/activations``, the first rows of the layer's
        worst list), or None."""
        key = f"{LAYER_WORST}/activations/{idx:05d}/int8"
        if key not in self._f:
            return None
        rows = int((self._dataset(key, "iuf").shape or (0,))[0])
        kept = [s for s, _ in self.layer_worst_samples(idx)][:rows]
        return kept.index(sample) if sample in kept else None

    @guarded("the stored activations")
    def has_activation(self, layer: int | str, sample: int) -> bool:
        """Whether the trace has layer ``layer``'s activation for ``sample``: a stored sample,
        or one of the layer's worst samples whose activation the trace keeps (schema 1.3)."""
        idx = self.layer_index(layer)
        if self.has_activations(idx) and sample in set(self.stored_samples.tolist()):
            return True
        return self._worst_position(idx, sample) is not None

    @guarded("the stored activations")
    def activation(self, layer: int | str, sample: int) -> Activation:
        """The float and int8 activation of one layer for one sample: a stored sample, or one
        of the layer's worst samples whose activation the trace keeps."""
        idx = self.layer_index(layer)
        key = f"activations/{idx:05d}"
        stored = key in self._f and sample in set(self.stored_samples.tolist())
        worst = None if stored else self._worst_position(idx, sample)
        if worst is not None:
            key = f"{LAYER_WORST}/activations/{idx:05d}"
            n = int(self._dataset(f"{key}/int8", "iuf").shape[0])

            def row(name: str, kinds: str = NUMERIC) -> np.ndarray:
                ds = self._dataset(f"{key}/{name}", kinds)
                return self._read(ds.name, (n, *([None] * (len(ds.shape or ()) - 1))), kinds,
                                  worst)
        elif key not in self._f:
            raise TraceFileError(f"layer {self.layers[idx].name!r} has no stored activations")
        else:
            pos = self._stored_position(sample)

            def row(name: str, kinds: str = NUMERIC) -> np.ndarray:
                return self._stored(f"{key}/{name}", pos, kinds)
        rec = self.layers[idx]
        raw = row("int8", "iuf")
        fl = np.asarray(row("float"), dtype=np.float32)
        ref = None
        if f"{key}/float_local" in self._f:
            ref = np.asarray(row("float_local"), dtype=np.float32)
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

    @guarded("the stored inputs")
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
                out[text(ds.attrs.get("name", k))] = self._read(ds.name, shape, NUMERIC, pos)
            stored = {text(v.attrs.get("name", k)) for k, v in self._f["samples/inputs"].items()}
            if stored and set(out) != stored:  # one sample's inputs under other names
                raise self._corrupt(f"{LAYER_WORST}/inputs names inputs the stored samples "
                                    "do not have")
            return out
        pos = self._stored_position(sample)
        g = self._f["samples/inputs"]
        return {
            text(g[k].attrs.get("name", k)): self._stored(f"samples/inputs/{k}", pos)
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

    @guarded("the worst samples per layer")
    def layer_worst_cap(self, name: str = "cap") -> int | None:
        """How many samples' inputs the run could keep as layers' worst (``cap`` of
        ``/samples/layer_worst``; with ``name="keep"``, how many of each layer's worst keep
        their activations); None when not recorded."""
        g = self._f.get(LAYER_WORST)
        cap = g.attrs.get(name) if g is not None else None
        if isinstance(cap, int | np.integer) and not isinstance(cap, bool) and 0 <= cap <= 4096:
            return int(cap)
        return None

    @guarded("the worst samples per layer")
    def input_samples(self) -> np.ndarray:
        """Every sample whose inputs the trace keeps (stored, or a layer's worst), sorted."""
        both = np.concatenate([self.stored_samples, self._layer_worst_index()])
        return np.unique(both).astype(np.int64)

    @guarded("the worst samples per layer")
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

    @guarded("the worst samples")
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
            ins[text(ds.attrs.get("name", k))] = self._read(ds.name, shape)
        return idx, ins
