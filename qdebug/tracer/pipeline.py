"""``qdebug trace``: load, convert, match layers to ops, then the per-sample loop
(``trace_loop``) and the write."""

from __future__ import annotations

import datetime as _dt
import hashlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from qdebug.analysis.culprits import find_culprits
from qdebug.analysis.segments import build_segments
from qdebug.errors import QdebugError, TfliteModelError
from qdebug.store.schema import VIEW_LAYERS, VIEW_OPS, LayerRecord
from qdebug.store.sharding import ATTR_STORE, ATTR_TFLITE_SHA256
from qdebug.store.writer import TraceWriter
from qdebug.tracer import convert as conv
from qdebug.tracer.convert import MIN_CALIB_SAMPLES
from qdebug.tracer.data import InputSpec, load_data
from qdebug.tracer.graph import LayerGraph, Probe, has_graph
from qdebug.tracer.keep_float import layer_op_names
from qdebug.tracer.labels import PredictionLog, label_range_warning, load_labels, prediction_log
from qdebug.tracer.labels import check_count as check_labels_count
from qdebug.tracer.labels import resolve as resolve_labels
from qdebug.tracer.layer_worst import input_cap
from qdebug.tracer.litert import LiteModel
from qdebug.tracer.loading import TFLITE, LoadedModel, load_model, wrap_live_model
from qdebug.tracer.matching import align_tensors, match_layers
from qdebug.tracer.model_io import (
    check_inputs,
    input_bytes,
    input_specs,
    output_records,
    twin_values,
)
from qdebug.tracer.op_view import lite_input_specs, op_outputs, wrap_subclassed
from qdebug.tracer.oprows import OpTable, assign_layers, build_op_table, op_layer_records
from qdebug.tracer.options import (
    AUTO_BUDGET_MB,
    TraceOptions,
    default_trace_path,
    software_versions,
)
from qdebug.tracer.progress import Phases
from qdebug.tracer.segment_runner import SegmentRunner
from qdebug.tracer.shard_data import shard_source
from qdebug.tracer.sides import Sides, stored_sizes
from qdebug.tracer.tfenv import import_tf
from qdebug.tracer.trace_loop import TracePlan, op_local_layers, trace_samples
from qdebug.tracer.verify import (
    LocalRefs,
    build_verify_model,
    pair_local_refs,
    strip_verify_ops,
)
from qdebug.tracer.weights import weight_stats
from qdebug.user_metrics import load_metrics


def _stack(batch: list[list[np.ndarray]], size: int) -> list[np.ndarray]:
    """Inputs of a batch, padded with its last sample to ``size`` so that every Keras call has
    the same shape (results then do not depend on how samples fall into batches)."""
    padded = batch + [batch[-1]] * (size - len(batch))
    return [np.stack([s[i] for s in padded]) for i in range(len(batch[0]))]


