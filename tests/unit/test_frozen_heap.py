"""A trace keeps Python's cyclic collector off the objects alive before it began
(``qdebug.tracer.tfenv.frozen_heap``), and hands them back after, whatever happened."""

from __future__ import annotations

import gc

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
