"""A headless Chromium driven over the DevTools protocol, for tests that need a real page.

Standard library only: Chromium is started with ``--remote-debugging-pipe`` (the protocol's JSON
messages on file descriptors 3 and 4, NUL-separated), so no port is opened and no websocket
client is needed.

Why not ``chromium --headless --screenshot URL``: that screenshot is taken at the page's load
event, before a single-page app has fetched and laid out its data (Model Explorer is still at
"Processing graph…"), and ``--virtual-time-budget`` never expires on a page that keeps a request
open (Model Explorer's ``/apistream/server_director`` event stream pauses virtual time for
good). Driving the browser lets a test wait for what it needs to see in the DOM.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

#: Names of a Chromium binary, in the order they are looked for on PATH.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable",
                  "chrome")


def find_chromium() -> str | None:
    """Path of a Chromium on PATH (or in ``QDEBUG_CHROMIUM``), else None."""
    env = os.environ.get("QDEBUG_CHROMIUM")
    if env:
        return shutil.which(env)
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class DevToolsError(RuntimeError):
    """The browser answered a command with an error, or went away."""


class HeadlessChromium:
    """One headless Chromium with one page, commanded over the DevTools pipe."""

    def __init__(self, binary: str, *, width: int = 1400, height: int = 900,
                 flags: tuple[str, ...] = ()) -> None:
        self._profile = tempfile.mkdtemp(prefix="qdebug-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Chromium reads fd 3 and writes fd 4. Move both ends above 9 first so the dup2 below
        # never overwrites one with the other (and clears close-on-exec on the copies).
        high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.log_path = Path(self._profile) / "chromium.log"
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY)
        args = [
            binary, "--headless=new", "--no-sandbox", "--no-first-run",
            "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--hide-scrollbars",
            "--mute-audio", f"--user-data-dir={self._profile}",
            f"--window-size={width},{height}", "--remote-debugging-pipe", *flags, "about:blank",
        ]
        try:
            self.pid = os.posix_spawn(binary, args, os.environ, setsid=True, file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, log, 1),
                (os.POSIX_SPAWN_DUP2, log, 2), (os.POSIX_SPAWN_DUP2, high_r, 3),
                (os.POSIX_SPAWN_DUP2, high_w, 4),
            ])
        finally:
            for fd in (high_r, high_w, log, devnull):
                os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""
        try:
            target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
            self.session = self.send("Target.attachToTarget", {
                "targetId": target["targetId"], "flatten": True}, session=False)["sessionId"]
            self.send("Page.enable")
            self.send("Runtime.enable")
            self.send("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.close()
            raise

    # -- protocol -----------------------------------------------------------------------------
    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True,
             timeout: float = 60.0) -> dict[str, Any]:
        """Send one command and wait for its answer (events that arrive meanwhile are kept)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        try:
            os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            raise DevToolsError(f"{method}: Chromium has exited; {self._log_tail()}") from None
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply is None:
                raise DevToolsError(f"{method}: no answer in {timeout:.0f} s")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise DevToolsError(f"Chromium closed the DevTools pipe; {self._log_tail()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return "its log ends: " + " | ".join(lines[-3:])

    # -- page ---------------------------------------------------------------------------------
    def navigate(self, url: str) -> None:
        answer = self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise DevToolsError(f"navigate to {url}: {answer['errorText']}")

    def evaluate(self, expression: str, *, timeout: float = 60.0) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        answer = self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True,
        }, timeout=timeout)
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise DevToolsError(f"JavaScript error: {text}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 60.0, interval: float = 0.25) -> Any:
        """Poll a JavaScript expression until it is truthy; its value, or DevToolsError with
        the last value seen."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(interval)
        raise DevToolsError(f"waited {timeout:.0f} s for {expression!r}; last value {value!r}")

    def screenshot(self, path: Path) -> bytes:
        """Save the viewport as a PNG; returns its bytes."""
        data = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])
        Path(path).write_bytes(data)
        return data

    def console_messages(self) -> list[str]:
        """Console calls and uncaught exceptions the page produced so far."""
        out = []
        for event in self.events:
            if event.get("method") == "Runtime.consoleAPICalled":
                args = event["params"].get("args", [])
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif event.get("method") == "Runtime.exceptionThrown":
                out.append(str(event["params"]["exceptionDetails"].get("text")))
        return out

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the browser (politely, then by its process group) and remove its profile."""
        if self.pid:
            with contextlib.suppress(DevToolsError):
                self.send("Browser.close", session=False, timeout=10)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.1)
            else:
                os.killpg(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            # Its helpers (renderer, GPU, zygote) share the process group: none outlives it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.pid = 0
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._to_browser = self._from_browser = -1
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> HeadlessChromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
