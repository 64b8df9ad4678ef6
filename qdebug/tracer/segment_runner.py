"""The float computation of each measured layer, re-run on the INT8 model's own inputs.

A *segment* is what the INT8 model computes between measured tensors: a matched layer plus the
layers fused into it (Conv and BatchNorm fused into a ReLU's CONV_2D). Its inputs are the
measured tensors it consumes. Re-running the segment's Keras layers in float on the dequantized
int8 inputs x̂ gives f(x̂), which splits the accumulated error into the error the layer injects,
q − f(x̂), and the error it passes on, f(x̂) − f(x). All segments run in one ``tf.function``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from qdebug.analysis.segments import Segment
from qdebug.tracer.graph import LayerGraph, LayerNode, in_fixed_batches


def _map(value: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(value, list):
        return [_map(v, fn) for v in value]
    if isinstance(value, tuple):
        return tuple(_map(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    return fn(value)


def _call_arguments(node: LayerNode) -> tuple[Any, dict[str, Any]]:
    kn = node.layer._inbound_nodes[node.call_index]
    if hasattr(kn, "arguments"):  # Keras 3
        return kn.arguments.args, dict(kn.arguments.kwargs)
    return kn.call_args, dict(kn.call_kwargs)  # tf_keras


class SegmentRunner:
    """Runs every segment on given input values, in one compiled call per batch."""

    def __init__(self, graph: LayerGraph, segments: list[Segment]) -> None:
        import tensorflow as tf

        self.graph = graph
        self.segments = segments
        self.feeds = sorted({i for s in segments for i in s.inputs})
        self._fn = tf.function(self._run, reduce_retracing=True, autograph=False)
        self._warm: tuple[Any, dict[str, tuple[int, ...]], Future[Any]] | None = None

    def warm_up(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Trace the compiled call for feeds of ``shapes`` in a background thread, while the
        first batch's interpreters run (tracing is Python, the interpreters release the GIL;
        on a 40-op subclassed layer it is half a second). Only a call with exactly these
        shapes takes that function; any other takes one that never saw them, so every call
        runs the graph it would have traced itself."""
        import tensorflow as tf

        if self.graph.batch:  # a model with a fixed batch is called in chunks of it
            shapes = {k: (self.graph.batch, *s[1:]) for k, s in shapes.items()}
        fn = tf.function(self._run, reduce_retracing=True, autograph=False)
        specs = {k: tf.TensorSpec(shape, tf.float32) for k, shape in shapes.items()}
        pool = ThreadPoolExecutor(1, thread_name_prefix="qdebug-segment-trace")
        self._warm = (fn, dict(shapes), pool.submit(fn.get_concrete_function, specs))
        pool.shutdown(wait=False)

    def _compiled(self, chunk: dict[str, np.ndarray]) -> Any:
        """The function for ``chunk``: the warmed one when its shapes are the warmed ones."""
        if self._warm is None:
            return self._fn
        fn, shapes, traced = self._warm
        if {k: tuple(v.shape) for k, v in chunk.items()} != shapes:
            return self._fn
        try:
            traced.result()
        except Exception:  # traced again here, failing (or not) in the caller's thread
            return self._fn
        return fn

    def _run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for seg in self.segments:
            values: dict[str, Any] = {k: feeds[k] for k in seg.inputs}
            for member in seg.members:
                node = self.graph.node(member)
                args, kwargs = _call_arguments(node)

                def fill(t: Any, values: dict[str, Any] = values) -> Any:
                    if getattr(t, "_keras_history", None) is None:
                        return t
                    return values[self.graph.source_name(t)]

                call_args = _map(args, fill)
                call_kwargs = _map(kwargs, fill)
                if "training" not in call_kwargs and _takes_training(node.layer):
                    call_kwargs["training"] = False
                result = node.layer(*call_args, **call_kwargs)
                while isinstance(result, list | tuple):
                    result = result[0]
                values[member] = result
            out[seg.output] = values[seg.output]
        return out

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """f(feeds) for every segment output (in the batches the model fixes, if it does)."""
        names = list(feeds)
        feeds = {k: self._as_layer(k, v) for k, v in feeds.items()}

        def run(chunk: list[np.ndarray]) -> dict[str, np.ndarray]:
            given = dict(zip(names, chunk, strict=True))
            return {k: v.numpy() for k, v in self._compiled(given)(given).items()}

        return in_fixed_batches(run, [feeds[k] for k in names], self.graph.batch)


    def _as_layer(self, name: str, value: np.ndarray) -> np.ndarray:
        """A feed in its layer's own shape: a folded layer that only reshapes (a squeeze of
        the channel axis) carries its source's tensor, in the source's shape."""
        shape = self.graph.node(name).output_shape[1:]
        dims = [d for d in shape if d is not None]
        if not dims or len(dims) < len(shape) or tuple(value.shape[1:]) == tuple(dims):
            return value
        if int(np.prod(dims, dtype=np.int64)) != int(np.prod(value.shape[1:], dtype=np.int64)):
            return value
        return value.reshape((len(value), *dims))


def _takes_training(layer: Any) -> bool:
    import inspect

    try:
        return "training" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False
