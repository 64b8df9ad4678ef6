"""``qdebug explore``'s server and files, against a stranger's trace and a hostile web page.

Real HTTP on 127.0.0.1 against a running ``qdebug explore`` (of tests/fixtures/digits.h5, no
TensorFlow): a path outside the trace, a forged ``Host`` header (DNS rebinding), a request
without the token, another model file, an upload; each answer refused and nothing of the file
in it. Then the catalogue of hostile traces and environments for ``explore``: model names that
are paths, too long or full of control characters, a garbage ``.tflite``, ``--dir`` on a file
or a pipe, a port in use, Ctrl-C and SIGTERM (no temporary file left). Skipped (with the
reason) where ai-edge-model-explorer is not installed.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli_helpers import assert_one_line_error
from explorer_page import explore_server, free_port
from qdebug.output.explore import MAX_STEM_BYTES, file_stem
from qdebug.output.explore_guard import Guard

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "digits.h5"
ROOT = Path(__file__).resolve().parents[2]
SECRET = "QDEBUG-EXPLORE-SECRET-41c7"

needs_explorer = pytest.mark.skipif(
    find_spec("model_explorer") is None,
    reason="ai-edge-model-explorer is not installed (pip install 'qdebug[explorer]')")


@dataclass(frozen=True)
class Server:
    url: str
    port: int
    token: str
    folder: Path

    def request(self, path: str, *, host: str | None = None, token: bool = True,
                cookie: str | None = None, method: str = "GET", body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One real HTTP request to 127.0.0.1: ``token`` adds ``?token=``, ``host`` forges
        the ``Host`` header."""
        if token:
            path += ("&" if "?" in path else "?") + f"token={self.token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True)
            conn.putheader("Host", f"localhost:{self.port}" if host is None else host)
            if cookie is not None:
                conn.putheader("Cookie", cookie)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


def _server(url: str, folder: Path) -> Server:
    parts = urllib.parse.urlsplit(url)
    token = urllib.parse.parse_qs(parts.query)["token"][0]
    assert parts.port is not None
    return Server(url, parts.port, token, folder)


