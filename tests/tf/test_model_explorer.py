"""Model Explorer overlays: the node data parse with the installed package's own dataclasses, their
keys are tensor names of the graph Model Explorer builds from the INT8 model, `qdebug explore`
serves that model, and its page in headless Chromium draws the graph in the overlay's colours.
Skipped (with the reason) where ai-edge-model-explorer or Chromium is not installed."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import qdebug
from explorer_page import (
    NODE_PIXELS,
    WEBGL_FLAGS,
    explore_server,
    open_as_printed,
    screenshot,
)
from headless_chromium import HeadlessChromium, find_chromium
from qdebug.output.explore_graph import focus_tensors
from qdebug.output.model_explorer import SQNR_THRESHOLDS, node_data

pytestmark = pytest.mark.tf  # the fixture trace is made with TensorFlow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def op_trace(digits_model, digits_data, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A fresh schema-1.2 trace (with /ops) of the digits CNN."""
    out = tmp_path_factory.mktemp("me") / "digits_ops.h5"
    return Path(qdebug.trace(digits_model, digits_data[:64], out=out, quiet=True,
                             calib_samples=64))


def _cli(*args: str | Path, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qdebug", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_export_writes_three_sets_keyed_by_tensor_names(op_trace: Path, tmp_path: Path) -> None:
    res = _cli("export", op_trace, "--model-explorer", tmp_path / "me.json", "--tflite",
               tmp_path / "m.tflite")
    assert res.returncode == 0, res.stderr
    files = [tmp_path / n for n in ("me.json", "me.local_sqnr.json", "me.gain.json")]
    assert all(f.is_file() for f in files), res.stdout
    with qdebug.open(op_trace) as tr:
        tensors = {o.tensor_name for o in tr.ops}
        measured = {o.tensor_name for o in tr.ops if o.status == "measured"}
    acc = json.loads(files[0].read_text())
    assert acc["name"].startswith("qdebug: accumulated SQNR")
    assert set(acc["results"]) <= tensors
    assert measured <= set(acc["results"])  # every measured op has a value
    assert acc["thresholds"] and all("bgColor" in t for t in acc["thresholds"])


def test_node_data_parse_with_model_explorers_dataclasses(op_trace: Path) -> None:
    pytest.importorskip("model_explorer", reason="ai-edge-model-explorer is not installed "
                        "(pip install 'qdebug[explorer]')")
    from dacite import Config, from_dict
    from model_explorer import node_data_builder as ndb

    with qdebug.open(op_trace) as tr:
        sets = node_data(tr)
    assert set(sets) == {"", ".local_sqnr", ".gain"}
    for body in sets.values():
        parsed = from_dict(ndb.GraphNodeData, body, config=Config(strict=True))
        assert isinstance(parsed, ndb.GraphNodeData)
        assert all(isinstance(r, ndb.NodeDataResult) for r in parsed.results.values())
        assert all(isinstance(t, ndb.ThresholdItem) for t in parsed.thresholds)
        # The package's own serialisation gives back what qdebug wrote (plus its defaults).
        again = json.loads(parsed.to_json_string())
        assert {k: again[k] for k in body} == body


def test_keys_are_tensor_names_of_model_explorers_graph(op_trace: Path, tmp_path: Path) -> None:
    pytest.importorskip("model_explorer", reason="ai-edge-model-explorer is not installed")
    from model_explorer.builtin_tflite_flatbuffer_adapter import BuiltinTfliteFlatbufferAdapter

    with qdebug.open(op_trace) as tr:
        (tmp_path / "m.tflite").write_bytes(tr.tflite_bytes())
        keys = set(node_data(tr)[""]["results"])
    graphs = BuiltinTfliteFlatbufferAdapter().convert(str(tmp_path / "m.tflite"), {})
    text = json.dumps(graphs, default=lambda o: getattr(o, "__dict__", str(o)))
    names = {k for k in keys if json.dumps(k)[1:-1] in text}
    assert names == keys


def test_explore_serves_the_int8_model_with_overlays(op_trace: Path, tmp_path: Path) -> None:
    pytest.importorskip("model_explorer", reason="ai-edge-model-explorer is not installed")
    with explore_server(op_trace, tmp_path) as url:
        assert "nodeData" in urllib.parse.unquote(url)
        model = next(tmp_path.glob("*_int8.tflite"))
        body = json.dumps({"extensionId": "builtin_tflite_flatbuffer", "cmdId": "convert",
                           "modelPath": str(model), "settings": {},
                           "deleteAfterConversion": False}).encode()
        token = urllib.parse.parse_qs(url.partition("?")[2])["token"][0]
        req = urllib.request.Request(
            f"{url.split('/?')[0]}/apipost/v1/send_command?token={token}", body,
            {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            graph = resp.read().decode()
    keys = json.loads((tmp_path / model.name.replace("_int8.tflite", ".json")).read_text())
    assert all(json.dumps(k)[1:-1] in graph for k in keys["results"])


def _colour(value: float, thresholds: list[dict[str, Any]]) -> str:
    """Model Explorer's own rule (web app, ``getBgColor``): the first threshold the value is at
    or under gives the colour."""
    return next(str(t["bgColor"]) for t in thresholds if value <= float(t["value"]))


def test_page_in_headless_chromium_shows_the_overlay(op_trace: Path, tmp_path: Path) -> None:
    """The real page, in a real browser: every node-data set is listed, and the graph is
    drawn in exactly the colours qdebug's accumulated SQNR of its ops call for."""
    pytest.importorskip("model_explorer", reason="ai-edge-model-explorer is not installed "
                        "(pip install 'qdebug[explorer]')")
    image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (dev extra)")
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium on PATH (apt-get install chromium; .ci/run installs it where "
                    "it can)")
    with qdebug.open(op_trace) as tr:
        sets = node_data(tr)
    accumulated = sets[""]
    palette = {colour for _, colour in SQNR_THRESHOLDS}
    expect = {_colour(r["value"], accumulated["thresholds"])
              for r in accumulated["results"].values()}
    out = tmp_path / "explorer.png"
    with explore_server(op_trace, tmp_path) as url, \
            HeadlessChromium(binary, flags=WEBGL_FLAGS) as browser:
        shot = screenshot(browser, url, out, show=accumulated["name"], n_sets=len(sets),
                          expect=expect, palette=palette)
        console = browser.console_messages()

    png = out.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png == shot.png
    with image.open(out) as im:
        assert im.size == (1400, 900)
    # Every set qdebug wrote is listed, by the name qdebug gave it, in the URL's order (the
    # accumulated SQNR last); the accumulated SQNR is the one shown (eye open), the others not.
    order = [*list(sets.values())[1:], accumulated]
    assert shot.providers == [
        (body["name"], "visibility" if body is accumulated else "visibility_off")
        for body in order
    ], console
    # The graph (its WebGL canvas, not the side panel's table) is painted in the colours of
    # the ops' values, each at least one node's worth of pixels, and in no other colour of
    # the scale beyond an anti-aliased edge.
    drawn = {c for c in palette if shot.colours[c] >= NODE_PIXELS}
    assert drawn == expect, (shot.colours.most_common(12), console)
    assert all(shot.colours[c] < 50 for c in palette - expect), shot.colours.most_common(12)
    # Most of the graph is still background: the overlay colours nodes, not the canvas.
    width, height = shot.canvas[2] - shot.canvas[0], shot.canvas[3] - shot.canvas[1]
    assert sum(shot.colours[c] for c in expect) < 0.2 * width * height


def test_explore_opens_on_the_accumulated_sqnr_and_the_first_culprit(
        op_trace: Path, tmp_path: Path) -> None:
    """The page as the printed URL opens it, nothing clicked: the first culprit's op (a
    healthy model's weakest: tests/unit/test_explore_graph.py) selected and in view, named by
    its Keras layer; the graph coloured by the accumulated SQNR; no sum or mean of dB in the
    side panel. The page docs/images/model-explorer.png shows."""
    pytest.importorskip("model_explorer", reason="ai-edge-model-explorer is not installed "
                        "(pip install 'qdebug[explorer]')")
    image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (dev extra)")
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium on PATH (apt-get install chromium)")
    with qdebug.open(op_trace) as tr:
        tensor = focus_tensors(tr)[0]
        op = next(o for o in tr.ops if o.tensor_name == tensor)
        named = {f"{o.layer.rsplit('/', 1)[-1]} ({o.op_type.lower()})"
                 for o in tr.ops if o.layer and o.measured}
        sets = node_data(tr)
    assert op.layer, "the op opened on belongs to a Keras layer"
    accumulated = sets[""]
    value = accumulated["results"][tensor]["value"]
    out = tmp_path / "opened.png"
    with explore_server(op_trace, tmp_path) as url, \
            HeadlessChromium(binary, flags=WEBGL_FLAGS) as browser:
        page = open_as_printed(browser, url, out)
        console = browser.console_messages()
    with image.open(out) as im:
        assert im.size == (1400, 900)
    info = dict(page.node_info["Node info"])
    assert info["op name"] == f"{op.layer.rsplit('/', 1)[-1]} ({op.op_type.lower()})", (
        page.node_info)
    assert info["namespace"] == op.layer
    assert info["id"] == str(op.index)
    # Its values, one per set; the accumulated SQNR's is the trace's.
    values = dict(page.node_info["Node data providers"])
    assert set(values) == {body["name"] for body in sets.values()}
    assert float(values[accumulated["name"]]) == pytest.approx(value)
    # The culprit is on screen in its accumulated SQNR's colour, the one the graph is drawn by.
    assert page.colours[_colour(value, accumulated["thresholds"])] >= NODE_PIXELS, (
        page.colours.most_common(8), console)
    # With the selection cleared: the accumulated SQNR's eye is open (no click made it so).
    assert page.providers[-1] == (accumulated["name"], "visibility"), page.providers
    assert all(eye == "visibility_off" for _, eye in page.providers[:-1]), page.providers
    # Min and max only: no sum or mean of dB, no table of each root node's share of a sum.
    stats = {row[0]: row[1:] for row in page.tables["Aggregated stats"]}
    assert set(stats["Sum"]) == set(stats["Avg"]) == {"-"}, stats
    assert "-" not in stats["Min"] and "-" not in stats["Max"]
    assert not any("Root-level" in title or "children" in title.lower() for title in page.tables)
    # Every measured op of a layer is listed under its layer's name.
    assert named <= {row[1] for row in page.tables["Node data"]}, page.tables["Node data"]


def test_explore_without_model_explorer_says_install(fixture_trace: Path) -> None:
    code = (
        "import sys\n"
        "class B:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'model_explorer':\n"
        "            raise ModuleNotFoundError(name=name)\n"
        "sys.meta_path.insert(0, B())\n"
        "from qdebug.cli import main\n"
        f"sys.argv = ['qdebug', 'explore', {str(fixture_trace)!r}]\n"
        "main()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "pip install 'qdebug[explorer]'" in res.stderr
