"""The interpreters a trace runs side by side on every sample, and what is read from them.

- ``int8``: the deployed quantized model, every tensor preserved (run on the first batch only
  when the verify model holds every wanted tensor: its quantized path computes the very same
  integers, checked bit for bit on that batch, and then stands in for it);
- ``plain``: the same model without preserved tensors, to check that reading tensors did not
  change the outputs;
- ``twin``: the float model from the same converter (same ops, same tensor names): the float
  reference of every op;
- ``verify``: the converter's numeric-verify model, giving each op's f(x̂) (optional), or
  qdebug's own local reference model for any other pair (``local_ref``), fed the deployed
  model's tensors after each invoke.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from qdebug.metrics import QuantParams, dequantize
from qdebug.tracer.kernel_compare import KernelComparison
from qdebug.tracer.litert import LiteModel
from qdebug.tracer.local_ref import OpLocalRefs
from qdebug.tracer.matching import quantized_input
from qdebug.tracer.op_view import signature_names
from qdebug.tracer.oprows import OpTable
from qdebug.tracer.verify import LocalRefs, fake_quant_params, fake_quantize

T = TypeVar("T")
R = TypeVar("R")


def run_ahead(
    items: Iterator[T], run: Callable[[T], R]
) -> Generator[tuple[T, R], None, None]:
    """``(item, run(item))`` for each item, running the next item in a worker thread while the
    caller works on the current one.

    LiteRT's ``invoke`` and numpy's loops release the GIL, so the interpreters of one batch and
    the statistics of the previous one share the two cores. Items are drawn (the data source
    read) in the caller's thread; ``run`` calls stay in order, one at a time.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="qdebug-sides") as pool:
        pending: tuple[T, Future[R]] | None = None
        for item in items:
            ahead = (item, pool.submit(run, item))
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = ahead
        if pending is not None:
            yield pending[0], pending[1].result()


def lite_input_order(lite: LiteModel, names: list[str]) -> list[int]:
    """Position in ``names`` (the model's inputs) of each LiteRT input."""
    if len(names) == 1:
        return [0]
    signed, _ = signature_names(lite)
    order: list[int] = []
    for d in lite.input_details:
        tname = str(d["name"])
        hits = [i for i, n in enumerate(names) if signed.get(int(d["index"])) == n]
        hits = hits or [i for i, n in enumerate(names) if tname in (f"serving_default_{n}:0", n)]
        if not hits:
            hits = [i for i, n in enumerate(names) if n in tname]
        order.append(hits[-1] if hits else len(order))
    return order


def quantize_like_litert(x: np.ndarray, qp: QuantParams, dtype: np.dtype) -> np.ndarray:
    """LiteRT's QUANTIZE of float values: x / scale in float32, rounded half to even (as its
    kernel does: -10.5 → -10; half away from zero disagrees), plus the zero point, clamped to
    the integer range. Checked against the deployed model's own QUANTIZE output on the first
    batch before it is trusted (``Sides``)."""
    v = np.asarray(x, dtype=np.float32) / np.float32(qp.scale)
    return np.clip(np.rint(v) + qp.zero_point, qp.qmin, qp.qmax).astype(dtype)


def _one(value: np.ndarray) -> np.ndarray:
    """A tensor's value without its batch dimension of 1."""
    return value[0] if value.shape[:1] == (1,) else value


def stored_sizes(
    lite: LiteModel, tensors: Iterable[int], sample: list[np.ndarray], input_names: list[str]
) -> dict[int, int] | None:
    """Elements per sample of each tensor as the trace stores it (a leading batch axis of 1
    dropped, a tensor without one whole), from the real tensors after running ``sample``: a
    dynamic tensor's shape before the first invoke can be 1 where it is millions. None when
    the model cannot run the sample (the trace loop then says why)."""
    try:
        lite.invoke([sample[p] for p in lite_input_order(lite, input_names)])
        return {t: int(_one(lite.view(t)).size) for t in tensors}
    except (RuntimeError, ValueError):
        return None