def _page_files(url: str) -> tuple[str, list[str]]:
    data = json.loads(urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["data"][0])
    return data["models"][0]["url"], list(data["nodeData"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if find_spec("model_explorer") is None:
        pytest.skip("ai-edge-model-explorer is not installed (pip install 'qdebug[explorer]')")
    folder = tmp_path_factory.mktemp("served")
    env = {**os.environ, "QDEBUG_TEST_SECRET": SECRET}
    with explore_server(FIXTURE, folder, env=env) as url:
        yield _server(url, folder)


# -- the guard: only the trace's files, only for this server, only with the token ----------------


def _outside_paths(server: Server) -> list[str]:
    model, node_data = _page_files(server.url)
    link = server.folder / "link.json"
    if not link.is_symlink():
        link.symlink_to("/etc/passwd")
    return ["/etc/passwd", "/proc/self/environ", str(server.folder / ".." / ".." / "etc" /
            "passwd"), node_data[0] + "/../../../../etc/passwd", str(link), "~/.bashrc",
            model, str(FIXTURE), "", "/etc/passwd\x00.json"]


@needs_explorer
def test_paths_outside_the_trace_are_not_read(server: Server) -> None:
    for path in _outside_paths(server):
        status, _, body = server.request(
            "/api/v1/read_text_file?path=" + urllib.parse.quote(path))
        assert status in (403, 404), (path, status, body[:200])
        assert b"root:" not in body and SECRET.encode() not in body, path
        assert b"content" not in body, (path, body[:200])


@needs_explorer
def test_the_trace_s_node_data_and_model_are_served(server: Server) -> None:
    model, node_data = _page_files(server.url)
    assert [Path(p).parent for p in [model, *node_data]] == [server.folder] * 4
    for path in node_data:
        status, _, body = server.request(
            "/api/v1/read_text_file?path=" + urllib.parse.quote(path))
        assert status == 200
        assert json.loads(body)["content"] == Path(path).read_text()
    cmd = {"extensionId": "builtin_tflite_flatbuffer", "cmdId": "convert", "modelPath": model,
           "settings": {}, "deleteAfterConversion": True}
    status, _, body = server.request("/apipost/v1/send_command", method="POST",
                                     body=json.dumps(cmd).encode(),
                                     headers={"Content-Type": "application/json"})
    assert status == 200 and "graphCollections" in json.loads(body)
    assert Path(model).is_file()  # deleteAfterConversion is not the page's to ask


@needs_explorer
def test_no_other_model_is_converted(server: Server, tmp_path: Path) -> None:
    model, _ = _page_files(server.url)
    copy = tmp_path / "other.tflite"
    shutil.copy(model, copy)  # a real model, outside the trace
    for path, adapter in ((str(copy), "builtin_tflite_flatbuffer"), ("/etc/passwd",
                          "builtin_tflite_flatbuffer"), (model, "builtin_tf_mlir"),
                          (model, "builtin_json")):
        cmd = {"extensionId": adapter, "cmdId": "convert", "modelPath": path, "settings": {},
               "deleteAfterConversion": False}
        status, _, body = server.request("/apipost/v1/send_command", method="POST",
                                         body=json.dumps(cmd).encode(),
                                         headers={"Content-Type": "application/json"})
        assert status == 403 and b"graphCollections" not in body, (path, adapter)
        query = "/api/v1/send_command?json=" + urllib.parse.quote(json.dumps(cmd))
        assert server.request(query)[0] == 403


@needs_explorer
def test_a_foreign_host_header_is_refused(server: Server) -> None:
    p = server.port
    for host in (f"evil.example:{p}", "evil.example", f"localhost.evil.example:{p}",
                 f"127.0.0.1.nip.io:{p}", f"localhost:{p + 1}", f"10.0.0.7:{p}", "",
                 f"localhost:{p}:{p}", f"[::1:{p}"):
        status, _, body = server.request("/", host=host)
        assert status == 403 and b"<html" not in body, host
        status, _, body = server.request("/api/v1/read_text_file?path=" + urllib.parse.quote(
            _page_files(server.url)[1][0]), host=host)
        assert status == 403 and b"content" not in body, host
    for host in (f"localhost:{p}", f"127.0.0.1:{p}", f"[::1]:{p}", f"LocalHost:{p}"):
        assert server.request("/", host=host)[0] == 200, host


@needs_explorer
def test_requests_without_the_token_are_refused(server: Server) -> None:
    asset = next(n for n in os.listdir(_web_app()) if n.startswith("main-"))
    for path in ("/", "/index.html", f"/{asset}", "/static_files/favicon.svg",
                 "/api/v1/get_extensions", "/api/v1/read_text_file?path=/etc/passwd"):
        for cookie in (None, f"qdebug-explore-{server.port}=wrong",
                       f"qdebug-explore-{server.port + 1}={server.token}", "garbage=;;\x7f"):
            status, _, body = server.request(path, token=False, cookie=cookie)
            assert status == 403 and b"<html" not in body, (path, cookie)
        status, _, _ = server.request(path + ("&" if "?" in path else "?") + "token=wrong",
                                      token=False)
        assert status == 403, path
    status, _, _ = server.request("/apipost/v1/send_command", token=False, method="POST",
                                  body=b"{}", headers={"Content-Type": "application/json"})
    assert status == 403
    # The token opens the page and sets the cookie the page's own requests carry.
    status, headers, body = server.request("/")
    assert status == 200 and b"<html" in body
    cookie = headers["set-cookie"].split(";")[0]
    assert cookie == f"qdebug-explore-{server.port}={server.token}"
    assert "samesite=strict" in headers["set-cookie"].lower()
    assert headers["referrer-policy"] == "no-referrer"
    assert server.request(f"/{asset}", token=False, cookie=cookie)[0] == 200


@needs_explorer
def test_uploads_and_config_changes_are_not_served(server: Server) -> None:
    form = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.tflite\"\r\n"
            b"\r\nTFL3\r\n--b--\r\n")
    for path, body, kind in (("/apipost/v1/upload", form, "multipart/form-data; boundary=b"),
                             ("/apipost/v1/update_config", b"{}", "application/json"),
                             ("/apipost/v1/refresh_page", b"", "application/json")):
        status, _, _ = server.request(path, method="POST", body=body,
                                      headers={"Content-Type": kind})
        assert status == 404, path
    assert server.request("/api/v1/load_graphs_json?graph_index=0")[0] == 404


def _web_app() -> Path:
    spec = find_spec("model_explorer")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "web_app"


@needs_explorer
def test_a_host_beyond_loopback_is_warned_about(tmp_path: Path) -> None:
    err = tmp_path / "stderr.txt"
    with err.open("w") as fh, explore_server(FIXTURE, tmp_path / "d", extra=("--host",
                                             "0.0.0.0"), stderr=fh) as url:
        s = _server(url, tmp_path / "d")
        assert s.request("/", host=f"127.0.0.1:{s.port}")[0] == 200
        assert s.request("/", host=f"evil.example:{s.port}")[0] == 403
        assert s.request("/", token=False)[0] == 403
    lines = err.read_text().splitlines()
    assert lines[0].startswith("qdebug: warning: --host 0.0.0.0 listens beyond this machine")
    assert "token" in lines[0]


def test_the_guard_s_host_rule() -> None:
    g = Guard("t", 8080, "localhost")
    assert g.host_allowed("localhost:8080") and g.host_allowed("[::1]:8080")
    assert not g.host_allowed("localhost") and not g.host_allowed("192.168.1.2:8080")
    wild = Guard("t", 8080, "0.0.0.0")
    assert wild.host_allowed("192.168.1.2:8080") and wild.host_allowed("[fe80::1]:8080")
    assert not wild.host_allowed("attacker.example:8080")
    assert Guard("t", 80, "127.0.0.1").host_allowed("127.0.0.1")
    assert Guard("t", 8080, "::1").host_allowed("[::1]:8080")


# -- the catalogue: hostile traces and environments for explore --------------------------------

Mutation = Callable[[Path], None]


def model_name(name: str) -> Mutation:
    """The trace's model name (which explore names its files after) set to ``name``."""

    def mutate(p: Path) -> None:
        with h5py.File(p, "a") as f:
            f.attrs["model_name"] = name

    return mutate


def int8_model(content: bytes) -> Mutation:
    """The trace's INT8 ``.tflite`` replaced by ``content``."""

    def mutate(p: Path) -> None:
        with h5py.File(p, "a") as f:
            del f["model/int8_tflite"]
            f["model/int8_tflite"] = np.frombuffer(content, dtype=np.uint8)

    return mutate


def _hostile(tmp_path: Path, mutate: Mutation) -> Path:
    p = tmp_path / "t.h5"
    shutil.copy(FIXTURE, p)
    mutate(p)
    return p


def _temp_dirs(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("qdebug-explore-"))


def _explore(*args: str | Path, tmp: Path, timeout: float = 120
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qdebug", "explore", *map(str, args),
                           "--no-browser"], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp)})


