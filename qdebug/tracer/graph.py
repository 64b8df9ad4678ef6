"""The Keras layer graph of a model of either flavour, nested models flattened, in topological
order, and a probe that computes every layer's output in one compiled call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qdebug.errors import ModelLoadError


@dataclass
class LayerNode:
    """One Keras layer of the flattened graph."""

    name: str
    """Qualified name: ``outer/inner`` inside nested models."""
    layer: Any
    class_name: str
    inbound: list[str]
    output_shape: list[int | None]
    is_model: bool = False
    """A nested model; its value is that of its output layer."""
    is_input: bool = False
    consumers: list[str] = field(default_factory=list)
    call_index: int = 0
    """Which of the layer's calls (``_inbound_nodes`` index) this node is: a layer called more
    than once (a shared layer, a siamese sub-model) has one node per call, ``name#k`` the k-th."""
    tensor: Any = None
    """The call's output tensor, where it is not the layer's first (``layer.output``)."""


def _history_layer(tensor: Any) -> Any:
    hist = getattr(tensor, "_keras_history", None)
    if hist is None:
        return None
    return hist[0]


def _first_tensor(value: Any) -> Any:
    while isinstance(value, list | tuple):
        if not value:
            return None
        value = value[0]
    if isinstance(value, dict):
        return _first_tensor(list(value.values()))
    return value


def _flatten_tensors(value: Any) -> list[Any]:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        out: list[Any] = []
        for v in value:
            out.extend(_flatten_tensors(v))
        return out
    return [value] if value is not None else []


def _node_inputs(layer: Any, call: int = 0) -> list[Any]:
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) <= call:
        return []
    node = nodes[call]
    tensors = getattr(node, "input_tensors", None)
    if tensors is None:  # pragma: no cover - both flavours have it
        return []
    return _flatten_tensors(tensors)


def _is_model(layer: Any) -> bool:
    """A nested functional or sequential model (a tf_keras subclassed model has
    ``_is_graph_network`` too, False: its layers are Python code, it is one layer)."""
    return (
        hasattr(layer, "layers")
        and hasattr(layer, "inputs")
        and layer.__class__.__name__
        in (
            "Functional",
            "Sequential",
            "Model",
        )
    ) or (hasattr(layer, "layers") and getattr(layer, "_is_graph_network", False) is True)


def _shape(tensor: Any) -> list[int | None]:
    shape = getattr(tensor, "shape", None)
    if shape is None:
        return []
    dims = shape.as_list() if hasattr(shape, "as_list") else list(shape)
    return [None if d is None else int(d) for d in dims]


def has_graph(model: Any) -> bool:
    """Whether a Keras model has a layer graph (defined inputs): a subclassed model that was
    never called on a ``keras.Input`` has none, its layers being Python code."""
    return bool(list(getattr(model, "inputs", None) or []))