class _Rows:
    """Per key, one array (n, ...) that sample ``i`` of a batch is written into: each value is
    copied once, from the interpreter's memory into its row, instead of copied out and then
    stacked (which cost as much again as the interpreters' reads on EfficientNetB0)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.arrays: dict[int, np.ndarray] = {}

    def put(self, key: int, i: int, value: np.ndarray) -> None:
        rows = self.arrays.get(key)
        if rows is None:
            rows = self.arrays[key] = np.empty((self.n, *value.shape), value.dtype)
        rows[i] = value


class _Reads:
    """Per tensor, one array (n, ...) that sample ``i`` of a batch is copied into, from a
    ``LiteModel.reader`` each: the arrays are made on the first sample and the readers kept,
    so that each later sample costs one call and one copy per tensor (the per-tensor look-ups
    of ``_Rows.put`` were most of the interpreter threads' own time on a model of 260 small
    ops, where they held the GIL the statistics wait for). A leading batch axis of 1 is
    dropped, as ``_one`` does."""

    def __init__(self, n: int, readers: Sequence[tuple[int, Callable[[], np.ndarray]]]) -> None:
        self.n, self.readers = n, readers
        self.arrays: dict[int, np.ndarray] = {}
        self._rows: list[np.ndarray] = []

    def take(self, i: int) -> None:
        """Copy every reader's current value into row ``i``."""
        if self._rows:
            for rows, (_, read) in zip(self._rows, self.readers, strict=True):
                rows[i] = read()
            return
        for key, read in self.readers:
            value = np.asarray(read())
            rows = np.empty((self.n, *value.shape), value.dtype)
            rows[i] = value
            self._rows.append(rows)
            self.arrays[key] = (rows.reshape(self.n, *value.shape[1:])
                                if value.shape[:1] == (1,) else rows)


@dataclass
class BatchValues:
    """Per tensor index, the values of a batch (n, ...)."""

    int8: dict[int, np.ndarray] = field(default_factory=dict)
    twin: dict[int, np.ndarray] = field(default_factory=dict)
    local: dict[int, np.ndarray] = field(default_factory=dict)
    """Per op row, f(x̂) from the verify model."""
    outputs: list[np.ndarray] = field(default_factory=list)
    """Per model output, the quantized model's final tensor (n, ...)."""
    checked: int = 0
    """Samples whose outputs were compared with the plain interpreter's."""
    mismatched: int = 0
    max_diff: float = 0.0