SERVED_NAMES: list[tuple[str, str]] = [
    ("traversal", "../../escape"),
    ("absolute", "/etc/cron.d/evil"),
    ("dots", ".."),
    ("hidden", ".bashrc"),
    ("separators", "a\\b/c:d"),
    ("control", "m\x1b]0;title\x07\n\r\x7fx"),
    ("300 characters", "n" * 300),
    ("300 bytes of UTF-8", "é" * 150 + "ø"),
]


@needs_explorer
@pytest.mark.parametrize("name", [n for _, n in SERVED_NAMES], ids=[i for i, _ in SERVED_NAMES])
def test_model_names_become_safe_file_names_in_dir(tmp_path: Path, name: str) -> None:
    trace = _hostile(tmp_path, model_name(name))
    out = tmp_path / "a" / "b"
    with explore_server(trace, out) as url:
        model, node_data = _page_files(url)
    files = sorted(out.iterdir())
    assert [str(p) for p in files] == sorted([model, *node_data])
    assert len(files) == 4 and all(p.is_file() and not p.is_symlink() for p in files)
    stem = file_stem(name)
    assert model == str(out / f"{stem}_int8.tflite")
    assert all(len(p.name.encode()) <= 255 and not p.name.startswith(".") for p in files)
    assert len(stem.encode()) <= MAX_STEM_BYTES
    assert not any(c in p.name for p in files for c in "/\\\x00\x1b\x07\n\r")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "t.h5"]  # nothing beside


