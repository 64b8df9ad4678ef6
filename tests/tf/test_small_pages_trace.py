"""A trace runs with numpy's large arrays on small pages (``tfenv.small_pages``), and the
caller's setting is back when it returns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

import qdebug


def _numpy_asks_for_huge_pages() -> bool:
    switch = np._core.multiarray._set_madvise_hugepage  # type: ignore[attr-defined]
    now = bool(switch(True))
    switch(now)
    return now


class _Watched:
    """Samples that note numpy's huge-page setting each time the trace draws one."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.seen = x, list[bool]()

    def __len__(self) -> int:
        return len(self.x)

    def __iter__(self) -> Iterator[np.ndarray]:
        for sample in self.x:
            self.seen.append(_numpy_asks_for_huge_pages())
            yield sample


def test_samples_are_traced_on_small_pages(tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(20, 8)).astype("float32")
    data = _Watched(x)
    assert _numpy_asks_for_huge_pages()  # numpy's default
    qdebug.trace(model, data, calib=x, out=tmp_path / "t.h5", quiet=True)
    assert len(data.seen) >= len(x)
    assert not any(data.seen)
    assert _numpy_asks_for_huge_pages()
