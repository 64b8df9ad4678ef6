"""What `qdebug explore`'s page opens on, without a browser: the graph Model Explorer is served
(ops grouped and labelled by their Keras layer), the node it selects (the first culprit, or a
healthy model's weakest layer) and the URL (the accumulated SQNR listed last, so it colours the
graph). The page itself, in headless Chromium: tests/tf/test_model_explorer.py."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import qdebug
from qdebug.output.explore import page_url, plan
from qdebug.output.explore_graph import annotate, focus_tensors, ui_state
from qdebug.store.schema import Culprit, CulpritKind
from synthetic_traces import make_trace


def _node(i: int, label: str, namespace: str, tensor: str) -> dict[str, Any]:
    return {"id": str(i), "label": label, "namespace": namespace, "attrs": [],
            "incomingEdges": [], "outputsMetadata": [{"id": "0", "attrs": [
                {"key": "tensor_index", "value": str(i)},
                {"key": "tensor_name", "value": tensor}]}]}


GRAPH = {"graphCollections": [{"label": "", "graphs": [{"id": "main", "nodes": [
    _node(0, "quantize", "tfl.quantize", "tfl.quantize"),
    _node(1, "conv_2d", "m_1/conv_1/BiasAdd", "m_1/conv_1/Relu;m_1/conv_1/BiasAdd"),
    _node(2, "fully_connected", "m_1/probs_1/BiasAdd", "m_1/probs_1/MatMul"),
    _node(3, "softmax", "Identity1", "Identity1"),
    _node(4, "pseudo_const", "m_1/conv_1/convolution", "m_1/conv_1/convolution"),
]}]}]}
LAYERS = {"tfl.quantize": "image", "m_1/conv_1/Relu;m_1/conv_1/BiasAdd": "block/conv",
          "m_1/probs_1/MatMul": "probs", "Identity1": "probs"}


def test_ops_are_grouped_and_labelled_by_their_layer_and_the_culprit_selected() -> None:
    served, focus = annotate(json.dumps(GRAPH).encode(), LAYERS, ["Identity1", "nowhere"])
    nodes = {n["id"]: n for n in json.loads(served)["graphCollections"][0]["graphs"][0]["nodes"]}
    assert [(nodes[i]["label"], nodes[i]["namespace"]) for i in "0123"] == [
        ("image (quantize)", "image"), ("conv (conv_2d)", "block/conv"),
        ("probs (fully_connected)", "probs"), ("probs (softmax)", "probs")]
    # What is no layer's op is left as the adapter made it; ids and tensor names never change.
    assert nodes["4"] == GRAPH["graphCollections"][0]["graphs"][0]["nodes"][4]
    assert [n["outputsMetadata"] for n in nodes.values()] == [
        n["outputsMetadata"] for n in GRAPH["graphCollections"][0]["graphs"][0]["nodes"]]
    # The culprit's op is selected and its layer of two ops expanded (one of one op is no group).
    assert focus is not None and focus.node_id == "3" and focus.label == "probs (softmax)"
    assert focus.groups == ("probs___group___",)
    _, alone = annotate(json.dumps(GRAPH).encode(), LAYERS, ["m_1/conv_1/Relu;m_1/conv_1/BiasAdd"])
    assert alone is not None and alone.node_id == "1" and alone.groups == ()
    assert annotate(json.dumps(GRAPH).encode(), LAYERS, [])[1] is None


def test_the_url_lists_the_accumulated_sqnr_last_and_opens_on_the_focus(tmp_path: Path) -> None:
    _, focus = annotate(json.dumps(GRAPH).encode(), LAYERS, ["Identity1"])
    sets = {"": {"name": "acc"}, ".local_sqnr": {"name": "local"}, ".gain": {"name": "gain"}}
    url = page_url("localhost", 8080, "tok", plan(tmp_path, "m", sets), focus)
    data = json.loads(urllib.parse.parse_qs(url.partition("?")[2])["data"][0])
    assert [Path(p).name for p in data["nodeData"]] == ["m.local_sqnr.json", "m.gain.json",
                                                       "m.json"]
    assert data["uiState"] == ui_state(focus)
    pane = data["uiState"]["paneStates"][0]
    assert pane["selectedNodeId"] == "3" and pane["deepestExpandedGroupNodeIds"] == [
        "probs___group___"]
    assert url.startswith("http://localhost:8080/?token=tok&data=")


def _ranker(*rows: tuple[int, float]) -> Any:
    def rank(layers: Any, *args: Any, **kwargs: Any) -> list[Culprit]:
        return [Culprit(layers[i].name, i, CulpritKind.INJECTS, s, "") for i, s in rows]

    return rank


def test_the_focus_is_the_first_culprit_else_the_weakest_layer(tmp_path: Path) -> None:
    broken = make_trace(tmp_path / "b.h5", layers=8, noise_lsb={3: 6.0, 7: 25.0},
                        rank_culprits=_ranker((5, 0.7), (3, 0.2)))
    with qdebug.open(broken) as tr:
        assert focus_tensors(tr) == [tr.layers[5].tensor_name, tr.layers[3].tensor_name]
    healthy = make_trace(tmp_path / "h.h5", layers=8, noise_lsb={4: 3.0})
    with qdebug.open(healthy) as tr:
        assert not tr.culprits()
        assert focus_tensors(tr) == [tr.layers[4].tensor_name]  # its lowest SQNR


def test_a_strangers_long_layer_name_is_cut_the_same_way_for_each_of_its_ops() -> None:
    name = "a;b\x1b[31m" + "x" * 10_000
    served, focus = annotate(json.dumps(GRAPH).encode(),
                             {"m_1/probs_1/MatMul": name, "Identity1": name}, ["Identity1"])
    nodes = json.loads(served)["graphCollections"][0]["graphs"][0]["nodes"]
    mine = [n for n in nodes if n["id"] in ("2", "3")]
    assert len({n["namespace"] for n in mine}) == 1  # still one group
    assert all(";" not in n["namespace"] and "\x1b" not in n["namespace"] for n in mine)
    assert all(len(n["label"]) < 150 and "\x1b" not in n["label"] for n in mine)
    assert focus is not None and focus.groups == (f"{mine[0]['namespace']}___group___",)


def test_a_culprit_op_of_a_layer_of_many_ops_is_the_op_opened_on() -> None:
    """find_culprits names an op of a layer of many ops by the op's name (its index the
    layer's row): the page opens on that op, not on the op computing the layer's tensor."""
    from types import SimpleNamespace

    import numpy as np

    from qdebug.store.schema import LayerRecord, OpRecord

    lstm = LayerRecord("lstm", "LSTM", status="matched", tensor_name="t_out", ops=[0, 1, 2, 3])
    ops = [OpRecord(i, "FULLY_CONNECTED", f"lstm/cell/op{i}", f"t{i}", i, "int8", layer="lstm")
           for i in range(4)]
    trace = SimpleNamespace(
        layers=[lstm], ops=ops, layer_metrics=lambda: {"sqnr_db": np.array([12.0])},
        culprits=lambda: [Culprit("lstm/cell/op1", 0, CulpritKind.INJECTS, 0.8, ""),
                          Culprit("lstm", 0, CulpritKind.INJECTS, 0.1, "")])
    assert focus_tensors(trace) == ["t1", "t_out"]  # type: ignore[arg-type]