@needs_explorer
def test_dir_never_loses_a_file_the_trace_names(tmp_path: Path) -> None:
    trace = _hostile(tmp_path, model_name("package"))
    out = tmp_path / "project"
    out.mkdir()
    (out / "package.json").write_text('{"name": "mine"}')
    victim = tmp_path / "victim.txt"
    victim.write_text("my notes")
    (out / "package_int8.tflite").symlink_to(victim)  # nor through a symlink
    res = _explore(trace, "--dir", out, "--port", str(free_port()), tmp=tmp_path)
    assert_one_line_error(res.returncode, res.stderr, "exists", "--force")
    assert res.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["package.json", "package_int8.tflite"]
    assert (out / "package.json").read_text() == '{"name": "mine"}'
    assert _temp_dirs(tmp_path) == []
    with explore_server(trace, out, extra=("--force",)):
        pass
    assert json.loads((out / "package.json").read_text())["name"].startswith("qdebug:")
    assert not (out / "package_int8.tflite").is_symlink()  # the link replaced, not followed
    assert (out / "package_int8.tflite").read_bytes()[4:8] == b"TFL3"
    assert victim.read_text() == "my notes"


REFUSED: list[tuple[str, Mutation, tuple[str, ...]]] = [
    ("garbage tflite", int8_model(b"\x00garbage" * 64), ("t.h5", "not a TFLite model")),
    ("TFL3 header, garbage body", int8_model(b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 8),
     ("t.h5", "not a TFLite model Model Explorer can read")),
    ("truncated tflite", lambda p: int8_model(_fixture_tflite()[:9000])(p),
     ("t.h5", "not a TFLite model Model Explorer can read")),
]


def _fixture_tflite() -> bytes:
    with h5py.File(FIXTURE, "r") as f:
        return bytes(f["model/int8_tflite"][()].tobytes())


