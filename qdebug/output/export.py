"""``qdebug export``: write back the exact INT8 model and the stored inputs of a trace.

Files are written atomically: to a temporary file in the destination folder, then renamed, so
an interrupted export never leaves a partial file under the final name. An existing file is
kept unless ``force`` is given.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from qdebug.errors import QdebugError
from qdebug.store.filekind import special_kind
from qdebug.store.reader import Trace
from qdebug.store.schema import SAMPLE_INDEX


@dataclass(frozen=True)
class Exported:
    """What ``export_trace`` wrote."""

    tflite: Path | None
    inputs: Path | None
    samples: tuple[int, ...]
    """Positions in the traced data of the samples in the inputs file, in order."""
    recipe: Path | None = None
    """The ai-edge-quantizer recipe written beside ``tflite`` (traces of AEQ models)."""


def recipe_path(tflite: Path) -> Path:
    """Where the recipe of an exported AEQ model goes: ``<model>_recipe.json`` beside it (the
    name ai-edge-quantizer's own ``save`` gives it)."""
    return tflite.with_name(f"{tflite.stem}_recipe.json")


def stored_inputs(trace: Trace) -> dict[str, np.ndarray]:
    """The inputs of every sample the trace keeps (the stored samples and each layer's worst,
    ``Trace.input_samples``), in sample order, stacked per input name: (samples, …)."""
    samples = [int(s) for s in trace.input_samples()]
    if not samples:
        raise QdebugError(
            f"{trace.path} stores no samples, so it has no inputs to export",
            "trace again with --store-samples K (K ≥ 1)",
        )
    per_sample = [trace.inputs(s) for s in samples]
    return {name: np.stack([d[name] for d in per_sample]) for name in per_sample[0]}


def member_names(names: Sequence[str]) -> dict[str, str]:
    """A safe, distinct ``.npz`` member name for each stored input name: the names come from
    the trace, and ``../../x`` or ``/etc/x`` must not become a path inside the zip (which an
    extracting tool would follow)."""
    out: dict[str, str] = {}
    for name in names:
        safe = re.sub(r"[^\w.-]", "_", name, flags=re.ASCII).lstrip(".") or "input"
        candidate, k = safe, 2
        while candidate in out.values():
            candidate, k = f"{safe}_{k}", k + 1
        out[name] = candidate
    return out


def check_export_target(path: Path, force: bool) -> None:
    """Refuse a folder, a device or pipe, an existing file without ``force``, or a missing
    folder, before anything is written."""
    if path.is_dir():
        raise QdebugError(f"{path} is a folder", "give a file name")
    kind = special_kind(path)
    if kind is not None:  # --force replaces files, never a device or a pipe
        raise QdebugError(f"{path} is {kind}; not writing over it", "give a file name")
    if path.exists() and not force:
        raise QdebugError(f"{path} exists; not overwriting it", "use --force to replace it")
    if path.parent.exists() and not path.parent.is_dir():
        raise QdebugError(f"{path.parent} is a file, not a folder", "give a path in a folder")
    if not path.parent.is_dir():
        raise QdebugError(f"{path.parent}/ does not exist", "create the folder first")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, write: Callable[[BinaryIO], None], force: bool) -> None:
    """Write ``path`` through a temporary file in its folder, renamed into place at the end.

    Without ``force`` the final step is a hard link, which fails if ``path`` appeared meanwhile,
    so an existing file is never replaced.
    """
    check_export_target(path, force)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make the export private
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise QdebugError(f"{path} exists; not overwriting it",
                                  "use --force to replace it") from exc
    except OSError as exc:
        raise QdebugError(f"cannot write {path}: {exc.strerror or exc}",
                          "choose a writable folder") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _npz_writer(arrays: dict[str, np.ndarray]) -> Callable[[BinaryIO], None]:
    def write(fh: BinaryIO) -> None:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy stubs: allow_pickle kw

    return write


def _bytes_writer(content: bytes) -> Callable[[BinaryIO], None]:
    def write(fh: BinaryIO) -> None:
        fh.write(content)

    return write


def export_trace(
    trace: Trace, tflite: Path | None = None, inputs: Path | None = None, force: bool = False
) -> Exported:
    """Write the trace's INT8 ``.tflite`` bytes to ``tflite`` and the inputs it keeps (stored
    samples and each layer's worst), keyed by input name, to ``inputs`` (an ``.npz`` that
    ``qdebug trace --data`` accepts), with ``SAMPLE_INDEX``: which samples, in order (also
    ``Exported.samples``).

    Both targets are checked before anything is written.

    Raises:
        QdebugError: nothing to export, a target exists (without ``force``) or is unwritable.
    """
    targets: Sequence[Path] = [p for p in (tflite, inputs) if p is not None]
    if not targets:
        raise QdebugError("nothing to export", "give --tflite OUT.tflite and/or --inputs OUT.npz")
    if len({p.resolve() for p in targets}) < len(targets):
        raise QdebugError("--tflite and --inputs name the same file", "give two file names")
    recipe = trace.meta.quantizer.recipe
    if tflite is not None and recipe:
        targets = [*targets, recipe_path(tflite)]
    for p in targets:
        check_export_target(p, force)
        if p.exists() and trace.path.exists() and os.path.samefile(p, trace.path):
            raise QdebugError(f"{p} is the trace being exported; not overwriting it",
                              "give another file name")
    arrays = stored_inputs(trace) if inputs is not None else {}
    names = member_names(list(arrays))
    arrays = {names[k]: v for k, v in arrays.items()}
    if inputs is not None and SAMPLE_INDEX not in arrays:
        # which sample of the traced data each row is (qdebug trace --data ignores it)
        arrays[SAMPLE_INDEX] = np.asarray(trace.input_samples(), dtype=np.int64)
    if tflite is not None:
        write_atomic(tflite, _bytes_writer(trace.tflite_bytes()), force)
        if recipe:
            text = json.dumps([dict(e) for e in recipe], indent=1) + "\n"
            write_atomic(recipe_path(tflite), _bytes_writer(text.encode()), force)
    if inputs is not None:
        write_atomic(inputs, _npz_writer(arrays), force)
    samples = tuple(int(s) for s in trace.input_samples()) if inputs is not None else ()
    return Exported(tflite, inputs, samples,
                    recipe_path(tflite) if tflite is not None and recipe else None)