class Sides:
    """Runs every interpreter on each sample and collects the tensors asked for."""

    def __init__(
        self,
        int8: LiteModel,
        plain: LiteModel,
        twin: LiteModel,
        table: OpTable,
        local: LocalRefs | None,
        input_names: list[str],
        deploy: LiteModel | None = None,
    ) -> None:
        self.int8, self.plain, self.twin, self.table, self.local = int8, plain, twin, table, local
        self.deploy = deploy
        """The deployment kernels (XNNPACK), outputs only, when asked for."""
        self.kernels = KernelComparison()
        """The deployment kernels' outputs against the float model's and the reference
        kernels' (``--xnnpack``)."""
        self.order = lite_input_order(int8, input_names)
        self.twin_order = lite_input_order(twin, input_names)
        self.fed = isinstance(local, OpLocalRefs)
        """Whether the local references are fed from the deployed model after each invoke
        (qdebug's own, ``local_ref``), not from the sample (the numeric-verify model)."""
        self._checked = local is None or self.fed
        self.input_quant = [
            (t, int8.tensors[t].qp)
            for t in (quantized_input(int8, i) for i in int8.input_indices)
        ]
        """Per deployed-model input (in its order): the integer tensor carrying it, and its
        quantization (None: not quantized)."""
        self.from_verify: dict[int, int] = {}
        """Deployed tensor → the verify model's tensor holding the same integers (its quantized
        path), filled once the verify model's rows are checked."""
        self.verify_mode: bool | None = None if local is not None and not self.fed else False
        """Whether the INT8 values are read from the verify model, so that the instrumented
        INT8 interpreter need not run: decided on the first batch, where both run and must
        agree bit for bit (None: not decided yet)."""
        self.verify_outputs: dict[int, int] = {}
        """Deployed graph output → the verify model's graph output holding the same values
        (float outputs, which its quantized tensors do not cover); filled with ``from_verify``."""
        self._pool: ThreadPoolExecutor | None = None
        """The thread running the twin and the plain model beside the quantized side."""
        self.batches = 0
        """Batches run so far (the first one checks every sample against the plain model)."""
        self.fake_quant = (fake_quant_params(twin, table)
                           if local is not None and not self.fed else {})
        """Op rows whose local reference is fake-quantized (a QAT model's twin)."""

    def close(self) -> None:
        """Stop the reference thread (``run`` starts it again if called)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _as_quantized(self, inputs: list[np.ndarray], by_numpy: bool) -> list[np.ndarray]:
        """The inputs as the deployed model quantized them, dequantized again: from its own
        QUANTIZE outputs (after ``int8`` ran on them), or, ``by_numpy``, quantized here as
        LiteRT does. The verify model's float copy of an op fed by a graph input reads the
        input itself; given x̂ it computes f(x̂) like every other op, and its quantized path
        gets exactly the deployed model's integers."""
        out = list(inputs)
        for pos, (tensor, qp) in enumerate(self.input_quant):
            if qp is not None and np.asarray(inputs[pos]).dtype.kind == "f":
                q = (quantize_like_litert(inputs[pos], qp, self.int8.tensors[tensor].dtype)
                     if by_numpy else self.int8.get(tensor))
                out[pos] = dequantize(q, qp).reshape(np.shape(inputs[pos]))
        return out

    def _compare_kernels(self, inputs: list[np.ndarray], floats: list[np.ndarray]) -> None:
        """Run the deployment kernels on a sample; measure their outputs against the float
        model's (``floats``, per output position) and the reference kernels' (the plain model,
        which has just run it)."""
        assert self.deploy is not None
        self.deploy.invoke(inputs)
        outs = self.plain.output_indices
        self.kernels.add(
            floats,
            [self.deploy.get(t) for t in self.deploy.output_indices],
            [self.plain.get(t) for t in outs],
            [self.plain.tensors[t].qp for t in outs],
        )

    def _map_verify(self) -> None:
        """Pair deployed tensors with the verify model's (after its rows were checked)."""
        assert self.local is not None
        verify = self.local.model
        for row, v in self.local.quant_tensor.items():
            self.from_verify[self.table.rows[row].tensor_index] = v
        for pos, i in enumerate(self.int8.input_indices):
            mine, theirs = quantized_input(self.int8, i), quantized_input(
                verify, verify.input_indices[pos])
            if mine != i and theirs != verify.input_indices[pos]:
                self.from_verify[mine] = theirs
        if len(verify.output_indices) == len(self.int8.output_indices):
            # A float graph output (after the deployed model's DEQUANTIZE): the verify model's
            # own, computed by the same kernel; kept where the first sample shows it equal.
            for mine, theirs in zip(self.int8.output_indices, verify.output_indices,
                                    strict=True):
                if mine not in self.from_verify and np.array_equal(
                    self.int8.view(mine), verify.view(theirs)
                ):
                    self.verify_outputs[mine] = theirs

    def _from_verify(self, tensor: int) -> np.ndarray:
        """The deployed model's integers of ``tensor``, in the verify model's memory."""
        assert self.local is not None
        return self.local.model.view(self.from_verify[tensor])

    def _deployed_output(self, tensor: int, from_verify: bool) -> np.ndarray:
        """Graph output ``tensor`` of the deployed model, read from where its integers are."""
        if not from_verify:
            return self.int8.get(tensor)
        if tensor in self.from_verify:
            return self._from_verify(tensor)
        assert self.local is not None
        if tensor in self.verify_outputs:
            return self.local.model.view(self.verify_outputs[tensor])
        op = self.int8.producer[tensor]  # a DEQUANTIZE of integers the verify model holds
        return dequantize(self._from_verify(op.inputs[0]), self.int8.tensors[op.inputs[0]].qp)

    def _numpy_agrees(self, inputs: list[np.ndarray]) -> bool:
        """Whether ``quantize_like_litert`` gives the deployed model's QUANTIZE output here."""
        for pos, (tensor, qp) in enumerate(self.input_quant):
            if qp is not None and np.asarray(inputs[pos]).dtype.kind == "f":
                mine = quantize_like_litert(inputs[pos], qp, self.int8.tensors[tensor].dtype)
                if not np.array_equal(mine.reshape(-1), self.int8.get(tensor).reshape(-1)):
                    return False
        return True

    def run(
        self,
        batch: Sequence[list[np.ndarray]],
        int8_tensors: set[int],
        twin_tensors: set[int],
        out_tensors: list[int],
    ) -> BatchValues:
        """Invoke all models on each sample of ``batch`` and stack the wanted tensors.

        The quantized side (the instrumented INT8 model or the verify model) runs in this
        thread while the float twin and the plain deployed model run in another: they share
        no interpreter, and LiteRT releases the GIL while it computes.
        """
        if self._pool is None:  # one thread for the whole run: its memory is reused
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="qdebug-reference")
        checked = self._checked_samples(len(batch))
        self.batches += 1
        reference = self._pool.submit(self._run_reference, batch, twin_tensors, checked)
        got, deployed = self._run_quantized(batch, int8_tensors, out_tensors)
        got.twin, plain = reference.result()
        got.checked = len(checked)
        for pos in range(len(self.int8.output_indices)):
            seen = deployed[pos].astype(np.float64)
            clean = plain[pos].astype(np.float64)
            for row, i in enumerate(checked):
                if not np.array_equal(seen[i], clean[row]):
                    got.mismatched += 1
                    got.max_diff = max(got.max_diff, float(np.max(np.abs(seen[i] - clean[row]))))
        return got

    def _checked_samples(self, n: int) -> list[int]:
        """The samples of the next batch the plain model also runs, to check the deployed
        outputs read from the instrumented side: all of them, except once the verify model
        stands in for the INT8 interpreter (its quantized path checked bit for bit against it
        on every tensor of the first batch), where one sample per batch keeps the check
        going at a sixteenth of its cost (the plain INT8 run was a quarter of the interpreters'
        time on EfficientNetB0). ``--xnnpack`` compares every sample with the plain model."""
        if self.verify_mode is not True or self.deploy is not None or self.batches == 0:
            return list(range(n))
        return [self.batches % n]

    def _run_reference(
        self, batch: Sequence[list[np.ndarray]], twin_tensors: set[int], checked: list[int]
    ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """The twin's wanted tensors of each sample and the plain model's outputs (per output
        position) of the ``checked`` ones, in that order; the deployment kernels compared with
        the plain model's, when asked for."""
        per_twin = _Reads(len(batch), [(t, self.twin.reader(t)) for t in twin_tensors])
        plain = _Rows(len(checked))
        rows = {i: row for row, i in enumerate(checked)}
        for i, sample in enumerate(batch):
            self.twin.invoke([sample[p] for p in self.twin_order])
            per_twin.take(i)
            if i not in rows:
                continue
            inputs = [sample[p] for p in self.order]
            self.plain.invoke(inputs)
            for pos, t in enumerate(self.plain.output_indices):
                plain.put(pos, rows[i], self.plain.view(t))
            if self.deploy is not None:
                self._compare_kernels(inputs, [np.array(self.twin.view(t))
                                               for t in self.twin.output_indices])
        return per_twin.arrays, plain.arrays

    def _run_quantized(
        self, batch: Sequence[list[np.ndarray]], int8_tensors: set[int], out_tensors: list[int]
    ) -> tuple[BatchValues, dict[int, np.ndarray]]:
        """The INT8 values (from the instrumented model, or from the verify model once it is
        trusted), each op's f(x̂), and the deployed outputs (per output position)."""
        got = BatchValues()
        n = len(batch)
        per_faked, per_out, deployed = _Rows(n), _Rows(n), _Rows(n)
        wanted = set(int8_tensors) | set(out_tensors)
        from_verify = self.verify_mode is True and wanted <= set(self.from_verify)
        per_int8 = _Reads(n, [
            (t, self.local.model.reader(self.from_verify[t]) if from_verify and self.local
             else self.int8.reader(t)) for t in int8_tensors])
        per_local = _Reads(n, [] if self.local is None else [
            (row, self.local.model.reader(t)) for row, t in self.local.float_tensor.items()
            if row not in self.fake_quant])
        agree = True
        for i, sample in enumerate(batch):
            inputs = [sample[p] for p in self.order]
            if not from_verify:
                self.int8.invoke(inputs)
            if self.local is not None:
                if not from_verify:
                    agree = agree and self._numpy_agrees(inputs)
                if isinstance(self.local, OpLocalRefs):
                    self.local.feed(self.int8)
                else:
                    self.local.model.invoke(self._as_quantized(inputs, by_numpy=from_verify))
                if not self._checked:
                    self.local.check(self.int8, self.table)
                    self._checked = True
                    self._map_verify()
                per_local.take(i)
                for row, fq in self.fake_quant.items():  # no name may keep the view
                    t = self.local.float_tensor.get(row)
                    if t is not None:
                        per_faked.put(row, i, _one(fake_quantize(self.local.model.view(t), fq)))
                if not from_verify:
                    agree = agree and all(
                        np.array_equal(self.int8.view(t), self.local.model.view(v))
                        for t, v in self.from_verify.items() if t in wanted
                    ) and all(
                        np.array_equal(self.int8.view(t), self.local.model.view(v))
                        for t, v in self.verify_outputs.items()
                    )
            value = self._from_verify if from_verify else self.int8.view
            per_int8.take(i)
            for j, t in enumerate(out_tensors):
                per_out.put(j, i, value(t))
            for pos, t in enumerate(self.int8.output_indices):
                deployed.put(pos, i, self._deployed_output(t, from_verify))
        if self.verify_mode is None and self.local is not None:
            self.verify_mode = agree
        local = {**per_local.arrays, **per_faked.arrays}
        got.int8 = per_int8.arrays
        got.local = {row: local[row] for row in (self.local.float_tensor if self.local else ())
                     if row in local}
        got.outputs = [per_out.arrays[j] for j in range(len(out_tensors))]
        return got, deployed.arrays
