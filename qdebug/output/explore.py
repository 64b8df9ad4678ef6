"""``qdebug explore``: Google's Model Explorer on a trace's INT8 model, with qdebug's per-op
overlays (accumulated SQNR, local SQNR, gain). Needs the ``explorer`` extra; never imports
TensorFlow itself, nor Model Explorer's converter: the model is converted once, in a child
process, before serving (a model that does not convert is refused with one line).

The trace is untrusted, and so is every request to the server: names of the files written come
from the model's name, cleaned (``file_stem``); the server is qdebug's own
(``explore_server``), behind a guard (``explore_guard``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from qdebug.errors import QdebugError
from qdebug.output.fmt import printable

if TYPE_CHECKING:
    from qdebug.output.explore_graph import Focus

INSTALL_HINT = "install it with: pip install 'qdebug[explorer]'"

#: Longest file-name stem taken from a model's name (UTF-8 bytes): with the longest suffix
#: (``.local_sqnr.json``) and an atomic write's temporary name it stays under the 255 bytes
#: file systems allow.
MAX_STEM_BYTES = 200

#: Seconds Model Explorer's converter may take on the INT8 model.
CONVERT_TIMEOUT = 600

_CONVERT = (
    "import json, sys\n"
    "from model_explorer.builtin_tflite_flatbuffer_adapter import BuiltinTfliteFlatbufferAdapter\n"
    "from model_explorer.utils import convert_adapter_response\n"
    "graphs = BuiltinTfliteFlatbufferAdapter().convert(sys.argv[1], {})\n"
    "sys.stdout.write(json.dumps(convert_adapter_response(graphs)))\n"
)


def import_model_explorer() -> Any:
    """``model_explorer``, or one line saying how to install it."""
    try:
        import model_explorer
    except ImportError:
        raise QdebugError(
            "Model Explorer (ai-edge-model-explorer) is not installed: qdebug explore needs it",
            INSTALL_HINT,
        ) from None
    return model_explorer


def file_stem(model_name: str) -> str:
    """A file-name stem from a trace's model name: letters, digits, ``-_.`` kept, anything
    else (path separators, control characters, spaces) ``_``; no leading dot (``..``, hidden
    files); at most ``MAX_STEM_BYTES`` bytes; ``model`` when nothing is left."""
    safe = "".join(c if (c.isalnum() or c in "-_.") and c.isprintable() else "_"
                   for c in model_name).lstrip(".")
    safe = safe.encode()[:MAX_STEM_BYTES].decode(errors="ignore")
    return safe or "model"


@dataclass(frozen=True)
class Plan:
    """The files ``explore`` writes into one folder, named after the model."""

    folder: Path
    model: Path
    node_data: dict[Path, bytes]

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.model, *self.node_data)


def plan(folder: Path, stem: str, node_data: dict[str, dict[str, Any]]) -> Plan:
    """The model as ``STEM_int8.tflite`` and each overlay as ``STEM.json``,
    ``STEM.local_sqnr.json``, … in ``folder`` (never outside it)."""
    from qdebug.output.model_explorer import encode_node_data, overlay_paths

    paths = overlay_paths(folder / f"{stem}.json", list(node_data))
    out = Plan(folder, folder / f"{stem}_int8.tflite",
               {paths[s]: encode_node_data(body) for s, body in node_data.items()})
    assert all(p.parent == folder for p in out.files), out.files
    return out


@dataclass(frozen=True)
class Served:
    """What ``explore`` serves, handed to ``on_ready`` once the server listens."""

    url: str
    """The page, with its token."""
    files: tuple[Path, ...]
    """The model and node-data files the page shows."""
    temporary: bool
    """The files are in a temporary folder, removed when the server stops."""
    warning: str | None
    """Set when the server is reachable from other machines."""


def check_folder(folder: Path) -> None:
    """Refuse a ``--dir`` that exists and is not a folder (a file, a pipe, a device)."""
    from qdebug.store.filekind import describe_mode

    try:
        mode = os.stat(folder).st_mode
    except FileNotFoundError:
        if os.path.lexists(folder):
            raise QdebugError(f"--dir {folder} is a broken symbolic link",
                              "give a folder (it is created if missing)") from None
        return
    except OSError as exc:
        raise QdebugError(f"cannot use --dir {folder}: {exc.strerror or exc}",
                          "give a folder you can write to") from exc
    kind = describe_mode(mode)
    if kind != "a folder":
        raise QdebugError(f"--dir {folder} is {kind}, not a folder",
                          "give a folder (it is created if missing)")


def convert_model(tflite: Path, trace_path: Path) -> bytes:
    """Model Explorer's graph of ``tflite`` (its adapter's JSON), converted in a child process
    (a model the converter cannot read, or that crashes it, is one line)."""
    hint = "re-trace the model; qdebug report and qdebug view read the trace without it"
    try:
        done = subprocess.run(
            [sys.executable, "-P", "-c", _CONVERT, str(tflite)], capture_output=True,
            stdin=subprocess.DEVNULL, timeout=CONVERT_TIMEOUT, cwd=tflite.parent, check=False,
        )
    except subprocess.TimeoutExpired:
        raise QdebugError(f"{trace_path}: Model Explorer's converter did not finish the INT8 "
                          f"model in {CONVERT_TIMEOUT} s", hint) from None
    if done.returncode == 0 and done.stdout.startswith(b"{"):
        return done.stdout
    if done.returncode < 0:
        reason = f"the converter died of {signal.Signals(-done.returncode).name}"
    else:
        lines = [ln.strip() for ln in done.stderr.decode(errors="replace").splitlines()]
        reason = next((ln for ln in reversed(lines) if ln), "no answer")[:200]
    raise QdebugError(f"{trace_path}: its INT8 model is not a TFLite model Model Explorer "
                      f"can read ({printable(reason)})", hint)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP ignored within the block (cleanup runs to its end)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _write(p: Plan, tflite: bytes, force: bool, written: list[Path]) -> None:
    from qdebug.output.export import write_atomic

    for path, body in ((p.model, tflite), *p.node_data.items()):
        write_atomic(path, lambda fh, body=body: fh.write(body), force)  # type: ignore[misc]
        written.append(path)


def page_url(host: str, port: int, token: str, p: Plan, focus: Focus | None = None) -> str:
    """The page's URL: the token, and Model Explorer's ``data`` parameter naming the model and
    the node-data files (the format of ``ModelExplorerConfig.to_url_param_value``) with the
    first set (the accumulated SQNR) last, so that the graph is coloured by it, and the
    ``uiState`` opening the page on ``focus``."""
    from qdebug.output.explore_graph import ui_state
    from qdebug.output.explore_guard import TOKEN_PARAM, WILDCARDS, host_header_name

    shown = "localhost" if host_header_name(host) in WILDCARDS else host_header_name(host)
    files = [str(f) for f in p.node_data]
    files = files[1:] + files[:1]
    data = {"models": [{"url": str(p.model)}], "nodeData": files,
            "nodeDataTargets": [""] * len(files), "uiState": ui_state(focus)}
    return f"http://{shown}:{port}/?{TOKEN_PARAM}={token}&data={quote(json.dumps(data))}"


def explore(
    trace_path: Path, *, host: str = "localhost", port: int | None = None,
    open_browser: bool = True, folder: Path | None = None, force: bool = False,
    on_ready: Callable[[Served], None] = lambda s: None,
) -> None:
    """Serve Model Explorer on the trace's INT8 model with the overlays; blocks until Ctrl-C
    (returns) or SIGTERM/SIGHUP (raises). Everything that can fail is checked before anything
    is written; files written are removed if serving never starts, and a temporary folder
    whenever the server stops. The trace is closed before serving."""
    from qdebug.output.explore_graph import annotate, focus_tensors, op_layers
    from qdebug.output.explore_guard import Guard, guarded, is_loopback, new_token
    from qdebug.output.explore_server import Site, listen, make_app, serve
    from qdebug.output.model_explorer import node_data
    from qdebug.store.reader import open_trace

    me = import_model_explorer()
    web_app = Path(me.__file__).parent / "web_app"
    if not (web_app / "index.html").is_file():
        raise QdebugError(f"Model Explorer's web app is missing ({web_app})",
                          "reinstall it: pip install --force-reinstall ai-edge-model-explorer")
    if folder is not None:
        check_folder(folder)
    with open_trace(trace_path) as trace:
        tflite = trace.tflite_bytes()
        sets = node_data(trace)
        stem = file_stem(trace.model_name)
        layers, culprits = op_layers(trace), focus_tensors(trace)
    if not sets:
        raise QdebugError(f"{trace_path} has no per-op SQNR to overlay", "re-trace the model")
    if tflite[4:8] != b"TFL3":  # the flatbuffer's file identifier
        raise QdebugError(f"{trace_path}: its INT8 model is not a TFLite model (no TFL3 "
                          "identifier)", "re-trace the model; qdebug report and qdebug view "
                          "read the trace without it")
    final = plan(Path(folder), stem, sets) if folder is not None else None
    if final is not None and final.folder.is_dir():
        from qdebug.output.export import check_export_target

        for f in final.files:
            check_export_target(f, force)

    sock = listen(host, port)
    work = Path(tempfile.mkdtemp(prefix="qdebug-explore-"))
    written: list[Path] = []
    made: list[Path] = []
    serving = False
    try:
        temp = plan(work, stem, sets)
        temp.model.write_bytes(tflite)
        graphs, focus = annotate(convert_model(temp.model, trace_path), layers, culprits)
        if final is None:
            for path, body in temp.node_data.items():
                path.write_bytes(body)
            shown = temp
        else:
            for parent in (final.folder, *final.folder.parents):
                if parent.exists():
                    break
                made.append(parent)
            try:
                final.folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise QdebugError(f"cannot create --dir {final.folder}: {exc.strerror or exc}",
                                  "give a folder you can write to") from exc
            _write(final, tflite, force, written)
            with _uninterrupted():
                shutil.rmtree(work, ignore_errors=True)
            shown = final
        site = Site(web_app, str(shown.model), graphs,
                    {str(k): v for k, v in shown.node_data.items()})
        bound = sock.getsockname()[1]
        guard = Guard(new_token(), bound, host)
        url = page_url(host, bound, guard.token, shown, focus)
        warning = None if is_loopback(host) else (
            f"--host {host} listens beyond this machine: anyone who can reach port {bound} "
            "and has the URL (its token) sees the model and its numbers")
        serving = True  # the URL goes out: --dir's files are the user's from here
        try:
            on_ready(Served(url, shown.files, final is None, warning))
        except Exception:  # it never went out (a closed stdout): remove them
            serving = False
            raise
        if open_browser:
            webbrowser.open_new_tab(url)
        serve(guarded(make_app(site), guard), sock, host)
    finally:
        with _uninterrupted():
            sock.close()
            shutil.rmtree(work, ignore_errors=True)
            if not serving:  # nothing half-written: --dir as it was
                for f in written:
                    with contextlib.suppress(OSError):
                        f.unlink()
                for d in made:
                    with contextlib.suppress(OSError):
                        d.rmdir()
