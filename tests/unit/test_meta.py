"""Trace.meta: the root attributes as a typed, frozen record (qdebug.store.meta)."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import h5py
import pytest

import qdebug
from qdebug.store.meta import DeployedKind, TraceMeta


def test_the_fixture_trace_reads_as_fields(fixture_trace: Path) -> None:
    with qdebug.open(str(fixture_trace)) as t:
        meta = t.meta
        assert isinstance(meta, TraceMeta)
        with h5py.File(fixture_trace) as f:  # each field is the attribute as h5py reads it
            assert meta.model_name == f.attrs["model_name"] == t.model_name
            assert meta.keras_flavour == f.attrs["keras_flavour"]
            assert meta.n_samples == int(f.attrs["n_samples"]) == t.n_samples
            assert list(meta.input_names) == ["image"]
        assert meta.converter.converted and meta.converter.calib_samples == 64
        assert meta.deployed == "full integer (int8 activations and weights)"
        assert meta.deployed_kind is DeployedKind.FULL_INTEGER
        assert meta["model_name"] == meta.model_name and "n_samples" in meta  # the raw view
        with pytest.raises(dataclasses.FrozenInstanceError):
            meta.model_name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(("phrase", "kind"), [
    ("full integer (int8 activations and weights)", DeployedKind.FULL_INTEGER),
    ("integer (int8 activations and weights) with 2 op(s) left in float",
     DeployedKind.INTEGER_WITH_FLOAT_OPS),
    ("int16x8 (16-bit activations, 8-bit weights) with 1 op(s) left in float",
     DeployedKind.INT16X8),
    ("dynamic range (int8 weights; float activations between ops, …)",
     DeployedKind.DYNAMIC_RANGE),
    ("float16 weights, float activations: the error measured is the weights' alone",
     DeployedKind.FLOAT16),
    ("float (not quantized)", DeployedKind.FLOAT),
    ("", DeployedKind.UNKNOWN),
])
def test_the_deployed_phrase_names_its_kind(phrase: str, kind: DeployedKind) -> None:
    assert DeployedKind.of(phrase) is kind
    assert kind.quantized_activations == (kind in (
        DeployedKind.FULL_INTEGER, DeployedKind.INTEGER_WITH_FLOAT_OPS, DeployedKind.INT16X8))


def test_a_schema_1_1_trace_without_deployed_reads_as_unknown(
    fixture_trace: Path, tmp_path: Path
) -> None:
    p = tmp_path / "old.h5"
    shutil.copy(fixture_trace, p)
    with h5py.File(p, "r+") as f:  # as written before schema 1.2
        del f.attrs["deployed"], f.attrs["deployed_kind"]
    with qdebug.open(str(p)) as t:
        assert t.meta.deployed == "" and t.meta.deployed_kind is DeployedKind.UNKNOWN


def test_attributes_of_the_wrong_type_read_as_defaults(fixture_trace: Path, tmp_path: Path) -> None:
    """A stranger's trace: a field whose attribute has another type is its default, never a
    value of the wrong type for the code that reads it."""
    p = tmp_path / "t.h5"
    shutil.copy(fixture_trace, p)
    with h5py.File(p, "r+") as f:
        f.attrs["deployed"] = 7
        f.attrs["kernel_max_abs_diff"] = "big"
        f.attrs["delegated_ops"] = '["a", 3, true]'
        f.attrs["converter"] = '{"calib_samples": "many", "int8_io": "yes"}'
        f.attrs["deployed_kind"] = "quantum"
    with qdebug.open(str(p)) as t:
        m = t.meta
        assert m.deployed == "" and m.deployed_kind is DeployedKind.UNKNOWN
        assert math.isnan(m.kernel_max_abs_diff) and m.delegated_ops == (3,)
        assert m.converter.calib_samples is None and m.converter.int8_io is False
