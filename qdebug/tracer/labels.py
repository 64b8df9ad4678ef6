"""Task accuracy against labels (``qdebug trace --labels``): loading the labels and logging, per
sample, the arg-max class of the first classifier output in float and in INT8."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qdebug.errors import DataError

#: ``--labels data``: the labels are the ``y`` of the ``(x, y)`` pairs the data yields.
FROM_DATA = "data"
#: Keys tried, in order, in an ``.npz`` given without ``:key``.
NPZ_KEYS = ("labels", "label", "y", "targets", "target")
#: Labels beyond this are refused as no class id of any model (they would wrap in int64).
MAX_CLASS_ID = 2**31 - 1


@dataclass
class Labels:
    """Labels as given: an array of class ids (one-hot rows are reduced to their arg-max), or
    ``None`` when they come with the data (``--labels data``)."""

    description: str
    values: np.ndarray | None


def to_classes(y: Any, where: str) -> np.ndarray:
    """Class ids from class ids or one-hot / probability rows."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] > 1:
        arr = arr.argmax(axis=1)
    elif arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(
            f"{where} has shape {arr.shape}: labels are one class id per sample",
            "give an array of shape (N,) of class ids, or (N, classes) one-hot",
        )
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise DataError(f"{where} holds non-integral labels", "give class ids")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{where} has dtype {arr.dtype}", "give integer class ids")
    # 1e30 would wrap to -2**63 in int64 and be counted wrong without a word of the cause.
    huge = np.flatnonzero((arr > MAX_CLASS_ID) | (arr < -MAX_CLASS_ID))
    if huge.size:
        i = int(huge[0])
        value = f"{arr[i]:.6g}" if arr.dtype.kind == "f" else str(int(arr[i]))
        raise DataError(
            f"{where} holds {huge.size} label(s) that are not class ids (sample {i}: {value})",
            "give class ids 0 … classes − 1, one per sample, or one-hot rows",
        )
    return arr.astype(np.int64)


