"""Importing TensorFlow (and tfmot) quietly, silencing what the converter prints to stdout,
keeping Python's collector off the objects TensorFlow made (during a trace, and when the
process that ran one exits), and numpy's large arrays on small pages during a trace."""

from __future__ import annotations

import atexit
import contextlib
import gc
import io
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Within this block, the objects alive when it began are left out of Python's cyclic
    garbage collection (``gc.freeze``). TensorFlow, Keras and the model are ~400,000 objects,
    and each full collection the trace's allocations trigger walked them all: 0.25 s each,
    one to two per trace (8–10 % of char_conv1d's and lstm_attention's, bench/README.md). They
    are handed back at the end; a freeze made by the caller before is left as it was."""
    mine = gc.get_freeze_count() == 0
    if mine:
        gc.freeze()
    try:
        yield
    finally:
        if mine:
            gc.unfreeze()


#: Set to 1 to keep Python's last garbage collections at exit over TensorFlow's objects.
EXIT_GC_VARIABLE = "QDEBUG_EXIT_GC"
_exit_freeze_registered = False


def freeze_at_exit() -> None:
    """Once per process: as the interpreter exits, freeze the heap (``gc.freeze``), so that
    Python's last collections do not walk the ~400,000 objects TensorFlow made. They cost a
    script that called ``qdebug.trace`` 0.8–1.3 s at its very end (bench/README.md); the
    process's memory goes back to the system whole. Until then nothing changes: the caller's
    garbage is collected as usual. What the freeze skips is finalizing objects that are still
    in reference cycles when the interpreter shuts down, which Python does not promise to do
    either; atexit handlers, ``weakref.finalize`` callbacks and open files run and close as
    usual. ``QDEBUG_EXIT_GC=1`` keeps the collections."""
    global _exit_freeze_registered
    if _exit_freeze_registered or os.environ.get(EXIT_GC_VARIABLE, "") == "1":
        return
    atexit.register(gc.freeze)
    _exit_freeze_registered = True


#: Set to 1 to leave numpy asking for transparent huge pages during a trace (its default).
HUGE_PAGES_VARIABLE = "QDEBUG_HUGE_PAGES"


@contextlib.contextmanager
def small_pages() -> Iterator[None]:
    """Within this block numpy does not ask the kernel for transparent huge pages for its large
    arrays (``madvise(MADV_HUGEPAGE)`` on every array of 4 MB or more, numpy's default on
    Linux). A trace makes and drops arrays of tens of MB every batch (a 128×128 model's
    activations, their dequantized values and errors), and where the kernel compacts memory
    to find each new huge page (``defrag`` at its usual ``madvise``) that is kernel time the
    size of the statistics: on vgg_edges 0.9–1.2 s of system time in a 2 s trace phase,
    0.3 s with 4-kB pages, and the phase 25 % shorter (bench/README.md). The numbers are the
    same; only where the memory comes from changes. The previous setting is put back at the
    end; ``QDEBUG_HUGE_PAGES=1`` leaves numpy's."""
    import numpy as np

    # numpy's own switch behind NUMPY_MADVISE_HUGEPAGE (numpy._core in 2.x, numpy.core in 1.x)
    multiarray = getattr(getattr(np, "_core", None), "multiarray", None) or getattr(
        getattr(np, "core", None), "multiarray", None)
    set_huge = getattr(multiarray, "_set_madvise_hugepage", None)
    if set_huge is None or os.environ.get(HUGE_PAGES_VARIABLE, "") == "1":
        yield
        return
    before = bool(set_huge(False))
    try:
        yield
    finally:
        set_huge(before)


def import_tf() -> Any:
    """Import TensorFlow with its C++ and Python logging turned down; return the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if "tensorflow" not in sys.modules:
        # TensorFlow's C++ side prints absl/CUDA notices to fd 2 while importing.
        try:
            with captured_output():
                import tensorflow as tf
        except ImportError as exc:  # `pip install qdebug` installs the trace reader only
            from qdebug.errors import QdebugError

            raise QdebugError(
                f"this command needs TensorFlow, which cannot be imported ({exc})",
                "install it with: pip install 'qdebug[trace]'",
            ) from exc
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover - absl ships with TF
        pass
    return tf


@contextlib.contextmanager
def _fds_into(fds: tuple[int, ...]) -> Iterator[list[str]]:
    """Within the block, the file descriptors ``fds`` write into a temporary file; when it
    ends they are restored and what was written is appended to the list yielded."""
    sink: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            for fd in fds:
                os.dup2(tmp.fileno(), fd)
            yield sink
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip(fds, saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
            tmp.seek(0)
            sink.append(tmp.read().decode("utf-8", "replace"))


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Redirect the process's stdout and stderr (file descriptors included) into a list of one
    string.

    The converter prints "Saved artifact at ..." blocks (Keras 3 export) and C++ log lines; they
    must not reach the user's terminal or a ``--format json`` consumer, but they belong in the
    error message when conversion fails.
    """
    sink: list[str] = []
    buffer = io.StringIO()
    written: list[str] = []
    try:
        with _fds_into((1, 2)) as written, contextlib.redirect_stdout(buffer):
            yield sink
    finally:
        sink.append(buffer.getvalue() + "".join(written))


_stderr_lock = threading.Lock()


@contextlib.contextmanager
def without_info_lines() -> Iterator[None]:
    """Within this block, what C++ writes to stderr is held back; its ``INFO:`` lines (LiteRT's
    "Created TensorFlow Lite XNNPACK delegate for CPU.") are dropped and every other line is
    written to stderr when the block ends, an error's as well."""
    written: list[str] = []
    try:
        with _stderr_lock, _fds_into((2,)) as written:
            yield
    finally:
        kept = [ln for ln in "".join(written).splitlines(keepends=True)
                if not ln.startswith("INFO: ")]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def import_tfmot() -> Any:
    """``tensorflow_model_optimization``, imported without leaving ``TF_USE_LEGACY_KERAS``
    changed."""
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as tfmot
    finally:
        if before is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = before
    return tfmot
