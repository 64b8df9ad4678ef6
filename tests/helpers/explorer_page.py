"""Model Explorer's real page, opened by ``qdebug explore`` and looked at in headless Chromium.

Used by tests/tf/test_model_explorer.py, and to refresh the README's screenshot::

    python tests/helpers/explorer_page.py traces/digits_cnn-demo.h5 docs/images/model-explorer.png

What the page does (ai-edge-model-explorer 0.1.34's web app): it reads the models and node-data
files from the ``data`` URL parameter, asks the server to convert the ``.tflite``
(``/apipost/v1/send_command``), lays the graph out in a web worker ("Processing graph…") and
draws it with WebGL into ``webgl-renderer canvas.main``; each node-data file becomes a row of the
"Node data providers" panel, and the node colours are those of the selected row (the eye icon).
The row selected on load is the last file of the URL (Model Explorer loads them once the graph
is processed and selects each as it is added); ``screenshot`` still makes its choice by a click,
as a user would, and ``open_as_printed`` looks at the page as it opens.
"""

from __future__ import annotations

import io
import json
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headless_chromium import DevToolsError, HeadlessChromium

ROOT = Path(__file__).resolve().parents[2]

#: The graph, laid out and drawn, with every node-data file listed in the providers panel.
_READY_JS = """(() => {
  const text = document.body ? document.body.innerText : "";
  const canvas = document.querySelector("webgl-renderer canvas.main");
  const runs = document.querySelectorAll("node-data-provider-summary-panel .run-name");
  return !text.includes("Processing graph") && !text.includes("Converting")
    && canvas !== null && canvas.width > 0 && runs.length >= %d;
})()"""

#: ``[[name, eye icon]]`` of the node-data providers panel.
_PROVIDERS_JS = """JSON.stringify([...document.querySelectorAll(
  "node-data-provider-summary-panel .index-container .index-row")].map(row => [
    row.querySelector(".run-name").textContent.trim(),
    (row.querySelector(".icon-container.visibility mat-icon") || {}).textContent || ""]))"""

_CLICK_EYE_JS = """(() => {
  const row = [...document.querySelectorAll(
    "node-data-provider-summary-panel .index-container .index-row")].find(
      r => r.querySelector(".run-name").textContent.trim() === %s);
  if (!row) return false;
  row.querySelector(".icon-container.visibility").click();
  return true;
})()"""

_CANVAS_RECT_JS = """(() => { const r = document.querySelector("webgl-renderer canvas.main")
  .getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })()"""


#: The graph is drawn with WebGL. Without a GPU Chromium falls back to SwiftShader (software
#: WebGL) by itself but warns that this fallback is deprecated; asking for it keeps working
#: where the automatic fallback is gone. The page is our own local server's.
WEBGL_FLAGS = ("--use-angle=swiftshader", "--enable-unsafe-swiftshader")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return int(s.getsockname()[1])


@contextmanager
def explore_server(trace: Path, folder: Path | None, *, timeout: float = 180,
                   extra: tuple[str, ...] = (), env: dict[str, str] | None = None,
                   stderr: Any = subprocess.DEVNULL) -> Iterator[str]:
    """``qdebug explore TRACE --no-browser [--dir FOLDER] EXTRA`` running; yields the URL it
    printed (with its token). Stopped with SIGTERM on leaving."""
    port = free_port()
    where = ["--dir", str(folder)] if folder is not None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "qdebug", "explore", str(trace), "--port", str(port),
         "--no-browser", *where, *extra],
        stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT, env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read(out: Any) -> None:  # a thread: a silent server must not block past the timeout
        for ln in out:
            lines.put(ln)
        lines.put("")  # the end

    assert proc.stdout is not None
    threading.Thread(target=read, args=(proc.stdout,), daemon=True).start()
    try:
        url = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not url:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not line:
                break
            if line.startswith(f"http://localhost:{port}"):
                url = line.strip()
        if not url:
            raise RuntimeError(f"qdebug explore printed no URL (exit {proc.poll()})")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def with_layers_expanded(url: str) -> str:
    """The URL with Model Explorer's own UI state asking for every layer expanded, so each op
    is a node of its own (``___all___`` is the web app's marker for "expand all"); qdebug's
    token kept."""
    base, _, query = url.partition("?")
    params = urllib.parse.parse_qs(query)
    data: dict[str, Any] = json.loads(params["data"][0])
    data["uiState"] = {"paneStates": [{
        "deepestExpandedGroupNodeIds": ["___all___"], "selectedNodeId": "",
        "selectedGraphId": "", "selectedCollectionLabel": "", "widthFraction": 1,
        "selected": True,
    }]}
    token = urllib.parse.quote(params["token"][0])
    return f"{base}?token={token}&data={urllib.parse.quote(json.dumps(data))}"


