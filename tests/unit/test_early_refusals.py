"""Bad input that needs no model is refused before the model loads: in a second, one line,
not after TensorFlow's import and the conversion (~40 s on a real model)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli_helpers import assert_one_line_error
from qdebug.cli import cli
from qdebug.tracer.labels import check_file_count, load_labels


@pytest.mark.parametrize("form", ["npy", "npz"])
def test_too_few_labels_for_a_data_file_are_refused_before_the_model_loads(
    tmp_path: Path, form: str
) -> None:
    model = tmp_path / "model.keras"
    model.write_bytes(b"never opened: the labels are refused first")
    x = np.zeros((32, 4), np.float32)
    data = tmp_path / f"x.{form}"
    if form == "npy":
        np.save(data, x)
    else:
        np.savez(data, a=x, b=x[:, :2])
    np.save(tmp_path / "y.npy", np.arange(10))
    had_tf = "tensorflow" in sys.modules
    r = CliRunner().invoke(cli, ["trace", str(model), "--data", str(data), "--labels",
                                 str(tmp_path / "y.npy"), "--out", str(tmp_path / "t.h5")])
    assert_one_line_error(r.exit_code, r.stderr, "holds 10 labels for 32 samples")
    assert had_tf or "tensorflow" not in sys.modules
    # --samples 10: ten labels are enough, the check passes
    check_file_count(load_labels(str(tmp_path / "y.npy")), str(data), 10)


def test_running_out_of_memory_is_one_line_saying_so(tmp_path: Path) -> None:
    """A MemoryError outside a trace's own reads (which name the part of the trace) is the
    machine's limit, not a bug: one line saying memory ran out and what to do, not
    "unexpected MemoryError ... please report it". The command allocates an array no machine
    holds (numpy's own MemoryError), through the real command group."""
    import click

    @click.command("trace")
    def huge() -> None:
        np.empty((2**42, 16), np.float32)

    saved = cli.commands["trace"]
    cli.add_command(huge, "trace")
    try:
        r = CliRunner().invoke(cli, ["trace"])
    finally:
        cli.add_command(saved, "trace")
    assert_one_line_error(r.exit_code, r.stderr, "out of memory in qdebug trace",
                          "Unable to allocate", "--batch-size")
    assert "unexpected" not in r.stderr and "report it" not in r.stderr
