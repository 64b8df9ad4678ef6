"""A trace keeps Python's cyclic collector off the objects alive before it began
(``qdebug.tracer.tfenv.frozen_heap``), and hands them back after, whatever happened."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from qdebug.tracer.tfenv import frozen_heap


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_objects_alive_before_are_frozen_inside_and_handed_back_after() -> None:
    assert gc.get_freeze_count() == 0
    before = [_Cycle() for _ in range(100)]
    with frozen_heap():
        assert gc.get_freeze_count() >= len(before)
        made_inside = _Cycle()
        assert gc.is_tracked(made_inside)
    assert gc.get_freeze_count() == 0
    del before, made_inside
    assert gc.collect() >= 100  # the cycles made before are collectable again


def test_handed_back_on_an_error_and_a_callers_freeze_is_left_alone() -> None:
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("the trace failed")
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with frozen_heap():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_the_command_line_leaves_the_heap_frozen_as_the_process_ends(tmp_path: Path) -> None:
    """``qdebug`` freezes the heap as it returns, so that Python's last collections do not
    walk every object TensorFlow made (0.8 s of every ``qdebug trace``); an atexit hook, which
    runs after it, sees the freeze, and the command's own exit code is kept."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"
        "sys.argv = ['qdebug', 'report', sys.argv[1]]\n"
        "from qdebug.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "missing.h5")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "frozen at exit: True" in done.stdout