@dataclass
class Shot:
    """What the page showed when the screenshot was taken."""

    png: bytes
    providers: list[tuple[str, str]]
    """The node-data providers panel: (name, eye icon) per row."""
    canvas: tuple[int, int, int, int]
    """The graph's canvas in the screenshot: left, top, right, bottom."""
    colours: Counter[str]
    """Pixels of the canvas by ``#rrggbb``."""


def canvas_colours(png: bytes, box: tuple[int, int, int, int]) -> Counter[str]:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        pixels = im.convert("RGB").crop(box)
        counts: Counter[str] = Counter()
        for n, rgb in pixels.getcolors(maxcolors=1 << 24) or []:
            assert isinstance(rgb, tuple)
            counts["#" + "".join(f"{v:02x}" for v in rgb[:3])] += n
    return counts


def screenshot(browser: HeadlessChromium, url: str, out: Path, *, show: str, n_sets: int,
               expect: set[str] | None = None, palette: set[str] | None = None,
               timeout: float = 120) -> Shot:
    """Open ``url``, wait for the graph and the ``n_sets`` node-data sets, make ``show`` the
    set the graph is coloured by, and save the viewport to ``out``.

    With ``expect`` (colours of the ``palette`` that must be on the graph, and no other colour
    of it), the screenshot is retaken until the canvas shows exactly those: the WebGL redraw
    after the click is not synchronous with the DOM."""
    browser.navigate(with_layers_expanded(url))
    browser.wait_for(_READY_JS % n_sets, timeout=timeout)
    if not browser.evaluate(_CLICK_EYE_JS % json.dumps(show)):
        raise DevToolsError(f"no node-data set named {show!r}: {browser.evaluate(_PROVIDERS_JS)}")
    browser.wait_for(
        f"JSON.parse({_PROVIDERS_JS}).some(([n, eye]) => n === {json.dumps(show)} "
        "&& eye === 'visibility')", timeout=30)
    deadline = time.monotonic() + 30
    while True:
        # Two animation frames: the redraw the click asked for has been painted.
        browser.evaluate("new Promise(r => requestAnimationFrame(() => "
                         "requestAnimationFrame(() => r(true))))")
        png = browser.screenshot(out)
        left, top, right, bottom = (round(v) for v in browser.evaluate(_CANVAS_RECT_JS))
        box = (left, top, right, bottom)
        colours = canvas_colours(png, box)
        if expect is None or palette is None:
            break
        shown = {c for c in palette if colours[c] >= NODE_PIXELS}
        if shown == expect or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    providers = [(n, e) for n, e in json.loads(browser.evaluate(_PROVIDERS_JS))]
    return Shot(png, providers, box, colours)


#: ``{section header: [[key, value]]}`` of the side panel's node info (a node is selected).
_NODE_INFO_JS = """JSON.stringify(Object.fromEntries([...document.querySelectorAll(
  "info-panel .section")].map(s => [
    [...(s.querySelector(".header") || {childNodes: []}).childNodes].filter(
      n => n.nodeType === 3).map(n => n.textContent).join("").trim(),
    [...s.querySelectorAll("table.info-attrs tr")].map(r => [
      (r.querySelector("td.key") || {}).textContent?.trim() || "",
      (r.querySelector("td.value .one-line-text") || r.querySelector("td.value") || {})
        .textContent?.trim() || ""])])))"""

