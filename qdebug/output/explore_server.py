"""``qdebug explore``'s web server: Model Explorer's web app and the few answers its page asks
for, about one model only.

Model Explorer's own server (``model_explorer.server.start``) builds its Flask app inside the
function that runs it, and that app reads any file the page names
(``/api/v1/read_text_file?path=/etc/passwd``), converts any model file, takes uploads, checks
PyPI for a newer version and exits the process when its port is taken. This server is a small
WSGI app of its own instead, run by Werkzeug on a socket bound here, behind
``explore_guard.guarded``. It answers from memory, never from a path a request names:

- the web app's files (``index.html``, scripts, fonts) from the installed package;
- ``send_command`` ``convert`` for the trace's model only: the graph converted once, before
  serving (``explore.convert_model``);
- ``read_text_file`` for the node-data files only (compared after resolving ``..`` and
  symlinks);
- nothing else: no uploads, no other model, no configuration changes, no version check.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdebug.errors import QdebugError
from qdebug.output.explore_guard import WSGIApp

#: The adapter Model Explorer's page is offered (its built-in TFLite flatbuffer adapter).
ADAPTER: Mapping[str, Any] = {
    "id": "builtin_tflite_flatbuffer",
    "name": "TFLite adapter (Flatbuffer)",
    "description": "The trace's INT8 model, converted by qdebug explore before serving.",
    "fileExts": ["tflite"],
    "type": "adapter",
}

#: What the page's "new version" check is told (the server never asks PyPI).
NO_NEW_VERSION = {"version": "", "runningVersion": "", "releaseUrl": "", "desktopAppUrl": ""}

#: The ports tried, in order, when ``--port`` is not given (as Model Explorer does).
DEFAULT_PORTS = range(8080, 8100)


def resolved(path: str | os.PathLike[str]) -> str | None:
    """``path`` with ``~``, ``..`` and symlinks resolved; None for a path that is not one."""
    try:
        return os.path.realpath(os.path.expanduser(os.fspath(path)))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Site:
    """Everything the server answers with, held in memory."""

    web_app: Path
    """Model Explorer's web app (``model_explorer/web_app``)."""
    model: str
    """The model file's resolved path."""
    graphs_json: bytes
    """The adapter's answer to ``convert`` for the model."""
    node_data: Mapping[str, bytes]
    """Node-data JSON by resolved file path."""
    _lookup: dict[str, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_lookup", {resolved(k): v for k, v in self.node_data.items()})

    def node_data_at(self, path: str | None) -> bytes | None:
        """The node data whose file ``path`` names, else None."""
        real = resolved(path) if path else None
        return self._lookup.get(real) if real else None

    def is_model(self, path: Any) -> bool:
        return isinstance(path, str) and resolved(path) == resolved(self.model)


def _json(obj: Any, status: int = 200) -> Any:
    from werkzeug.wrappers import Response

    return Response(json.dumps(obj), status=status, mimetype="application/json")


def _command(request: Any) -> Any:
    if request.method == "POST":
        return request.get_json(silent=True)
    with contextlib.suppress(ValueError):
        return json.loads(request.args.get("json", "{}"))
    return None


def make_app(site: Site) -> WSGIApp:
    """The WSGI app serving ``site`` (put it behind ``explore_guard.guarded``)."""
    from werkzeug.exceptions import HTTPException, NotFound
    from werkzeug.utils import send_from_directory
    from werkzeug.wrappers import Request, Response

    def answer(request: Any) -> Any:
        path = request.path
        if path == "/api/v1/get_extensions":
            return _json([dict(ADAPTER)])
        if path == "/api/v1/check_new_version":
            return _json(NO_NEW_VERSION)
        if path == "/api/v1/read_text_file":
            content = site.node_data_at(request.args.get("path"))
            if content is None:
                return _json({"error": "qdebug explore serves only the trace's node data"}, 404)
            return _json({"content": content.decode()})
        if path in ("/api/v1/send_command", "/apipost/v1/send_command"):
            cmd = _command(request)
            if not (isinstance(cmd, dict) and cmd.get("cmdId") == "convert"
                    and cmd.get("extensionId") == ADAPTER["id"]
                    and site.is_model(cmd.get("modelPath"))):
                return _json({"error": "qdebug explore converts only the trace's model"}, 403)
            return Response(site.graphs_json, mimetype="application/json")
        if path == "/api/v1/notify_user_provided_model_path":
            return _json({"status": "ok"})
        if path == "/apistream/server_director":
            return Response(status=204)  # nothing to push; 204 tells EventSource to stop
        if path.startswith(("/api/", "/apipost/", "/apistream/")) or request.method != "GET":
            return _json({"error": "not served by qdebug explore"}, 404)
        return send_from_directory(site.web_app, "index.html" if path == "/" else path[1:],
                                   request.environ)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        try:
            response = answer(request)
        except HTTPException as exc:
            response = exc if not isinstance(exc, NotFound) else _json(
                {"error": "not found"}, 404)
        except Exception as exc:  # one answer, never a traceback on the user's terminal
            response = _json({"error": f"{type(exc).__name__}: {exc}"}, 500)
        return response(environ, start_response)

    return app


def listen(host: str, port: int | None) -> socket.socket:
    """A socket listening on ``host``:``port`` (the first free of ``DEFAULT_PORTS`` when
    ``port`` is None), or one line saying why not."""
    from werkzeug.serving import get_sockaddr, select_address_family

    if host.startswith("unix://"):
        raise QdebugError(f"--host {host}: a network address is needed, not a socket file",
                          "give an address such as 127.0.0.1")
    host = bind_address(host)
    ports = DEFAULT_PORTS if port is None else (port,)
    for p in ports:
        family = select_address_family(host, p)
        try:
            address = get_sockaddr(host, p, family)
            sock = socket.socket(family, socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise QdebugError(f"cannot listen on {host}: {_reason(exc)}",
                              "give an address of this machine, e.g. --host 127.0.0.1") from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                if port is None:
                    continue
                raise QdebugError(f"port {p} on {host} is in use by another program",
                                  f"pick another with --port, e.g. --port {_other(p)}"
                                  ) from exc
            if exc.errno == errno.EACCES:
                raise QdebugError(f"cannot listen on port {p}: {_reason(exc)}",
                                  "pick a port above 1023 with --port") from exc
            raise QdebugError(f"cannot listen on {host}:{p}: {_reason(exc)}",
                              "give an address of this machine with --host") from exc
    raise QdebugError(f"ports {ports[0]}-{ports[-1]} on {host} are all in use",
                      "pick a free one with --port")


def bind_address(host: str) -> str:
    """``host`` as a socket binds it (an IPv6 address without brackets)."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc)


def _other(port: int) -> int:
    return port + 10 if port + 10 <= 65535 else 8090


def serve(app: WSGIApp, sock: socket.socket, host: str) -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C (returns) or another signal (raises); the
    socket is closed either way."""
    import socketserver

    from werkzeug.serving import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log(self, type: str, message: str, *args: Any) -> None:
            pass  # no line per request on the user's terminal

    port = sock.getsockname()[1]
    try:
        server = make_server(bind_address(host), port, app, threaded=True, request_handler=Quiet,
                             fd=sock.fileno())
    finally:
        sock.close()  # the server holds its own duplicate
    try:
        # BaseServer's loop: Werkzeug's own swallows KeyboardInterrupt silently.
        socketserver.BaseServer.serve_forever(server, poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