def load_labels(spec: Any) -> Labels:
    """``--labels``: an array (Python API), ``labels.npy``, ``file.npz`` or ``file.npz:key``, or
    ``data`` for the ``(x, y)`` pairs of a data function or ``tf.data`` dataset."""
    if spec is None:
        raise ValueError("no labels")
    if isinstance(spec, str) and spec == FROM_DATA:
        return Labels("the (x, y) pairs of the data", None)
    if not isinstance(spec, str | Path):
        return Labels("the labels array", to_classes(spec, "the labels array"))
    text = str(spec)
    key = None
    path = Path(text)
    if not path.exists() and ".npz:" in text:
        head, key = text.rsplit(":", 1)
        path = Path(head)
    if not path.is_file():
        raise DataError(
            f"{path}: no such file (labels)",
            "give labels.npy, labels.npz[:key], or 'data' for (x, y) pairs",
        )
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a numpy file ({exc})", "give .npy or .npz") from exc
    if isinstance(loaded, np.ndarray):
        return Labels(str(path), to_classes(loaded, str(path)))
    with loaded as npz:
        keys = list(npz.keys())
        if key is None:
            key = next((k for k in NPZ_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None or key not in keys:
            raise DataError(
                f"{path} holds {keys}: which array are the labels?",
                f"name it: --labels {path}:KEY",
            )
        return Labels(f"{path}:{key}", to_classes(npz[key], f"{path}:{key}"))


@dataclass
class PredictionLog:
    """Per sample, the arg-max class of one classifier output in float and in INT8."""

    output: int
    """Position of the output in the trace's output table."""
    float_pred: list[np.ndarray] = field(default_factory=list)
    int8_pred: list[np.ndarray] = field(default_factory=list)
    classes: int = 0
    """Width of the output: labels are 0 … classes − 1."""

    def add(self, int8_out: np.ndarray, float_out: np.ndarray, scale: float) -> None:
        """A batch: ``int8_out`` raw (or float) (B, C), ``float_out`` the float reference."""
        q = np.asarray(int8_out, dtype=np.float64)
        self.classes = int(np.shape(float_out)[1])
        self.int8_pred.append((q if not scale or scale > 0 else -q).argmax(axis=1))
        self.float_pred.append(np.asarray(float_out).argmax(axis=1))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(float, int8) predictions of every sample so far."""
        if not self.float_pred:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return (np.concatenate(self.float_pred).astype(np.int64),
                np.concatenate(self.int8_pred).astype(np.int64))


def resolve(
    labels: Labels, n: int, pair_labels: dict[int, Any], start: int = 0
) -> np.ndarray:
    """The labels of the ``n`` traced samples, the first of which is sample ``start`` of the
    data (a shard's slice)."""
    if labels.values is None:
        missing = [i for i in range(n) if i not in pair_labels]
        if missing:
            raise DataError(
                f"--labels data, but sample {missing[0]} of the data is not an (x, y) pair",
                "make the data function or tf.data dataset yield (x, y), or give --labels "
                "labels.npy",
            )
        return to_classes(np.stack([np.asarray(pair_labels[i]) for i in range(n)]),
                          labels.description)
    check_count(labels, n, start)
    return labels.values[start : start + n]


def check_count(labels: Labels, n: int, start: int = 0) -> None:
    """Refuse a labels file with fewer labels than the ``n`` samples (from sample ``start``)
    to trace: called before the trace when the data's length is known, so that the error
    does not wait for the end of a long run."""
    if labels.values is not None and len(labels.values) < start + n:
        raise DataError(
            f"{labels.description} holds {len(labels.values)} labels for {start + n} samples",
            "give one label per traced sample (or fewer samples with --samples)",
        )


def file_samples(spec: Any) -> int | None:
    """The number of samples of a ``.npy`` / ``.npz`` data file, from its arrays' headers
    (no data read); None for any other form, or arrays that disagree (refused later, naming
    them)."""
    path = Path(str(spec))
    if not isinstance(spec, str | Path) or path.suffix not in (".npy", ".npz") or \
            not path.is_file():
        return None
    try:
        if path.suffix == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            return int(shape[0]) if shape else None
        with np.load(path, allow_pickle=False) as npz:
            counts = set()
            for k in npz.files:
                with npz.zip.open(f"{k}.npy") as f:
                    fmt = np.lib.format
                    v1 = fmt.read_magic(f) == (1, 0)
                    shape = (fmt.read_array_header_1_0 if v1 else fmt.read_array_header_2_0)(f)[0]
                counts.add(int(shape[0]) if shape else -1)
    except (OSError, ValueError, KeyError):
        return None  # the data's own loader says what is wrong
    return counts.pop() if len(counts) == 1 and -1 not in counts else None


def check_file_count(labels: Labels, data: Any, samples: int | None) -> None:
    """``check_count`` before anything loads, where the data is a ``.npy`` / ``.npz`` file:
    too few labels are refused in a second, not after the model is loaded and converted."""
    n = file_samples(data)
    if n is not None:
        check_count(labels, min(n, samples) if samples else n)


def label_range_warning(values: np.ndarray, classes: int, description: str) -> str | None:
    """A warning when labels fall outside the output's classes 0 … classes − 1 (a model with
    fewer classes, labels counted from 1, a padding value): those samples are wrong on both
    sides, so the accuracies mean less."""
    v = np.asarray(values).reshape(-1)
    bad = (v < 0) | (v >= classes)
    if not classes or not bad.any():
        return None
    return (
        f"{int(bad.sum())} of {len(v)} labels in {description} are outside the output's "
        f"classes 0–{classes - 1} (first: {int(v[bad][0])}): those samples count as wrong in "
        "float and in INT8 alike; check the labels match this model"
    )


def prediction_log(outputs: list[Any]) -> PredictionLog:
    """The log of the first classifier output; refused when the model has none."""
    for j, o in enumerate(outputs):
        if o.classifier:
            return PredictionLog(j)
    raise DataError(
        "--labels needs a classifier output (rank 2, more than one class); the model's outputs "
        f"are {[o.name for o in outputs]}",
        "drop --labels",
    )
