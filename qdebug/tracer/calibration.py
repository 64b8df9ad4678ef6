"""The converter's calibration, on both cores: the same ranges, the same INT8 model.

TensorFlow's calibrator runs every calibration sample through the float model on one thread
while holding the GIL, logging each float tensor's minimum and maximum (a plain global min/max
over all samples, ``calibration_logger.cc``). On a 128×128 VGG-style model that is 17 ms a
sample, most of a conversion. ``faster_calibration`` gives the converter the same answer
sooner:

1. TensorFlow's calibrator itself runs the first two samples. Its result fixes which tensors
   carry ranges and the flatbuffer's layout, and its time says whether the rest is worth
   moving (not on an unrolled LSTM's thousand tiny tensors, where reading them costs more);
2. every sample runs through TensorFlow's own TFLite interpreter (the library the calibrator
   is built from: builtin kernels, its default Eigen pool of 4) in two threads, which release
   the GIL, and each float tensor's min/max is reduced there, as the calibrator logs it (an
   in-place op's input is logged again holding the op's output);
3. the ranges the threads read on the first two samples must equal the calibrator's, bit for
   bit, on every tensor, or the whole calibration is handed back to the calibrator; then the
   global ranges are written into the calibrator's flatbuffer in place (4 bytes each), so the
   calibrated model is the one the calibrator would have written for all the samples.

What the calibrator logs in a way one interpreter run cannot show is left to it: several
subgraphs (control flow logs every iteration), variable tensors (an LSTM's state is logged
before and after its op), ops with intermediate tensors, samples that change shape, and
samples given by signature (dicts or tuples). So does a NaN (where ``std::minmax_element``
and numpy read different ranges). ``tests/tf/test_calibration.py`` checks the whole result against
the calibrator's on real models.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import struct
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: ``QDEBUG_CALIBRATION=tensorflow`` keeps the calibrator's own route, ``threads`` takes the
#: two threads wherever they can promise the same result (also where they are slower); unset,
#: the faster of the two is taken. For checking one against the other
#: (``bench/calibration_check.py``).
ENV = "QDEBUG_CALIBRATION"
#: Worker threads: the two cores of the machines qdebug is built for; more only contend.
WORKERS = 2
#: Each worker interpreter's thread count. The calibrator builds its interpreter without one
#: (-1), and TFLite's Eigen kernels (the float convolutions) then shard over a pool of 4
#: threads whatever the machine (``eigen_support.cc``); the sharding decides the float bits,
#: so the workers use the same 4 (one thread reads other bits on a 128×128 convolution).
INTERPRETER_THREADS = 4
#: Samples queued ahead of the workers (bounded: a calibration set is never held whole).
_QUEUE = 8
#: What reading one float tensor's range costs here, a sample (Python and numpy overhead on a
#: small tensor, measured at ~5 µs); the two threads are only worth starting when the
#: calibrator's own time per sample is over ``_WORTH_IT`` times that for all the tensors
#: (an unrolled LSTM's thousand small tensors: the calibrator is faster).
_PER_TENSOR_S = 5e-6
_WORTH_IT = 1.5
#: ``QuantizationParameters`` vtable slots of ``min`` and ``max`` (schema.fbs field ids 0, 1).
_MIN_SLOT, _MAX_SLOT = 4, 6

#: Where the calibrator's running min and max start (``MinMax`` in calibration_logger.h):
#: ``numeric_limits<float>::max()`` and ``::min()``, the smallest *positive* float, so that
#: a tensor whose values are all negative is logged with a maximum of 1.18e-38, and so here.
_START_LO = np.finfo(np.float32).max
_START_HI = np.finfo(np.float32).tiny

#: How the last calibration in this process was made: ``"two threads"``, or why it went to
#: the calibrator (recorded in the trace's ``converter`` attribute by ``convert``).
last_route = ""


@dataclass
class _Ranges:
    """Running per-tensor ranges of one worker, plus the first two samples' own."""

    lo: np.ndarray
    hi: np.ndarray
    per_sample: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    nan: bool = False


class _Fallback(Exception):
    """The fast path cannot promise the calibrator's result: let the calibrator do it."""


