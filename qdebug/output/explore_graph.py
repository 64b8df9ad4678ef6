"""What ``qdebug explore``'s page opens on: Model Explorer's graph of the INT8 model with the
Keras layers in it, and the page state that shows the answer first.

Model Explorer's TFLite adapter names each op node by its type (``conv_2d``) and groups nodes by
the converter's tensor names (one ``model_1`` group holding everything). Here each op the trace
ties to a Keras layer is put in a group named after that layer (a layer of one op is shown as
that op: Model Explorer drops groups of one child) and labelled ``layer (op)``. The page opens
with the culprits' layers expanded and the first culprit's op selected (a healthy model: its
op of lowest accumulated SQNR), and the accumulated SQNR set is listed last, because Model
Explorer colours the graph by the last set it loads (``addRun`` selects each run as it is
added, in the order of the URL's ``nodeData``).

Never imports TensorFlow nor Model Explorer; the graph is JSON from the adapter, changed only
in node ``label`` and ``namespace`` (node ids, edges and tensor names, which the node data are
keyed by, stay as they are).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qdebug.output.fmt import shown

if TYPE_CHECKING:
    from qdebug.store.reader import Trace

#: Culprits whose layers are expanded when the page opens.
EXPANDED_CULPRITS = 5

#: Characters of a layer's name kept in a node's label and in its group's name.
_LABEL_CHARS = 60
_NAMESPACE_CHARS = 200

#: Model Explorer's suffix of a group node's id (``namespace___group___``).
_GROUP = "___group___"


@dataclass(frozen=True)
class Focus:
    """Where the page opens."""

    node_id: str
    """The first culprit's op node (selected); a healthy model's weakest op."""
    label: str
    """That node's label after ``annotate``."""
    groups: tuple[str, ...]
    """Group node ids expanded on load (each culprit layer of several ops)."""


def op_layers(trace: Trace) -> dict[str, str]:
    """``{op tensor name: Keras layer}`` for every op the trace ties to a layer."""
    return {o.tensor_name: o.layer for o in trace.ops if o.tensor_name and o.layer}


def _tensor_of(trace: Trace, index: int) -> str:
    rec = trace.layers[index]
    return rec.tensor_name or (trace.ops[rec.ops[-1]].tensor_name if rec.ops else "")


def focus_tensors(trace: Trace) -> list[str]:
    """Tensor names the page opens on, first selected: the culprits' layers (the op computing
    each layer's tensor), best first; without culprits (a healthy model), the ranked layer of
    lowest accumulated SQNR, its weakest point."""
    out: list[str] = []
    # A culprit may be an op of a layer of many (``find_culprits``): named by the op's name.
    ops = {o.name: o.tensor_name for o in trace.ops}
    for c in trace.culprits():
        own = c.layer != trace.layers[c.index].name and ops.get(c.layer)
        name = own or _tensor_of(trace, c.index)
        if name and name not in out:
            out.append(name)
    if not out:
        sq = trace.layer_metrics().get("sqnr_db")
        ranked = [i for i, r in enumerate(trace.layers) if r.ranked and sq is not None
                  and math.isfinite(float(sq[i]))]
        if ranked and sq is not None:
            name = _tensor_of(trace, min(ranked, key=lambda i: float(sq[i])))
            out = [name] if name else []
    return out


def _tensor_names(node: Mapping[str, Any]) -> list[str]:
    return [str(a.get("value", "")) for m in node.get("outputsMetadata") or ()
            for a in m.get("attrs") or () if a.get("key") == "tensor_name"]


def _graphs(doc: Any) -> list[dict[str, Any]]:
    if not isinstance(doc, dict):
        return []
    return [g for c in doc.get("graphCollections") or () if isinstance(c, dict)
            for g in c.get("graphs") or () if isinstance(g, dict)]


def annotate(graphs_json: bytes, layers: Mapping[str, str],
             culprits: Sequence[str]) -> tuple[bytes, Focus | None]:
    """The adapter's graph with each op of a layer grouped and labelled by it, and the focus on
    the first of ``culprits`` (tensor names, ``focus_tensors``) in the graph (None: none is)."""
    doc = json.loads(graphs_json)
    by_tensor: dict[str, dict[str, Any]] = {}
    members: dict[str, int] = {}
    for graph in _graphs(doc):
        for node in graph.get("nodes") or ():
            names = _tensor_names(node)
            layer = next((layers[t] for t in names if t in layers), None)
            if layer is None:
                continue
            # A stranger's name, cut (the same cut for every op of a layer keeps one group);
            # Model Explorer keeps only what follows a namespace's last ";".
            node["namespace"] = shown(layer, _NAMESPACE_CHARS).replace(";", ",")
            leaf = layer.rsplit("/", 1)[-1]
            node["label"] = f"{shown(leaf, _LABEL_CHARS)} ({node.get('label', '')})"
            members[node["namespace"]] = members.get(node["namespace"], 0) + 1
            for t in names:
                by_tensor.setdefault(t, node)
    hits = [by_tensor[t] for t in culprits if t in by_tensor]
    focus = None
    if hits:
        groups = tuple(dict.fromkeys(
            f"{n['namespace']}{_GROUP}" for n in hits[:EXPANDED_CULPRITS]
            if members.get(n["namespace"], 0) > 1))
        focus = Focus(str(hits[0]["id"]), str(hits[0]["label"]), groups)
    return json.dumps(doc).encode(), focus


def ui_state(focus: Focus | None) -> dict[str, Any]:
    """Model Explorer's ``uiState`` URL value for one pane opened on ``focus``."""
    return {"paneStates": [{
        "deepestExpandedGroupNodeIds": list(focus.groups) if focus else [],
        "selectedNodeId": focus.node_id if focus else "",
        "selectedGraphId": "", "selectedCollectionLabel": "", "widthFraction": 1,
        "selected": True,
    }]}
