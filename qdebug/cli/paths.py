"""Checks of the paths a command is given, made before any heavy import: a path that does not
exist, or a pipe or a device (which would block or never end when read), fails at once."""

from __future__ import annotations

from pathlib import Path

from qdebug.errors import QdebugError
from qdebug.store.filekind import refuse_special


def read_head(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(8)
    except OSError as exc:
        raise QdebugError(f"{path}: cannot read ({exc.strerror})", "check permissions") from exc


def precheck_path(spec: str | None, what: str, hint: str) -> None:
    """Fail fast, before TensorFlow loads, on a path that does not exist or is a pipe or a
    device (which would block or never end when read)."""
    if spec is None:
        return
    path = Path(spec)
    suffix = path.suffix.lower()
    looks_like_factory = ":" in spec and suffix not in (".npy", ".npz", ".keras", ".h5")
    if not path.exists() and not looks_like_factory:
        raise QdebugError(f"{spec}: no such file or folder ({what})", hint)
    refuse_special(path, what, hint)
    if looks_like_factory and not path.exists():
        refuse_special(spec.rpartition(":")[0], "Python", hint)


def precheck_file(path: Path, option: str, hint: str) -> None:
    """A file an option names: it exists, and is a regular file (not a folder or a pipe)."""
    if not path.exists():
        raise QdebugError(f"{path}: no such file ({option})", hint)
    if path.is_dir():
        raise QdebugError(f"{path} is a folder, not a file ({option})", hint)
    refuse_special(path, option, hint)


def layer_list(text: str) -> tuple[str, ...]:
    """``a,b, c`` → ``("a", "b", "c")``."""
    return tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