class LayerGraph:
    """Every layer of a model, nested models flattened, in topological order."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.nodes: list[LayerNode] = []
        self._names: dict[int, str] = {}  # id(layer) -> qualified name
        self._calls: dict[tuple[int, int], str] = {}  # (id(layer), call) -> node name
        self._later: dict[str, tuple[Any, int]] = {}  # later calls not yet added
        self._first: dict[int, int] = {}  # id(layer) -> the call its own node stands for
        self._visit(model, prefix="")
        self._by_name = {n.name: n for n in self.nodes}
        for n in self.nodes:
            for src in n.inbound:
                if src in self._by_name:
                    self._by_name[src].consumers.append(n.name)
        self.input_names = [self._names[id(_history_layer(t))] for t in model.inputs]
        self.output_names = [self.source_name(t) for t in _outputs(model)]
        """The layer computing each model output (a layer returning several tensors, such as
        a wrapped subclassed model or an LSTM with ``return_state``, appears once per output)."""
        self.output_keys = _output_keys(model, self.output_names)
        """Each output's own name: its layer's for the layer's first tensor, ``layer:k`` for
        its k-th; the probe's value of that output is under this key."""
        self.output_shapes = [_shape(t) for t in _outputs(model)]

    def _visit(self, model: Any, prefix: str) -> None:
        if not has_graph(model):
            raise ModelLoadError(
                f"model {model.name!r} has no defined inputs",
                "build it with keras.Input(...) or call model.build(input_shape) first",
            )
        # Keras 3 keeps the ops a functional model applies to tensors (``x * y``, ``x + 3``)
        # in ``operations`` only: without them a layer consuming one has a missing input.
        layers = list(getattr(model, "operations", None) or model.layers)
        for t in model.inputs:
            il = _history_layer(t)
            if il is not None and all(il is not x for x in layers):
                layers.insert(0, il)
        calls = _calls_in_graph(model)
        for layer in layers:
            name = prefix + layer.name
            self._names[id(layer)] = name
            used = calls.get(id(layer), [0])
            self._first[id(layer)] = used[0]
            for k, c in enumerate(used):
                self._calls[(id(layer), c)] = name if k == 0 else f"{name}#{k + 1}"
                if k:
                    self._later[self._calls[(id(layer), c)]] = (layer, c)
            for t in _node_inputs(layer, used[0]):
                self._emit_later(t)
            if _is_model(layer):
                # The nested model's own input layers are the values its caller feeds in.
                self._visit(layer, prefix=name + "/")
                inner_out = [self.source_name(t) for t in _outputs(layer)]
                self.nodes.append(
                    LayerNode(
                        name,
                        layer,
                        layer.__class__.__name__,
                        inner_out,
                        _shape(_first_tensor(_outputs(layer))),
                        is_model=True,
                        call_index=used[0],
                    )
                )
                continue
            is_input = layer.__class__.__name__ == "InputLayer"
            inbound = self._inbound(layer, used[0])
            if is_input and prefix and not inbound:
                inbound = self._caller_inputs(model, layer)
            self.nodes.append(self._call_node(name, layer, used[0], inbound, is_input))
        for t in _outputs(model):
            self._emit_later(t)

    def _inbound(self, layer: Any, call: int) -> list[str]:
        """The names of the layers (or calls) whose tensors a layer's call consumes."""
        return [n for n in (self.source_name(t) for t in _node_inputs(layer, call)) if n]

    def _call_node(
        self, name: str, layer: Any, call: int, inbound: list[str], is_input: bool = False
    ) -> LayerNode:
        tensor = None
        if call:  # not the layer's first call: ``layer.output`` is another call's
            nodes = layer._inbound_nodes
            tensor = _first_tensor(getattr(nodes[call], "output_tensors", None))
        out = tensor if tensor is not None else _first_tensor(getattr(layer, "output", None))
        return LayerNode(name, layer, layer.__class__.__name__, inbound, _shape(out),
                         is_input=is_input, call_index=call, tensor=tensor)

    def _emit_later(self, tensor: Any) -> None:
        """Add the node of a layer's later call (``name#k``) that produces ``tensor``, once,
        before the first layer that consumes it: one node for the whole call, a nested model's
        included (its ops are that call's, not its consumer's)."""
        name = self.source_name(tensor)
        if name not in self._later:
            return
        layer, call = self._later.pop(name)
        for t in _node_inputs(layer, call):
            self._emit_later(t)
        self.nodes.append(self._call_node(name, layer, call, self._inbound(layer, call)))

    def source_name(self, tensor: Any) -> str:
        """The node (layer, or a layer's later call) that computed a Keras tensor; "" when
        it is none of the graph's."""
        hist = getattr(tensor, "_keras_history", None)
        if hist is None:
            return ""
        key = (id(hist[0]), int(hist[1]) if len(hist) > 1 else 0)
        return self._calls.get(key) or self._names.get(id(hist[0]), "")

    def _caller_inputs(self, model: Any, input_layer: Any) -> list[str]:
        """For an input layer of a nested model: the outer layer that feeds it."""
        position = [i for i, t in enumerate(model.inputs) if _history_layer(t) is input_layer]
        callers = _node_inputs(model, self._first.get(id(model), 0))
        if position and position[0] < len(callers):
            name = self.source_name(callers[position[0]])
            if name:
                return [name]
        return []

    @property
    def batch(self) -> int | None:
        """The batch size the model's inputs fix (a SavedModel saved with ``batch_size=1``,
        whose restored functions accept no other), else None."""
        for t in self.model.inputs:
            dims = _shape(t)
            if dims and dims[0] is not None:
                return dims[0]
        return None

    @property
    def names_by_id(self) -> dict[int, str]:
        """id(layer object) → qualified layer name."""
        return self._names

    def node(self, name: str) -> LayerNode:
        """The node of a qualified layer name."""
        return self._by_name[name]


def in_fixed_batches(
    fn: Callable[[list[np.ndarray]], dict[str, np.ndarray]],
    inputs: list[np.ndarray],
    size: int | None,
) -> dict[str, np.ndarray]:
    """``fn(inputs)``, called on batches of exactly ``size`` samples when the model fixes its
    batch size (the last one padded with copies of its last sample, the results cut back)."""
    n = len(inputs[0]) if inputs else 0
    if size is None or size <= 0 or n == size:
        return fn(inputs)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n, size):
        chunk = [x[start:start + size] for x in inputs]
        short = size - len(chunk[0])
        if short:
            chunk = [np.concatenate([c, np.repeat(c[-1:], short, axis=0)]) for c in chunk]
        parts.append(fn(chunk))
    out: dict[str, np.ndarray] = {}
    for key, first in parts[0].items():
        batched = first.ndim > 0 and first.shape[0] == size
        out[key] = np.concatenate([p[key] for p in parts])[:n] if batched else first
    return out


