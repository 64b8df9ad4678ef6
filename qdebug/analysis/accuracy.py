"""Task accuracy against labels (``qdebug trace --labels``): float and INT8 accuracy and the
samples whose answer quantization flipped. Reads the store only; never imports TensorFlow."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qdebug.store.reader import Trace

#: Sort keys of the worst-samples lists.
SORT_KEYS = ("sqnr", "flipped")


@dataclass(frozen=True)
class Accuracy:
    """Accuracy of the float and the INT8 model against the labels of every traced sample."""

    output: str
    """The classifier output whose arg-max is the prediction."""
    source: str
    """Where the labels came from."""
    labels: np.ndarray
    float_pred: np.ndarray
    int8_pred: np.ndarray

    @property
    def float_accuracy(self) -> float:
        """Share of samples the float model gets right."""
        return float(np.mean(self.float_pred == self.labels)) if len(self.labels) else math.nan

    @property
    def int8_accuracy(self) -> float:
        """Share of samples the INT8 model gets right."""
        return float(np.mean(self.int8_pred == self.labels)) if len(self.labels) else math.nan

    @property
    def drop(self) -> float:
        """``float_accuracy − int8_accuracy``: what quantization cost."""
        return self.float_accuracy - self.int8_accuracy

    @property
    def right_to_wrong(self) -> np.ndarray:
        """Samples the float model gets right and the INT8 model wrong."""
        ok_f, ok_q = self.float_pred == self.labels, self.int8_pred == self.labels
        return np.nonzero(ok_f & ~ok_q)[0]

    @property
    def wrong_to_right(self) -> np.ndarray:
        """Samples the float model gets wrong and the INT8 model right."""
        ok_f, ok_q = self.float_pred == self.labels, self.int8_pred == self.labels
        return np.nonzero(~ok_f & ok_q)[0]

    def flipped(self) -> dict[str, list[int]]:
        """``{"right_to_wrong": [...], "wrong_to_right": [...]}``, sample positions."""
        return {
            "right_to_wrong": [int(i) for i in self.right_to_wrong],
            "wrong_to_right": [int(i) for i in self.wrong_to_right],
        }

    def flip_of(self, sample: int) -> str:
        """``right→wrong``, ``wrong→right`` or ``""`` for one sample."""
        f = self.float_pred[sample] == self.labels[sample]
        q = self.int8_pred[sample] == self.labels[sample]
        return "right→wrong" if f and not q else "wrong→right" if q and not f else ""


def accuracy(trace: Trace) -> Accuracy | None:
    """The trace's accuracy against labels; None when it was traced without ``--labels``."""
    got = trace.labels()
    if got is None:
        return None
    return Accuracy(got["output"], got["source"], got["label"], got["float_pred"],
                    got["int8_pred"])


def sample_order(sqnr_db: np.ndarray, acc: Accuracy | None, by: str = "sqnr") -> np.ndarray:
    """Sample positions for a worst-samples list: lowest SQNR first (``sqnr``), or
    (``flipped``) the samples whose answer flipped right→wrong first, then wrong→right, each by
    SQNR, then the rest by SQNR."""
    if by not in SORT_KEYS:
        raise ValueError(f"sort by one of {SORT_KEYS}, not {by!r}")
    sq = np.where(np.isnan(sqnr_db), np.inf, np.asarray(sqnr_db, dtype=np.float64))
    if by == "sqnr" or acc is None:
        return np.argsort(sq, kind="stable")
    rank = np.full(len(sq), 2)
    rank[acc.wrong_to_right[acc.wrong_to_right < len(sq)]] = 1
    rank[acc.right_to_wrong[acc.right_to_wrong < len(sq)]] = 0
    return np.lexsort((sq, rank))