@contextlib.contextmanager
def faster_calibration() -> Iterator[None]:
    """Within this block, the converter's calibration (``Calibrator.calibrate``) takes the
    two-thread route above when it can and the calibrator's own otherwise."""
    try:
        from tensorflow.lite.python.optimize import calibrator as module
    except ImportError:  # pragma: no cover - depends on the TensorFlow version
        yield
        return
    original = module.Calibrator.calibrate
    if getattr(original, "_qdebug_fast", False):  # already inside one
        yield
        return

    def calibrate(self: Any, dataset_gen: Callable[[], Iterable[Any]]) -> Any:
        global last_route
        choice = os.environ.get(ENV, "").strip().lower()
        if choice == "tensorflow":
            last_route = "the calibrator (asked for)"
            return original(self, dataset_gen)
        try:
            # The check runs the calibrator itself on two of the samples; were the fast path
            # to give up after it, the calibrator sees those two again among all the samples,
            # which leaves a global min/max as it is.
            result = calibrate_fast(self._model_content, dataset_gen,
                                    lambda gen: original(self, gen),
                                    always=choice == "threads")
        except Exception as why:  # anything unforeseen: the calibrator's own route decides
            last_route = f"the calibrator ({why})"
            return original(self, dataset_gen)
        last_route = "two threads"
        return result

    calibrate._qdebug_fast = True  # type: ignore[attr-defined]
    module.Calibrator.calibrate = calibrate
    try:
        yield
    finally:
        module.Calibrator.calibrate = original


def calibrate_fast(
    content: bytes,
    dataset_gen: Callable[[], Iterable[Any]],
    reference: Callable[[Callable[[], Iterable[Any]]], Any],
    always: bool = False,
) -> bytes:
    """The calibrated flatbuffer of ``content`` over ``dataset_gen``'s samples, equal to
    ``reference(dataset_gen)`` (TensorFlow's calibrator); raises ``_Fallback`` where that
    cannot be promised or (unless ``always``) would not be faster. ``reference`` is called on
    the first two samples only."""
    _check_graph(content)
    stream = iter(dataset_gen())
    head = [_as_arrays(s) for s in itertools.islice(stream, 2)]
    if not head:
        raise _Fallback("no calibration samples")
    shapes = [a.shape for a in head[0]]
    checked, seconds = _timed_reference(reference, head)
    floats = _float_tensors(content)
    if not always and seconds < _WORTH_IT * len(floats) * _PER_TENSOR_S:
        raise _Fallback("the calibrator is as fast on this model (its time a sample against "
                        f"reading {len(floats)} float tensors)")
    jobs: queue.Queue[tuple[int, list[np.ndarray]] | None] = queue.Queue(_QUEUE)
    shared = _in_place(content, head[0])
    workers = [_Worker(content, shapes, floats, jobs, shared) for _ in range(WORKERS)]
    for w in workers:
        w.start()
    try:
        for k, sample in enumerate(itertools.chain(head, stream)):
            arrays = sample if k < len(head) else _as_arrays(sample)
            if [a.shape for a in arrays] != shapes:
                raise _Fallback("a calibration sample changes shape")
            if any(w.error is not None for w in workers):
                break
            jobs.put((k, arrays))
    finally:
        for _ in workers:
            jobs.put(None)
        for w in workers:
            w.join()
    for w in workers:
        if w.error is not None:
            raise _Fallback(f"interpreter: {w.error}")
    ranges = [w.ranges for w in workers if w.ranges is not None]
    if any(r.nan for r in ranges):
        raise _Fallback("NaN in a tensor: the calibrator's min/max of it is its own")
    lo = np.min([r.lo for r in ranges], axis=0)
    hi = np.max([r.hi for r in ranges], axis=0)
    seen = {k: v for r in ranges for k, v in r.per_sample.items()}
    head_lo = np.min([seen[k][0] for k in range(len(head))], axis=0)
    head_hi = np.max([seen[k][1] for k in range(len(head))], axis=0)
    _patch(checked, workers[0].indices, head_lo, head_hi, lo, hi)
    return bytes(checked)


def _timed_reference(
    reference: Callable[[Callable[[], Iterable[Any]]], Any], head: list[list[np.ndarray]]
) -> tuple[bytearray, float]:
    """The calibrator's result on the first samples, and its time for one sample (from the
    second sample handed out to the end: the first one's includes the set-up)."""
    marks: list[float] = []

    def gen() -> Iterator[list[np.ndarray]]:
        for sample in head:
            marks.append(time.perf_counter())
            yield sample
        marks.append(time.perf_counter())

    result = bytearray(reference(gen))
    seconds = marks[-1] - marks[-2] if len(marks) > 2 else marks[-1] - marks[0]
    return result, seconds