def input_dtype(tensor: Any) -> str:
    """A model input's dtype name (``float32``, ``int32``, ...), for either Keras."""
    dtype = getattr(tensor, "dtype", "float32")
    return str(getattr(dtype, "name", dtype))


def _outputs(model: Any) -> list[Any]:
    return _flatten_tensors(model.outputs)


def _calls_in_graph(model: Any) -> dict[int, list[int]]:
    """id(layer) → the calls (``_inbound_nodes`` indices) of it that this model's graph makes,
    walking back from the outputs: more than one for a shared layer or a siamese sub-model."""
    found: dict[int, set[int]] = {}
    stack = list(_outputs(model))
    while stack:
        hist = getattr(stack.pop(), "_keras_history", None)
        if hist is None:
            continue
        layer, call = hist[0], int(hist[1]) if len(hist) > 1 else 0
        if call in found.setdefault(id(layer), set()):
            continue
        found[id(layer)].add(call)
        stack.extend(_node_inputs(layer, call))
    return {k: sorted(v) for k, v in found.items()}


def _output_keys(model: Any, layers: list[str]) -> list[str]:
    keys: list[str] = []
    for t, layer in zip(_outputs(model), layers, strict=True):
        hist = getattr(t, "_keras_history", None)
        k = int(hist[2]) if hist is not None and len(hist) > 2 else 0
        key = layer if k == 0 else f"{layer}:{k}"
        while key in keys:  # the same tensor given twice as an output
            key += "'"
        keys.append(key)
    return keys


class Probe:
    """Computes the output of every layer of a ``LayerGraph`` for a few samples, eagerly.

    It runs once per trace (matching layers to tensors on the verification samples; the float
    reference of every sample is the float twin), so compiling a ``tf.function`` for it would
    cost more than the call. Nested models are probed with their own sub-probe fed by the outer
    value of their inputs.
    """

    def __init__(self, graph: LayerGraph, flavour: str) -> None:
        if flavour == "keras3":
            import keras as K
        else:
            import tf_keras as K
        self.graph = graph
        self._plan = self._build(graph.model, "", K)
        self._dtypes = [input_dtype(t) for t in graph.model.inputs]

    def _build(self, model: Any, prefix: str, K: Any) -> tuple[Any, list[str], list[Any]]:
        """(sub-model, names of its outputs, nested plans with the position of their inputs)."""
        names: list[str] = []
        tensors: list[Any] = []
        nested: list[Any] = []
        layers = [n for n in self.graph.nodes if n.name.rpartition("/")[0] == prefix.rstrip("/")]
        for n in layers:
            if n.is_model:
                feed: list[int] = []
                for t in _node_inputs(n.layer, n.call_index):
                    feed.append(len(tensors))
                    tensors.append(t)
                    names.append("")  # feeds only
                nested.append((feed, self._build(n.layer, n.name + "/", K)))
                continue
            out = n.tensor if n.tensor is not None else getattr(n.layer, "output", None)
            names.append(n.name)
            tensors.append(_first_tensor(out))
        if not prefix:  # a layer's later outputs, where the model returns them
            for key, t in zip(self.graph.output_keys, _outputs(model), strict=True):
                if key not in names:
                    names.append(key)
                    tensors.append(t)
        sub = K.Model(model.inputs, tensors)
        return sub, names, nested

    def _run(self, *inputs: Any) -> dict[str, Any]:
        values: dict[str, Any] = {}
        self._apply(self._plan, list(inputs), values)
        return values

    def _apply(self, plan: Any, inputs: list[Any], values: dict[str, Any]) -> None:
        sub, names, nested = plan
        outs = sub(inputs if len(inputs) > 1 else inputs[0], training=False)
        if not isinstance(outs, list | tuple):
            outs = [outs]
        for name, v in zip(names, outs, strict=True):
            if name:
                values[name] = v
        for feed, inner in nested:
            self._apply(inner, [outs[i] for i in feed], values)

    def __call__(self, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Every layer's output (nested models' own value included) for a batch."""
        import tensorflow as tf

        def run(chunk: list[np.ndarray]) -> dict[str, np.ndarray]:
            feeds = [
                tf.convert_to_tensor(x, dtype=d) for x, d in zip(chunk, self._dtypes, strict=True)
            ]
            return {k: np.asarray(v) for k, v in self._run(*feeds).items()}

        values = in_fixed_batches(run, inputs, self.graph.batch)
        for n in self.graph.nodes:
            if n.is_model and n.inbound:
                values[n.name] = values[n.inbound[0]]
        return values