#: ``[[title, rows of cells]]`` of the node-data providers panel's tables (no node selected).
_STATS_JS = """JSON.stringify([...document.querySelectorAll(
  "node-data-provider-summary-panel .table-container")].map(t => [
    [...t.querySelector(".title-label-container").childNodes].filter(
      n => n.nodeType === 3).map(n => n.textContent).join("").trim(),
    [...t.querySelectorAll("tbody tr")].slice(0, 200).map(
      r => [...r.querySelectorAll("td")].map(c => c.textContent.trim()))]))"""

#: The page has drawn the graph and shows the selected node's info.
_OPENED_JS = """(() => {
  const text = document.body ? document.body.innerText : "";
  const canvas = document.querySelector("webgl-renderer canvas.main");
  return !text.includes("Processing graph") && !text.includes("Converting")
    && canvas !== null && canvas.width > 0
    && [...document.querySelectorAll("info-panel .section .header")].some(
      h => h.textContent.includes("Node data providers"))
    && [...document.querySelectorAll("info-panel .section .header")].some(
      h => h.textContent.includes("Node info"));
})()"""


@dataclass
class Opened:
    """The page as ``qdebug explore`` opens it (nothing clicked), and its side panel once the
    selection is cleared."""

    png: bytes
    node_info: dict[str, list[tuple[str, str]]]
    """The selected node's side panel: section header → (key, value) rows."""
    canvas: tuple[int, int, int, int]
    colours: Counter[str]
    """Pixels of the graph's canvas by ``#rrggbb``, as opened."""
    providers: list[tuple[str, str]]
    """The node-data providers panel (name, eye icon) after clicking the empty canvas."""
    tables: dict[str, list[list[str]]]
    """The providers panel's tables (Aggregated stats, Node data, …) by title, likewise."""


def _frames(browser: HeadlessChromium) -> None:
    browser.evaluate("new Promise(r => requestAnimationFrame(() => "
                     "requestAnimationFrame(() => r(true))))")


def open_as_printed(browser: HeadlessChromium, url: str, out: Path, *,
                    timeout: float = 120) -> Opened:
    """Open the URL ``qdebug explore`` printed, as it is, wait until the graph is drawn with a
    node selected, save the viewport to ``out``; then clear the selection with a click on the
    empty right edge of the canvas and read the providers panel."""
    browser.navigate(url)
    browser.wait_for(_OPENED_JS, timeout=timeout)
    time.sleep(1.0)  # the zoom to the selected node is animated
    _frames(browser)
    png = browser.screenshot(out)
    info = {k: [(a, b) for a, b in rows]
            for k, rows in json.loads(browser.evaluate(_NODE_INFO_JS)).items()}
    box = tuple(round(v) for v in browser.evaluate(_CANVAS_RECT_JS))
    left, top, right, bottom = box
    colours = canvas_colours(png, (left, top, right, bottom))
    for kind in ("mousePressed", "mouseReleased"):
        browser.send("Input.dispatchMouseEvent", {
            "type": kind, "x": right - 40, "y": (top + bottom) // 2, "button": "left",
            "clickCount": 1})
    browser.wait_for("document.querySelectorAll("
                     "'node-data-provider-summary-panel .index-row').length > 0", timeout=30)
    providers = [(n, e) for n, e in json.loads(browser.evaluate(_PROVIDERS_JS))]
    tables = {t: rows for t, rows in json.loads(browser.evaluate(_STATS_JS))}
    return Opened(png, info, (left, top, right, bottom), colours, providers, tables)


#: A colour counts as drawn on the graph from this many pixels (an op's node is ~800 pixels
#: at the default zoom of the digits CNN in a 1400×900 window; its anti-aliased edge, far
#: fewer).
NODE_PIXELS = 300


def main(argv: list[str]) -> int:
    """Refresh a screenshot: ``python tests/helpers/explorer_page.py TRACE OUT.png``."""
    import tempfile

    from headless_chromium import find_chromium

    trace, out = Path(argv[0]), Path(argv[1])
    binary = find_chromium()
    if binary is None:
        print("no Chromium on PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder, explore_server(trace, Path(folder)) as url, \
            HeadlessChromium(binary, flags=WEBGL_FLAGS) as browser:
        page = open_as_printed(browser, url, out)
    print(f"wrote {out}: {len(page.png)} bytes; selected {page.node_info.get('Node info')}; "
          f"providers {page.providers}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))