class Tracer:
    """One tracing run; ``run`` returns the trace's path."""

    def __init__(self, loaded: LoadedModel, data: Any, options: TraceOptions) -> None:
        self.loaded = loaded
        self.data_spec = data
        self.opt = options
        self.phases = Phases(quiet=options.quiet)
        self._keras_values: dict[str, np.ndarray] | None = None
        self.first_sample = 0
        """Global position of the first traced sample (a shard's slice start)."""
        self._preds: PredictionLog | None = None

    def run(self) -> Path:
        """Trace and write; the trace appears under its final name only when complete."""
        with self.phases:
            return self._run()

    def _run(self) -> Path:
        opt = self.opt
        custom = load_metrics(opt.metrics)  # before any work: a bad --metric fails fast
        with self.phases.step("load data"):
            graph = self._layer_graph()
            conv_model, specs, float_bytes = self._source(graph)
            data = load_data(self.data_spec, specs, limit=opt.samples, image_range=opt.image_range)
            calib = load_data(
                opt.calib if opt.calib is not None else self.data_spec,
                specs,
                limit=opt.calib_samples,
                image_range=opt.image_range,
            )
            first = [s for _, s in zip(range(max(opt.verify_samples, 1)), data, strict=False)]
            # A shard matches layers on the data's first samples, as a whole run does.
            shard = shard_source(data, opt.shard, opt.batch_size, opt.store_samples or 0) if (
                opt.shard is not None) else None
            if shard is not None:
                data, self.first_sample = shard.source, shard.info.start
            labels = load_labels(opt.labels) if opt.labels is not None else None
        names = [n.name for n in graph.nodes] if graph is not None else []
        options = conv.ConversionOptions(
            calib_samples=opt.calib_samples, int8_io=opt.int8_io,
            keep_float=tuple(opt.keep_float), scheme=opt.scheme,
        )

        input_names = [s.name for s in specs]

        data_errors: list[QdebugError] = []

        def representative() -> Iterator[Any]:
            try:
                for sample in calib:
                    if len(sample) == 1:
                        yield [sample[0][None]]
                    else:  # by signature name: the graph's input order need not be Keras order
                        yield {n: x[None] for n, x in zip(input_names, sample, strict=True)}
            except QdebugError as exc:  # the converter would bury it in its own error
                data_errors.append(exc)
                raise

        if opt.tflite is not None:
            with self.phases.step("read .tflite"):
                try:
                    int8_bytes = Path(opt.tflite).read_bytes()
                except OSError as exc:
                    raise TfliteModelError(f"{opt.tflite}: cannot read ({exc.strerror})") from exc
            with self.phases.step("convert float twin"):
                twin_bytes = float_bytes or conv.convert_float(conv_model, names)
        elif conv_model is None:
            raise QdebugError(
                f"{self.loaded.source} is a .tflite model: qdebug compares it with a quantized "
                "one, it cannot convert it",
                "give the quantized model too: --tflite INT8.tflite",
            )
        else:
            with self.phases.step("convert to INT8"):
                try:
                    int8_bytes, twin_bytes = conv.convert_int8_and_twin(
                        conv_model, representative, options, names,
                        self._keep_float_ops(graph, first, specs) if graph else None,
                    )
                except QdebugError:
                    if data_errors:
                        raise data_errors[0] from None
                    raise
        with self.phases.step("match layers" if graph is not None else "map ops"):
            # Per-op values come from the builtin reference kernels: a delegate (XNNPACK) runs
            # whole subgraphs and hides their tensors. With --xnnpack the deployment kernels run
            # beside them and their outputs are compared with the reference kernels' outputs.
            int8 = LiteModel(int8_bytes, preserve=True)
            plain = LiteModel(int8_bytes, preserve=False)
            deploy = LiteModel(int8_bytes, preserve=False, xnnpack=True) if opt.xnnpack else None
            twin = LiteModel(twin_bytes, preserve=True)
            check_inputs(int8, specs)
            table = build_op_table(int8, twin, align_tensors(twin, int8))
            local = self._local_refs(twin_bytes, int8, table, options.denylisted)
            runner: SegmentRunner | None = None
            if graph is not None:
                keras_vals = self._probe_values(graph, first)
                twin_vals = twin_values(twin, first, [s.name for s in specs])
                records = match_layers(graph, keras_vals, twin, twin_vals, int8)
                assign_layers(table, records, int8)
                outputs, out_index = output_records(
                    graph, records, int8, keras_vals, twin, twin_vals
                )
                # A layer of one op has its local error from the numeric-verify model; the
                # Keras re-run is for layers of several ops.
                single = op_local_layers(records, local, table)
                segments = [s for s in build_segments(records) if s.output not in single]
                runner = SegmentRunner(graph, segments) if segments else None
            else:
                records = op_layer_records(table, int8)
                for row in table.measured():
                    table.rows[row].layer = table.rows[row].name
                outputs, out_index = op_outputs(records, int8, twin)
            weights = weight_stats(records, twin, int8)
        if opt.tflite is None and calib.taken < MIN_CALIB_SAMPLES:
            opt.warnings.append(
                f"calibrated on {calib.taken} sample(s): ranges calibrated on so few miss the "
                f"tails of real inputs and clip them; calibrate on {MIN_CALIB_SAMPLES}–500 "
                "samples drawn like the deployment inputs (--calib)"
            )
        deployed = int8.describe()
        # A float model has no QUANTIZE op; one converted from fake-quant layers keeps them.
        if any(op.op_type == "QUANTIZE" for op in twin.ops) or conv.is_quantized(twin_bytes):
            deployed += ", from quantization-aware training (fake-quant ranges)"
        if not int8.quantized_activations():
            opt.warnings.append(f"the deployed model is {deployed}")
        islands = [
            {
                "op_index": op.index,
                "op_type": op.op_type,
                "tensor_name": int8.tensors[op.outputs[0]].name,
            }
            for op in int8.float_islands()
        ]
        path = Path(opt.out) if opt.out else default_trace_path(self.loaded.name)
        attrs: dict[str, Any] = {
            **software_versions(self.loaded.flavour),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "command_line": opt.command_line or " ".join(sys.argv),
            "model_name": self.loaded.name,
            "model_source": self.loaded.source,
            "model_sha256": self.loaded.sha256,
            "keras_flavour": self.loaded.flavour,
            "data_source": data.description,
            "calib_source": (
                calib.description if opt.tflite is None
                else f"none: {Path(str(opt.tflite)).name} was given, calibrated already"
            ),
            "tflite_source": str(opt.tflite) if opt.tflite else "converted",
            "converter": (
                {**options.as_dict(), "calib_samples": calib.taken} if opt.tflite is None else {}
            ),
            "kernels": (
                "xnnpack (deployment) outputs compared with the builtin reference kernels, "
                "which give every op's values"
                if deploy is not None
                else "builtin (deterministic)"
            ),
            "delegated_ops": deploy.delegated_ops() if deploy is not None else [],
            "input_names": [s.name for s in specs],
            "view": VIEW_LAYERS if graph is not None else VIEW_OPS,
            "deployed": deployed,
            "reference": "float twin (the converter's float model, op by op)",
            "op_local_error": "numeric-verify model" if local else "not available",
        }
        if opt.store_budget_mb is None:
            opt.store_budget_mb = max(0.0, AUTO_BUDGET_MB - len(int8_bytes) / 2**20)
        sample_bytes = (sum(np.asarray(x).nbytes for x in first[0]) if first
                        else input_bytes(specs))
        stored = self._stored_count(records, int8, local is not None, specs,
                                    first[0] if first else None)
        if shard is not None:
            attrs.update(shard.info.attrs())
            attrs[ATTR_STORE] = stored  # what this run kept: the merge's budget
            attrs[ATTR_TFLITE_SHA256] = hashlib.sha256(int8_bytes).hexdigest()
        sides = Sides(int8, plain, twin, table, local, [s.name for s in specs], deploy)
        if labels is not None:
            self._preds = prediction_log(outputs)
            if data.known_length is not None:
                check_labels_count(labels, data.known_length, self.first_sample)
        writer = TraceWriter(
            path,
            attrs=attrs,
            layers=records,
            outputs=outputs,
            input_names=[s.name for s in specs],
            tflite=int8_bytes,
            float_islands=islands,
            store_samples=stored,
            ops=table.rows,
            custom_metrics=custom,
            rank_culprits=find_culprits,
        )
        with writer:
            plan = TracePlan(sides, records, outputs, out_index, runner, graph is None)
            loop = trace_samples(
                data, plan, writer, first_sample=self.first_sample,
                batch_size=opt.batch_size, phases=self.phases, preds=self._preds,
            )
            measurer = loop.measurer
            with self.phases.step("write"):
                if labels is not None and self._preds is not None:
                    pred_f, pred_q = self._preds.arrays()
                    truth = resolve_labels(labels, len(pred_f), data.pair_labels,
                                           self.first_sample)
                    writer.write_labels(
                        truth, pred_f, pred_q,
                        outputs[self._preds.output].name, labels.description,
                    )
                    outside = label_range_warning(truth, self._preds.classes,
                                                  labels.description)
                    if outside:
                        opt.warnings.append(outside)
                if outputs and loop.first_output is not None and not loop.output_varies \
                        and loop.first_output.size > 1 and data.taken > 1:
                    opt.warnings.append(
                        f"the float model gives the same output {outputs[0].name!r} for every "
                        f"one of the {data.taken} samples (an untrained model, or one that "
                        "ignores its input): agreement between float and INT8 says little here"
                    )
                writer.write_analysis(measurer.analysis(), weights)
                kept = set(range(self.first_sample,
                                 self.first_sample + min(writer.store_samples, data.taken or 0)))
                writer.write_layer_worst(measurer.layer_worst.finish(
                    data, input_cap(sample_bytes, opt.store_budget_mb or 0.0), kept,
                    self.first_sample))
                warnings = list(dict.fromkeys(data.warnings + calib.warnings + opt.warnings))
                kernels = (
                    {"kernel_mismatched_samples": sides.kernel_mismatched,
                     "kernel_max_abs_diff": sides.kernel_max_diff}
                    if deploy is not None
                    else {}
                )
                return writer.commit(
                    instrumentation_mismatched_samples=loop.mismatched,
                    instrumentation_max_abs_diff=loop.max_diff,
                    **kernels,
                    segments=len(runner.segments) if runner else 0,
                    warnings=warnings,
                )

    def _stored_count(
        self, records: list[LayerRecord], int8: LiteModel, local: bool, specs: list[InputSpec],
        sample: list[np.ndarray] | None,
    ) -> int:
        """``--store-samples``, or as many samples (at most 16) as the size budget allows:
        per sample, its inputs and every measured row's float32 reference, raw tensor and
        f(x̂), sized from the real tensors of ``sample`` (the first; dynamic shapes are known
        only after an invoke)."""
        opt = self.opt
        if opt.store_samples is not None:
            return opt.store_samples
        rows = [r.tensor_index for r in records if r.measured and r.tensor_index >= 0]
        real = (stored_sizes(int8, rows, sample, [s.name for s in specs])
                if sample is not None else None)
        per = 0
        for t in rows:
            info = int8.tensors[t]
            size = real[t] if real is not None else int(np.prod(info.shape[1:], dtype=np.int64))
            per += size * (4 + info.dtype.itemsize + (4 if local else 0))
        per += (sum(np.asarray(x).nbytes for x in sample) if sample is not None
                else input_bytes(specs))
        budget = opt.store_budget_mb or 0.0
        count = min(16, int(budget * 2**20 // max(per, 1)))
        if count < 16:
            opt.warnings.append(
                f"activations of {count} sample(s) stored ({per / 2**20:.1f} MB each, "
                f"--store-budget {budget:.1f} MB); give --store-samples K for more"
            )
        return count

    def _layer_graph(self) -> LayerGraph | None:
        """The Keras layer graph, or None for a model without one (op view)."""
        if not self.loaded.is_keras:
            return None
        if not has_graph(self.loaded.model):
            return None  # a subclassed model: its layers are Python code, not a graph
        return LayerGraph(self.loaded.model)

    def _source(self, graph: LayerGraph | None) -> tuple[Any, list[InputSpec], bytes | None]:
        """What the converter takes, the model's inputs, and the float ``.tflite`` when there
        is one already (a model without Keras layers is described by its float conversion)."""
        if graph is not None:
            return self.loaded.model, input_specs(graph), None
        if self.loaded.flavour == TFLITE:
            model, float_bytes = None, bytes(self.loaded.model)
        else:
            model = (
                wrap_subclassed(self.loaded.model, self.data_spec)
                if self.loaded.is_keras
                else self.loaded.model
            )
            with self.phases.step("convert to float"):
                float_bytes = conv.convert_float(model, [])
        return model, lite_input_specs(LiteModel(float_bytes, preserve=False)), float_bytes

    def _keep_float_ops(
        self, graph: LayerGraph, first: list[list[np.ndarray]], specs: list[InputSpec]
    ) -> Callable[[bytes], list[str]]:
        """For ``--keep-float``: every op of each named layer, found on the calibrated model."""

        def ops_of(calibrated: bytes) -> list[str]:
            twin = LiteModel(calibrated, preserve=True)
            keras_vals = self._probe_values(graph, first)
            twin_vals = twin_values(twin, first, [s.name for s in specs])
            return layer_op_names(
                calibrated, graph, keras_vals, twin_vals, self.opt.keep_float, self.opt.warnings
            )

        return ops_of

    def _probe_values(
        self, graph: LayerGraph, first: list[list[np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """Every layer's Keras output on the verification samples (computed once)."""
        if self._keras_values is None:
            probe = Probe(graph, self.loaded.flavour)
            self._keras_values = probe(_stack(first, len(first)))
        return self._keras_values

    def _local_refs(
        self,
        twin_bytes: bytes,
        int8: LiteModel,
        table: OpTable,
        denylisted: list[str],
    ) -> LocalRefs | None:
        """The numeric-verify model's f(x̂) for each op, where the twin is the calibrated model
        the deployed one was quantized from (not for a given ``--tflite``, int16x8 or QAT)."""
        opt = self.opt
        if opt.tflite is not None or opt.scheme != "int8" or conv.is_quantized(twin_bytes):
            return None
        verify_bytes = build_verify_model(twin_bytes, denylisted or None)
        if verify_bytes is None:
            return None
        stripped = strip_verify_ops(verify_bytes)
        if stripped is None:
            return pair_local_refs(LiteModel(verify_bytes, preserve=True), int8, table)
        return pair_local_refs(LiteModel(stripped[0], preserve=True), int8, table, stripped[1])

def trace_model(model: Any, data: Any, **options: Any) -> Path:
    """Trace a model (a live Keras object or a path/factory spec) on ``data``.

    Keyword arguments are the fields of ``TraceOptions``. Returns the trace's path.
    """
    import_tf()
    opt = TraceOptions(**options)
    loaded = (
        load_model(str(model), trust_code=opt.trust_model_code)
        if isinstance(model, str | Path)
        else wrap_live_model(model)
    )
    return Tracer(loaded, data, opt).run()


__all__ = ["TraceOptions", "Tracer", "default_trace_path", "trace_model"]
