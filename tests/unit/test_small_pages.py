"""``tfenv.small_pages``: numpy's large arrays on 4-kB pages during a trace, numpy's own setting
before and after it, and ``QDEBUG_HUGE_PAGES=1`` leaving numpy's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from qdebug.tracer.tfenv import HUGE_PAGES_VARIABLE, small_pages

MB = 1 << 20


def _set_madvise_hugepage(on: bool) -> bool:
    """numpy's switch (behind NUMPY_MADVISE_HUGEPAGE); returns the setting it replaced."""
    return bool(np._core.multiarray._set_madvise_hugepage(on))  # type: ignore[attr-defined]


def _numpy_asks_for_huge_pages() -> bool:
    now = _set_madvise_hugepage(True)
    _set_madvise_hugepage(now)
    return now


def _mapping(array: np.ndarray) -> dict[str, str]:
    """The /proc/self/smaps fields of the mapping in the middle of ``array``'s data (numpy
    advises from the first whole page on, so the first page can be a mapping of its own)."""
    address = array.ctypes.data + array.nbytes // 2
    inside, fields = False, {}
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            if inside:
                break
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    assert fields, "the array's mapping is not in /proc/self/smaps"
    return fields


def _touched(nbytes: int) -> np.ndarray:
    a = np.empty(nbytes, np.uint8)
    a[:] = 1  # first touch: the kernel gives the pages now
    return a


def test_numpy_is_told_so_inside_and_gets_its_own_setting_back() -> None:
    for before in (True, False):
        _set_madvise_hugepage(before)
        try:
            with small_pages():
                assert _numpy_asks_for_huge_pages() is False
            assert _numpy_asks_for_huge_pages() is before
        finally:
            _set_madvise_hugepage(True)


def test_the_variable_leaves_numpys_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HUGE_PAGES_VARIABLE, "1")
    assert _numpy_asks_for_huge_pages() is True
    with small_pages():
        assert _numpy_asks_for_huge_pages() is True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages: Linux")
def test_a_large_array_made_inside_is_not_advised_onto_huge_pages() -> None:
    if not Path("/sys/kernel/mm/transparent_hugepage/enabled").exists():
        pytest.skip("this kernel has no transparent huge pages")
    outside = _mapping(_touched(64 * MB))
    if "hg" not in outside["VmFlags"].split():
        pytest.skip("numpy does not advise huge pages here, so there is nothing to turn off")
    with small_pages():
        inside = _mapping(_touched(64 * MB))
    assert "hg" not in inside["VmFlags"].split()  # no madvise(MADV_HUGEPAGE)
    assert inside["AnonHugePages"] == "0 kB"