@needs_explorer
@pytest.mark.parametrize(("mutate", "needles"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_a_model_explorer_cannot_read_is_refused_before_serving(
    tmp_path: Path, mutate: Mutation, needles: tuple[str, ...]
) -> None:
    trace = _hostile(tmp_path, mutate)
    for where in ((), ("--dir", str(tmp_path / "out"))):
        res = _explore(trace, "--port", str(free_port()), *where, tmp=tmp_path)
        assert_one_line_error(res.returncode, res.stderr, *needles)
        assert res.stdout == "" and "Traceback" not in res.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["t.h5"]  # no folder, no temp


@needs_explorer
def test_dir_that_is_not_a_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("mine")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for target, kind in (("file", "a file"), ("fifo", "a pipe (FIFO)"),
                         ("dangling", "broken symbolic link"), ("file/sub", "")):
        res = _explore(FIXTURE, "--dir", tmp_path / target, "--port", str(free_port()),
                       tmp=tmp_path, timeout=60)  # a FIFO opened would block: the timeout fails
        assert_one_line_error(res.returncode, res.stderr, target, "--dir", kind)
        assert res.stdout == ""
    res = _explore(FIXTURE, "--dir", "/dev/null", tmp=tmp_path)
    assert_one_line_error(res.returncode, res.stderr, "/dev/null", "a device, not a folder")
    assert (tmp_path / "file").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling", "fifo", "file"]


@needs_explorer
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_port_in_use_is_one_line_naming_it(tmp_path: Path, host: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        res = _explore(FIXTURE, "--host", host, "--port", str(port), "--dir", tmp_path / "d",
                       tmp=tmp_path)
    assert_one_line_error(res.returncode, res.stderr, f"port {port}", "in use", "--port")
    assert res.stdout == ""  # none of Model Explorer's own lines either
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop_with(sig: signal.Signals, tmp_path: Path, folder: Path | None
               ) -> tuple[int, str, list[Path]]:
    port = free_port()
    where = ["--dir", str(folder)] if folder is not None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "qdebug", "explore", str(FIXTURE), "--port", str(port),
         "--no-browser", *where], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)},
        # Ctrl-C at a terminal: a test run started in the background (a CI job, `make test &`)
        # passes SIGINT on ignored, and Python then raises no KeyboardInterrupt at all.
        preexec_fn=_default_sigint)
    try:
        assert proc.stdout is not None
        url = ""
        deadline = time.monotonic() + 120
        while not url and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            url = line.strip() if line.startswith("http://") else ""
        assert url, proc.stderr.read() if proc.stderr else ""
        model, node_data = _page_files(url)
        served = [Path(model), *map(Path, node_data)]
        assert all(p.is_file() for p in served)
        parts = urllib.parse.urlsplit(url)  # serving: the page, as the URL printed asks
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", f"{parts.path}?{parts.query}", headers={"Host": parts.netloc})
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err, served


@needs_explorer
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 0),
                                           (signal.SIGHUP, 129)])
def test_stopping_removes_the_temporary_files(tmp_path: Path, sig: signal.Signals,
                                              code: int) -> None:
    returncode, err, served = _stop_with(sig, tmp_path, None)
    assert returncode == code, err
    assert not any(p.exists() for p in served)
    assert _temp_dirs(tmp_path) == [], err
    assert err.strip().splitlines()[-1].startswith("qdebug: explore stopped")
    assert "temporary files are removed" in err and "nothing was written" not in err
    assert "Traceback" not in err


@needs_explorer
def test_stopping_keeps_the_dir_files_and_says_so(tmp_path: Path) -> None:
    returncode, err, served = _stop_with(signal.SIGTERM, tmp_path, tmp_path / "keep")
    assert returncode == 143, err
    assert all(p.is_file() for p in served) and "nothing was written" not in err
    assert f"kept {served[0]}" in err.strip().splitlines()[-1]
    assert _temp_dirs(tmp_path) == []


@needs_explorer
@pytest.mark.parametrize("case", ["storage-tflite", "link-tflite", "virtual-tflite"])
def test_a_trace_referring_outside_itself_is_refused_before_serving(tmp_path: Path,
                                                                    case: str) -> None:
    import hostile_traces as ht

    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET.encode() * 1000)
    secret_h5 = ht.secret_h5(tmp_path / "secret.h5", SECRET.encode())
    mutate = {"storage-tflite": ht.external_storage("model/int8_tflite", secret),
              "link-tflite": ht.external_link("model/int8_tflite", secret_h5, "/raw"),
              "virtual-tflite": ht.virtual("model/int8_tflite", secret_h5, "/raw")}[case]
    trace = _hostile(tmp_path, mutate)
    res = _explore(trace, "--dir", tmp_path / "out", "--port", str(free_port()), tmp=tmp_path)
    assert_one_line_error(res.returncode, res.stderr, "t.h5", "not a self-contained trace")
    assert res.stdout == "" and SECRET not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.bin", "secret.h5", "t.h5"]
