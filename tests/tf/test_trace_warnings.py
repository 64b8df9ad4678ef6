"""Traces that run but whose numbers say little get a warning naming why (real traces of the
trained digits CNN): constant inputs, a float model whose output never changes, labels outside
the model's classes; and too few labels are refused before the trace runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import qdebug
from qdebug.errors import DataError

pytestmark = [pytest.mark.tf]


def _warnings(path: Path) -> list[str]:
    with qdebug.open(path) as tr:
        return [str(w) for w in tr.meta.get("warnings") or []]


def test_constant_inputs_and_a_constant_output_are_named(
    digits_model: Any, tmp_path: Path
) -> None:
    blank = np.zeros((24, 8, 8, 1), dtype=np.float32)
    out = qdebug.trace(digits_model, blank, out=tmp_path / "blank.h5", quiet=True)
    found = _warnings(out)
    assert any("every sample of" in w and "is constant" in w for w in found), found
    assert any("gives the same output" in w and "24 samples" in w for w in found), found


def test_real_inputs_get_neither_warning(
    digits_model: Any, digits_data: Any, tmp_path: Path
) -> None:
    out = qdebug.trace(digits_model, digits_data[:24], out=tmp_path / "real.h5", quiet=True)
    found = _warnings(out)
    assert not any("is constant" in w or "same output" in w for w in found), found


def test_labels_outside_the_classes_are_named(
    digits_model: Any, digits_data: Any, tmp_path: Path
) -> None:
    import digits_cnn

    y = digits_cnn.labels()[:24].copy()
    y[[3, 7]] = 10  # one past the last of the model's 10 classes
    out = qdebug.trace(digits_model, digits_data[:24], labels=y, out=tmp_path / "l.h5",
                       quiet=True)
    found = [w for w in _warnings(out) if "labels" in w]
    assert len(found) == 1 and "2 of 24 labels" in found[0] and "0–9" in found[0], found


def test_too_few_labels_are_refused_before_the_trace(
    digits_model: Any, digits_data: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import digits_cnn
    import qdebug.tracer.pipeline as pipeline

    def no_loop(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the samples were traced before the labels were counted")

    monkeypatch.setattr(pipeline, "trace_samples", no_loop)
    with pytest.raises(DataError, match="holds 5 labels for 200 samples"):
        qdebug.trace(digits_model, digits_data[:200], labels=digits_cnn.labels()[:5],
                     out=tmp_path / "short.h5", quiet=True)
    assert not (tmp_path / "short.h5").exists()


def test_token_ids_outside_the_vocabulary_are_named_as_data(tmp_path: Path) -> None:
    """Ids at or above an Embedding's input_dim make calibration fail inside the converter
    (GATHER out of bounds): the line says it is the data, not the conversion."""
    import keras
    from click.testing import CliRunner

    from qdebug.cli import cli

    keras.utils.set_random_seed(0)
    inp = keras.Input((6,), dtype="int32", name="ids")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4, name="emb")(inp))
    keras.Model(inp, keras.layers.Dense(2, activation="softmax")(h)).save(tmp_path / "t.keras")
    ids = np.random.default_rng(0).integers(0, 20, (32, 6)).astype(np.int32)
    ids[5, 2] = 25  # outside the 20-token vocabulary
    np.save(tmp_path / "ids.npy", ids)
    r = CliRunner().invoke(cli, ["trace", str(tmp_path / "t.keras"), "--data",
                                 str(tmp_path / "ids.npy"), "--out", str(tmp_path / "o.h5"),
                                 "--quiet"])
    assert r.exit_code == 2
    line = r.stderr.strip()
    assert "\n" not in line and "Traceback" not in r.stderr, r.stderr
    assert "index outside its table" in line and "input_dim" in line
    assert not (tmp_path / "o.h5").exists()


def test_npz_arrays_that_match_no_input_are_named(
    digits_model: Any, digits_data: Any, tmp_path: Path
) -> None:
    np.savez(tmp_path / "d.npz", image=digits_data[:24], imgae=digits_data[:24])
    out = qdebug.trace(digits_model, str(tmp_path / "d.npz"), out=tmp_path / "n.h5", quiet=True)
    found = [w for w in _warnings(out) if "match no model input" in w]
    assert len(found) == 1 and "'imgae'" in found[0] and "'image'" in found[0], found
