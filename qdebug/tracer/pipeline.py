"""``qdebug trace``: prepare the inputs and data, convert, match layers to ops, then the
per-sample loop (``trace_loop``) and the write; each phase returns a frozen record."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from qdebug.analysis.culprits import find_culprits
from qdebug.analysis.segments import build_segments
from qdebug.analysis.worst_samples import input_cap
from qdebug.errors import QdebugError, TfliteModelError
from qdebug.progress import Phases
from qdebug.shards.slicing import shard_source
from qdebug.store.schema import LayerRecord
from qdebug.store.writer import TraceWriter
from qdebug.tracer import convert as conv
from qdebug.tracer.aeq_route import aeq_converted
from qdebug.tracer.convert import MIN_CALIB_SAMPLES
from qdebug.tracer.data import InputSpec, load_data
from qdebug.tracer.graph import LayerGraph, Probe, has_graph
from qdebug.tracer.keep_float import layer_op_names
from qdebug.tracer.labels import (
    PredictionLog,
    label_range_warning,
    load_labels,
    prediction_log,
)
from qdebug.tracer.labels import check_count as check_labels_count
from qdebug.tracer.labels import resolve as resolve_labels
from qdebug.tracer.litert import LiteModel, kernel_notes
from qdebug.tracer.loading import TFLITE, LoadedModel, load_model, wrap_live_model
from qdebug.tracer.local_ref import build_op_local_refs
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
)
from qdebug.tracer.phase_records import Converted, Matched, Prepared, trace_attrs
from qdebug.tracer.segment_runner import SegmentRunner
from qdebug.tracer.sides import Sides, stored_sizes
from qdebug.tracer.tfenv import freeze_at_exit, frozen_heap, import_tf, small_pages
from qdebug.tracer.trace_loop import TracePlan, op_local_layers, trace_samples
from qdebug.tracer.verify import (
    LocalRefs,
    build_verify_model,
    pair_local_refs,
    strip_verify_ops,
)
from qdebug.tracer.weights import weight_stats
from qdebug.user_metrics import load_user_metrics


def _stack(batch: list[list[np.ndarray]], size: int) -> list[np.ndarray]:
    """Inputs of a batch, padded with its last sample to ``size`` so that every Keras call has
    the same shape (results then do not depend on how samples fall into batches)."""
    padded = batch + [batch[-1]] * (size - len(batch))
    return [np.stack([s[i] for s in padded]) for i in range(len(batch[0]))]


class Tracer:
    """One tracing run; ``run`` returns the trace's path.

    The run is a sequence of phases, each returning a frozen record: ``_prepare`` (inputs and
    data), ``_convert`` (the deployed model and its float twin), ``_match`` (layers and ops to
    tensors), then the loop (``trace_loop``) and ``_finish`` (what is written after it). The
    options are never changed: warnings found on the way are collected in ``notes``.
    """

    def __init__(self, loaded: LoadedModel, data: Any, options: TraceOptions) -> None:
        self.loaded = loaded
        self.data_spec = data
        self.opt = options
        self.phases = Phases(quiet=options.quiet)
        self._keras_values: dict[str, np.ndarray] | None = None

    def run(self) -> Path:
        """Trace and write; the trace appears under its final name only when complete."""
        freeze_at_exit()
        with self.phases, frozen_heap(), small_pages():
            return self._run()

    def _run(self) -> Path:
        opt = self.opt
        # before any work: a bad --metric or --output-metric fails fast
        custom = load_user_metrics(opt.metrics, opt.output_metrics)
        notes: list[str] = list(opt.warnings)
        prep = self._prepare()
        converted = self._convert(prep, notes)
        with self.phases.step("match layers" if prep.graph is not None else "map ops"):
            matched = self._match(prep, converted)
        deployed = self._deployed(prep, converted, matched, notes)
        budget = (opt.store_budget_mb if opt.store_budget_mb is not None
                  else max(0.0, AUTO_BUDGET_MB - len(converted.int8_bytes) / 2**20))
        first = prep.first[0] if prep.first else None
        sample_bytes = (sum(np.asarray(x).nbytes for x in first) if first is not None
                        else input_bytes(prep.specs))
        stored = self._stored_count(matched.records, matched.int8, matched.local is not None,
                                    prep.specs, first, budget, notes)
        sides = Sides(matched.int8, matched.plain, matched.twin, matched.table, matched.local,
                      prep.input_names, matched.deploy)
        preds = prediction_log(matched.outputs) if prep.labels is not None else None
        if prep.labels is not None and prep.data.known_length is not None:
            check_labels_count(prep.labels, prep.data.known_length, prep.first_sample)
        writer = TraceWriter(
            Path(opt.out) if opt.out else default_trace_path(self.loaded.name),
            attrs=trace_attrs(self.loaded, opt, prep, converted, matched, deployed, stored),
            layers=matched.records,
            outputs=matched.outputs,
            input_names=prep.input_names,
            tflite=converted.int8_bytes,
            float_islands=[
                {"op_index": op.index, "op_type": op.op_type,
                 "tensor_name": matched.int8.tensors[op.outputs[0]].name}
                for op in matched.int8.float_islands()
            ],
            store_samples=stored,
            ops=matched.table.rows,
            custom_metrics=custom.pooled,
            rank_culprits=find_culprits,
        )
        with writer:
            plan = TracePlan(sides, matched.records, matched.outputs, matched.out_index,
                             matched.runner, prep.graph is None, matched.op_local, custom)
            loop = trace_samples(
                prep.data, plan, writer, first_sample=prep.first_sample,
                batch_size=opt.batch_size, phases=self.phases, preds=preds,
            )
            with self.phases.step("write"):
                truth = self._finish(writer, loop, prep, matched, preds, notes,
                                     input_cap(sample_bytes, budget))
                kernels = sides.kernels.attrs(
                    matched.outputs, matched.out_index, truth,
                    preds.output if preds is not None else None,
                ) if matched.deploy is not None else {}
                return writer.commit(
                    instrumentation_mismatched_samples=loop.mismatched,
                    instrumentation_checked_samples=loop.checked,
                    instrumentation_max_abs_diff=loop.max_diff,
                    **kernels,
                    segments=len(matched.runner.segments) if matched.runner else 0,
                    warnings=list(dict.fromkeys(prep.data.warnings + prep.calib.warnings
                                                + notes)),
                )

    # -- phases -----------------------------------------------------------------------------------

    def _prepare(self) -> Prepared:
        """The model's inputs, the data, the calibration data, the labels and the shard."""
        opt = self.opt
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
            labels = load_labels(opt.labels) if opt.labels is not None else None
        return Prepared(graph, conv_model, specs, float_bytes,
                        shard.source if shard is not None else data, calib, first, shard, labels)

    def _convert(self, prep: Prepared, notes: list[str]) -> Converted:
        """The deployed INT8 model (converted here, or given with ``--tflite``) and its twin."""
        opt = self.opt
        options = conv.ConversionOptions(
            calib_samples=opt.calib_samples, int8_io=opt.int8_io,
            keep_float=tuple(opt.keep_float), scheme=opt.scheme,
        )
        if opt.tflite is not None:
            with self.phases.step("read .tflite"):
                try:
                    int8_bytes = Path(opt.tflite).read_bytes()
                except OSError as exc:
                    raise TfliteModelError(f"{opt.tflite}: cannot read ({exc.strerror})") from exc
            with self.phases.step("convert float twin"):
                twin_bytes = prep.float_bytes or conv.convert_float(prep.conv_model,
                                                                    prep.layer_names)
            return Converted(int8_bytes, twin_bytes, options)
        if opt.quantizer == "aeq" or prep.conv_model is None:
            return aeq_converted(prep, opt, self.phases, options)
        data_errors: list[QdebugError] = []

        def representative() -> Iterator[Any]:
            try:
                for sample in prep.calib:
                    if len(sample) == 1:
                        yield [sample[0][None]]
                    else:  # by signature name: the graph's input order need not be Keras order
                        yield {n: x[None] for n, x in zip(prep.input_names, sample, strict=True)}
            except QdebugError as exc:  # the converter would bury it in its own error
                data_errors.append(exc)
                raise

        with self.phases.step("convert to INT8"):
            try:
                made = conv.convert_int8_and_twin(
                    prep.conv_model, representative, options, prep.layer_names,
                    self._keep_float_ops(prep, notes),
                )
            except QdebugError:
                if data_errors:
                    raise data_errors[0] from None
                raise
        return Converted(made.int8, made.twin, options, keep_float_ops=made.keep_float_ops,
                         keras_export=made.keras_export, calibration=made.calibration)

    def _match(self, prep: Prepared, converted: Converted) -> Matched:
        """Interpreters, the op table, local references, and layers (or ops) to tensors."""
        # Per-op values come from the builtin reference kernels: a delegate (XNNPACK) runs
        # whole subgraphs and hides their tensors. With --xnnpack the deployment kernels run
        # beside them and their outputs are compared with the reference kernels' outputs.
        int8 = LiteModel(converted.int8_bytes, preserve=True)
        plain = LiteModel(converted.int8_bytes, preserve=False)
        deploy = (LiteModel(converted.int8_bytes, preserve=False, xnnpack=True)
                  if self.opt.xnnpack else None)
        twin = LiteModel(converted.twin_bytes, preserve=True)
        check_inputs(int8, prep.specs)
        table = build_op_table(int8, twin, align_tensors(twin, int8))
        local = self._local_refs(converted.twin_bytes, int8, table, list(converted.keep_float_ops),
                                 twin, converted.aeq is not None)
        runner: SegmentRunner | None = None
        single: set[str] = set()
        if prep.graph is not None:
            keras_vals = self._probe_values(prep.graph, prep.first)
            twin_vals = twin_values(twin, prep.first, prep.input_names)
            records = match_layers(prep.graph, keras_vals, twin, twin_vals, int8)
            assign_layers(table, records, int8)
            outputs, out_index = output_records(
                prep.graph, records, int8, keras_vals, twin, twin_vals, prep.labels is not None
            )
            # A layer of one op has its local error from the numeric-verify model; the Keras
            # re-run is for layers of several ops.
            single = op_local_layers(records, local, table)
            segments = [s for s in build_segments(records) if s.output not in single]
            runner = SegmentRunner(prep.graph, segments) if segments else None
        else:
            records = op_layer_records(table, int8)
            for row in table.measured():
                table.rows[row].layer = table.rows[row].name
            outputs, out_index = op_outputs(records, int8, twin, prep.labels is not None)
        weights = weight_stats(records, twin, int8)
        return Matched(int8, plain, deploy, twin, table, local, records, outputs, out_index,
                       runner, weights, frozenset(single))

    def _deployed(
        self, prep: Prepared, converted: Converted, matched: Matched, notes: list[str]
    ) -> str:
        """What the deployed model is, in words; the warnings its form and calibration call
        for go to ``notes``."""
        if self.opt.tflite is None and prep.calib.taken < MIN_CALIB_SAMPLES:
            notes.append(
                f"calibrated on {prep.calib.taken} sample(s): ranges calibrated on so few miss "
                f"the tails of real inputs and clip them; calibrate on {MIN_CALIB_SAMPLES}–500 "
                "samples drawn like the deployment inputs (--calib)"
            )
        deployed = matched.int8.describe()
        # A float model has no QUANTIZE op; one converted from fake-quant layers keeps them.
        if (any(op.op_type == "QUANTIZE" for op in matched.twin.ops)
                or conv.is_quantized(converted.twin_bytes)):
            deployed += ", from quantization-aware training (fake-quant ranges)"
        notes.extend(kernel_notes(matched.int8, matched.twin))  # custom ops run on XNNPACK
        return deployed

    def _finish(
        self, writer: TraceWriter, loop: Any, prep: Prepared, matched: Matched,
        preds: PredictionLog | None, notes: list[str], worst_input_cap: int,
    ) -> np.ndarray | None:
        """What is written after the loop: labels, the analysis, each layer's worst samples;
        the warnings the loop's results call for go to ``notes``. Returns the labels."""
        data, outputs = prep.data, matched.outputs
        truth = None
        if prep.labels is not None and preds is not None:
            pred_f, pred_q = preds.arrays()
            truth = resolve_labels(prep.labels, len(pred_f), data.pair_labels, prep.first_sample)
            writer.write_labels(truth, pred_f, pred_q, outputs[preds.output].name,
                                prep.labels.description)
            outside = label_range_warning(truth, preds.classes, prep.labels.description)
            if outside:
                notes.append(outside)
        if outputs and loop.first_output is not None and not loop.output_varies \
                and loop.first_output.size > 1 and data.taken > 1:
            notes.append(
                f"the float model gives the same output {outputs[0].name!r} for every "
                f"one of the {data.taken} samples (an untrained model, or one that "
                "ignores its input): agreement between float and INT8 says little here"
            )
        measurer = loop.measurer
        writer.write_analysis(measurer.analysis(), matched.weights)
        kept = set(range(prep.first_sample,
                         prep.first_sample + min(writer.store_samples, data.taken or 0)))
        writer.write_layer_worst(measurer.layer_worst.finish(
            data, worst_input_cap, kept, prep.first_sample))
        return truth

    def _stored_count(
        self, records: list[LayerRecord], int8: LiteModel, local: bool, specs: list[InputSpec],
        sample: list[np.ndarray] | None, budget: float, notes: list[str],
    ) -> int:
        """``--store-samples``, or as many samples (at most 16) as ``budget`` (MB) allows:
        per sample, its inputs and every measured row's float32 reference, raw tensor and
        f(x̂), sized from the real tensors of ``sample`` (the first; dynamic shapes are known
        only after an invoke)."""
        if self.opt.store_samples is not None:
            return self.opt.store_samples
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
        count = min(16, int(budget * 2**20 // max(per, 1)))
        if count < 16:
            notes.append(
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
            given = LiteModel(float_bytes, preserve=False)
            if self.opt.tflite is None and given.quantized_activations():
                raise QdebugError(
                    f"{self.loaded.source} is a quantized .tflite ({given.describe()}): qdebug "
                    "measures a quantized model against the float one it was made from",
                    f"give the float model as MODEL and this file as --tflite "
                    f"{self.loaded.source}",
                )
        else:
            model = (
                wrap_subclassed(self.loaded.model, self.data_spec)
                if self.loaded.is_keras
                else self.loaded.model
            )
            with self.phases.step("convert to float"):
                float_bytes = conv.convert_float(model, [])
        return model, lite_input_specs(LiteModel(float_bytes, preserve=False)), float_bytes

    def _keep_float_ops(self, prep: Prepared, notes: list[str]) -> Callable[[bytes], list[str]]:
        """For ``--keep-float``: every op of each named layer, found on the calibrated model."""
        graph = prep.graph

        def ops_of(calibrated: bytes) -> list[str]:
            if graph is None:  # a model traced as ops: no layer to keep
                return layer_op_names(calibrated, None, {}, {}, self.opt.keep_float, notes)
            twin = LiteModel(calibrated, preserve=True)
            keras_vals = self._probe_values(graph, prep.first)
            twin_vals = twin_values(twin, prep.first, prep.input_names)
            return layer_op_names(
                calibrated, graph, keras_vals, twin_vals, self.opt.keep_float, notes
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
        twin: LiteModel,
        aeq: bool = False,
    ) -> LocalRefs | None:
        """Each op's f(x̂): from the converter's numeric-verify model where the twin is the
        calibrated model the deployed one was quantized from; else (a given ``--tflite``,
        int16x8, AEQ's, or where the converter cannot build it) from qdebug's own local reference
        model, the float ops fed the deployed model's dequantized inputs (``local_ref``); none
        where the float model is itself quantized."""
        opt = self.opt
        if conv.is_quantized(twin_bytes):
            return None
        if opt.tflite is not None or opt.scheme != "int8" or aeq:
            return build_op_local_refs(twin_bytes, twin, int8, table)
        verify_bytes = build_verify_model(twin_bytes, denylisted or None)
        if verify_bytes is None:
            return build_op_local_refs(twin_bytes, twin, int8, table)
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
