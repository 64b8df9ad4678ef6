"""``tracer.tfenv.without_info_lines``: C++ ``INFO:`` lines written to stderr inside the block
are dropped; every other line reaches stderr, also when the block raises."""

from __future__ import annotations

import os

import pytest

from qdebug.tracer.tfenv import without_info_lines


def test_info_lines_are_dropped_and_the_rest_kept(capfd: pytest.CaptureFixture[str]) -> None:
    with without_info_lines():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"ERROR: something LiteRT says\n")
    err = capfd.readouterr().err
    assert "XNNPACK delegate" not in err
    assert "ERROR: something LiteRT says\n" in err


def test_an_errors_lines_reach_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError), without_info_lines():
        os.write(2, b"ERROR: unresolved custom op\nINFO: noise\n")
        raise ValueError("failed")
    err = capfd.readouterr().err
    assert "ERROR: unresolved custom op" in err and "noise" not in err
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"  # stderr is the terminal's again