def _as_arrays(sample: Any) -> list[np.ndarray]:
    if not isinstance(sample, list):  # dicts and (signature, dict) tuples: by signature
        raise _Fallback("samples given by signature")
    return [np.asarray(a) for a in sample]


def _schema() -> Any:
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


def _check_graph(content: bytes) -> None:
    """Raise ``_Fallback`` for what one interpreter run cannot show as the calibrator logs
    it."""
    schema = _schema()
    model = schema.Model.GetRootAsModel(content, 0)
    if model.SubgraphsLength() != 1:
        raise _Fallback("several subgraphs")
    graph = model.Subgraphs(0)
    for i in range(graph.TensorsLength()):
        if graph.Tensors(i).IsVariable():
            raise _Fallback("a variable tensor")
    for i in range(graph.OperatorsLength()):
        if graph.Operators(i).IntermediatesLength():
            raise _Fallback("an op with intermediate tensors")


class _Worker(threading.Thread):
    """One TFLite interpreter (TensorFlow's, builtin kernels) reducing the float tensors'
    ranges of the samples it takes from the queue, as the calibrator logs them."""

    def __init__(self, content: bytes, shapes: list[tuple[int, ...]], floats: list[int],
                 jobs: queue.Queue[tuple[int, list[np.ndarray]] | None],
                 shared: list[tuple[int, int]]) -> None:
        super().__init__(daemon=True, name="qdebug-calibration")
        self.jobs = jobs
        self.error: str | None = None
        self.ranges: _Ranges | None = None
        self.interpreter = _interpreter(content, shapes, preserve=True)
        self.indices = floats
        self.inputs = [int(d["index"]) for d in self.interpreter.get_input_details()]
        where = {t: j for j, t in enumerate(self.indices)}
        pairs = [(where[i], where[o]) for i, o in shared
                 if i in where and o in where]
        self.shared_in = np.array([i for i, _ in pairs], dtype=np.intp)
        self.shared_out = np.array([o for _, o in pairs], dtype=np.intp)

    def run(self) -> None:
        it = self.interpreter
        lo = np.full(len(self.indices), _START_LO, np.float32)
        hi = np.full(len(self.indices), _START_HI, np.float32)
        self.ranges = ranges = _Ranges(lo, hi)
        try:
            views = [it.tensor(i) for i in self.indices]
        except Exception as exc:  # noted; the queue is still drained below
            self.error, views = f"{type(exc).__name__}: {exc}", []
        while (job := self.jobs.get()) is not None:
            if self.error is not None:
                continue  # drain: the producer is stopping
            k, arrays = job
            try:
                s_lo, s_hi = self._sample(it, views, arrays)
                if np.isnan(s_lo).any() or np.isnan(s_hi).any():
                    ranges.nan = True
                np.minimum(lo, s_lo, out=lo)
                np.maximum(hi, s_hi, out=hi)
                if k < 2:  # the samples the calibrator itself also ran
                    ranges.per_sample[k] = (s_lo, s_hi)
            except Exception as exc:  # the calibrator will say it in its own words
                self.error = f"{type(exc).__name__}: {exc}"

    def _sample(self, it: Any, views: list[Callable[[], np.ndarray]],
                arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One sample's ranges as the calibrator logs them."""
        for index, array in zip(self.inputs, arrays, strict=True):
            it.set_tensor(index, array)
        it.invoke()
        own_lo = np.full(len(views), _START_LO, np.float32)
        own_hi = np.full(len(views), _START_HI, np.float32)
        for j, view in enumerate(views):
            try:
                values = view()
            except ValueError:  # no data in this run (an optional input left empty)
                continue
            if values.size:
                own_lo[j] = values.min()
                own_hi[j] = values.max()
            del values  # the interpreter refuses to run while a view is alive
        np.minimum(own_lo, _START_LO, out=own_lo)
        np.maximum(own_hi, _START_HI, out=own_hi)
        # The calibrator logs an op's inputs again after it ran; an op that writes its output
        # over its input (an in-place ADD) has that input logged with the output's values.
        s_lo, s_hi = own_lo.copy(), own_hi.copy()
        np.minimum.at(s_lo, self.shared_in, own_lo[self.shared_out])
        np.maximum.at(s_hi, self.shared_in, own_hi[self.shared_out])
        return s_lo, s_hi


def _in_place(content: bytes, first: list[np.ndarray]) -> list[tuple[int, int]]:
    """The (input, output) tensor pairs of the ops that run in place in an interpreter like
    the calibrator's (no tensors preserved), after a run of the first sample (a dynamic
    tensor has its buffer from then on): an input and an output of one op that share a
    buffer can only be an in-place op's."""
    it = _interpreter(content, [a.shape for a in first], preserve=False)
    for detail, array in zip(it.get_input_details(), first, strict=True):
        it.set_tensor(detail["index"], array)
    it.invoke()
    address: dict[int, int] = {}
    for t in range(_tensor_count(content)):
        try:
            view = it.tensor(t)()
        except ValueError:
            continue
        if isinstance(view, np.ndarray) and view.nbytes:  # a 0-d tensor comes as a scalar
            address[t] = int(view.ctypes.data)
        del view
    graph = _schema().Model.GetRootAsModel(content, 0).Subgraphs(0)
    pairs = []
    for n in range(graph.OperatorsLength()):
        op = graph.Operators(n)
        outs = [int(o) for o in op.OutputsAsNumpy()] if op.OutputsLength() else []
        for i in (op.InputsAsNumpy() if op.InputsLength() else []):
            for o in outs:
                if int(i) != o and address.get(int(i), -1) == address.get(o, -2):
                    pairs.append((int(i), o))
    return pairs


def _tensor_count(content: bytes) -> int:
    return int(_schema().Model.GetRootAsModel(content, 0).Subgraphs(0).TensorsLength())


def _float_tensors(content: bytes) -> list[int]:
    """The model's float32 tensors (the ones the calibrator can log)."""
    schema = _schema()
    graph = schema.Model.GetRootAsModel(content, 0).Subgraphs(0)
    return [t for t in range(graph.TensorsLength())
            if graph.Tensors(t).Type() == schema.TensorType.FLOAT32]


def _interpreter(content: bytes, shapes: list[tuple[int, ...]], preserve: bool) -> Any:
    from qdebug.tracer.tfenv import import_tf

    tf = import_tf()
    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": it is the
        warnings.simplefilter("ignore")  # calibrator's own library, which is the point here
        it = tf.lite.Interpreter(
            model_content=content, num_threads=INTERPRETER_THREADS,
            experimental_op_resolver_type=(
                tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
            experimental_preserve_all_tensors=preserve,
        )
    for detail, shape in zip(it.get_input_details(), shapes, strict=True):
        if tuple(detail["shape"]) != shape:
            it.resize_tensor_input(detail["index"], list(shape), strict=False)
    it.allocate_tensors()
    return it


def _patch(buf: bytearray, indices: list[int], head_lo: np.ndarray, head_hi: np.ndarray,
           lo: np.ndarray, hi: np.ndarray) -> None:
    """Check the calibrator's ranges in ``buf`` (its run of the first samples) against
    ``head_lo/hi``, the threads' own of the same samples, and write ``lo/hi`` over them, in
    place."""
    schema = _schema()
    graph = schema.Model.GetRootAsModel(buf, 0).Subgraphs(0)
    where = {t: j for j, t in enumerate(indices)}
    for t in range(graph.TensorsLength()):
        q = graph.Tensors(t).Quantization()
        if q is None or q.MinLength() == 0:
            continue
        j = where.get(t)
        if j is None or q.MinLength() != 1 or q.MaxLength() != 1:
            raise _Fallback(f"tensor {t} has ranges the interpreter does not read")
        if q.Min(0) != head_lo[j] or q.Max(0) != head_hi[j]:
            raise _Fallback(f"tensor {t}: the interpreter's range differs from the calibrator's"
                            f" ({q.Min(0)!r}, {q.Max(0)!r} against {head_lo[j]!r}, {head_hi[j]!r})")
        for slot, value in ((_MIN_SLOT, lo[j]), (_MAX_SLOT, hi[j])):
            struct.pack_into("<f", buf, q._tab.Vector(q._tab.Offset(slot)), float(value))

