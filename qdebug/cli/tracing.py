"""``qdebug trace`` and ``qdebug merge``: the commands that write traces."""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from qdebug.cli.app import cli, debug_option, print_result, say_err, write
from qdebug.cli.params import FiniteFloat
from qdebug.cli.paths import layer_list, precheck_file, precheck_path, read_head
from qdebug.errors import QdebugError


@cli.command()
@click.argument("model")
@click.option(
    "--data", "data", required=True, metavar="DATA",
    help="Samples: .npy (one input), .npz keyed by input name, a folder of images, or "
    "module:function / file.py:function returning an iterable or a tf.data.Dataset.",
)
@click.option("--calib", metavar="DATA", help="Calibration data (default: DATA). Same forms.")
@click.option("--tflite", type=click.Path(path_type=Path), metavar="INT8.tflite",
              help="Trace this deployed INT8 model instead of converting MODEL.")
@click.option("--out", "-o", type=click.Path(path_type=Path), metavar="PATH",
              help="Trace file (default: traces/<model>-<timestamp>.h5). An existing trace "
              "there is replaced once the new one is complete; any other file is refused.")
@click.option("--samples", "-n", type=click.IntRange(min=1), metavar="N",
              help="Trace the first N samples (default: all; at most 10000 from a data "
              "function whose length is unknown).")
@click.option("--store-samples", type=click.IntRange(min=0), default=None, metavar="K",
              help="Keep full activations and inputs of the first K samples (default: as many "
              "of the first 16 as fit in --store-budget).")
@click.option("--store-budget", "store_budget", type=FiniteFloat(min=0), default=None,
              metavar="MB",
              help="Size of the stored activations when --store-samples is not given (default: "
              "what is left of 20 MB after the model, so the trace can be attached to a bug "
              "report).")
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True,
              metavar="N", help="Samples of the calibration data used by the converter.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Samples per Keras call (memory grows with it, not with N).")
@click.option("--xnnpack", is_flag=True,
              help="Also run LiteRT's default delegates (XNNPACK, the deployment kernels) and "
              "compare their outputs with the builtin kernels, which give every op's values.")
@click.option("--int8-io", is_flag=True,
              help="Convert with int8 inputs and outputs (default: float, with QUANTIZE and "
              "DEQUANTIZE at the edges).")
@click.option("--image-range", type=click.Choice(["0-1", "0-255", "-1-1"]), default="0-1",
              show_default=True, help="Pixel range for a folder of images.")
@click.option("--trust-model-code", is_flag=True,
              help="Allow Lambda layers in a model file (runs code stored in the file).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="The summary printed at the end.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or summary.")
@click.option("--keep-float", "keep_float", metavar="LAYER[,LAYER...]", default="",
              help="Leave these Keras layers in float (selective quantization; recorded in the "
              "trace).")
@click.option("--scheme", type=click.Choice(["int8", "int16x8"]), default="int8",
              show_default=True,
              help="int16x8: 16-bit activations and 8-bit weights (diff against an int8 trace "
              "to see which layers recover with more bits).")
@click.option("--quantizer", type=click.Choice(["converter", "aeq"]), default=None,
              help="What quantizes MODEL: the TFLite converter (default for Keras models and "
              "SavedModels) or ai-edge-quantizer (aeq; always for a float .tflite given "
              "alone): the model is converted to a float .tflite, then quantized by AEQ.")
@click.option("--recipe", metavar="NAME|FILE.json",
              help="ai-edge-quantizer's recipe: int8 (default: static int8 weights and "
              "activations), int16 (16-bit activations), dynamic (dynamic range), weight-only, "
              "or a recipe JSON file (per-op entries; qdebug export writes the one used).")
@click.option("--shard", metavar="K/N",
              help="Trace only the K-th of N contiguous slices of DATA (whole batches; same "
              "conversion and calibration as a whole run). Merge the N traces with `qdebug "
              "merge`: a job array runs one shard per task.")
@click.option("--workers", default="1", show_default=True, metavar="N|auto",
              help="Run N shards in parallel local processes and merge them into one trace "
              "(auto: one per core this process may use; at most one per batch).")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="Run the shards as Ray tasks (pip install 'qdebug[ray]'): auto joins the "
              "running cluster, local starts one here, or ray://HOST:10001. --workers N sets "
              "the number of shards (auto: the cluster's CPUs).")
@click.option("--labels", metavar="LABELS",
              help="Class labels of DATA for task accuracy: labels.npy, file.npz[:key], or "
              "'data' for the (x, y) pairs a data function or tf.data dataset yields.")
@click.option("--metric", "metric", multiple=True, metavar="MODULE:FUNCTION",
              help="Also compute this metric of every layer, op and output (module:function, "
              "file.py:function, or the name of a 'qdebug.metrics' entry point; repeatable): "
              "fn(stats, scale) of the pooled statistics, or fn(float, quantized) -> float of "
              "one sample's tensors with fn.kind = 'per_sample', averaged over samples. Its "
              "values and definition are stored in the trace: docs/metrics.md.")
@click.option("--output-metric", "output_metric", multiple=True, metavar="MODULE:FUNCTION",
              help="Also compute fn(float_outputs, quantized_outputs) -> float over the "
              "model's outputs (IoU, task accuracy; same SPEC forms as --metric; repeatable): "
              "per sample and averaged, or once over all samples with fn.kind = 'whole_set'.")
@click.option("--profile", is_flag=True,
              help="Print where the time went, phase by phase (TensorFlow import, load, "
              "conversion, matching, the loop and its split, write) on stderr; with --format "
              "json also as 'timings'.")
@debug_option
def trace(
    model: str, data: str, calib: str | None, tflite: Path | None, out: Path | None,
    samples: int | None, store_samples: int | None, store_budget: float | None,
    calib_samples: int, batch_size: int,
    xnnpack: bool, int8_io: bool, image_range: str, trust_model_code: bool, fmt: str,
    quiet: bool, keep_float: str, scheme: str, quantizer: str | None, recipe: str | None,
    shard: str | None, workers: str, ray_address: str | None, labels: str | None,
    metric: tuple[str, ...], output_metric: tuple[str, ...], profile: bool,
) -> None:
    """Run MODEL in float Keras and INT8 LiteRT side by side and write a trace.

    MODEL is a Keras 3 .keras file, an .h5 of either Keras flavour, a SavedModel folder
    (tf_keras, a plain tf.saved_model.save of a tf.Module, or a Keras 3 model.export()), a
    float .tflite (quantized by ai-edge-quantizer with --recipe, or given with --tflite
    INT8.tflite: a pair from any quantizer), or a factory file.py:function /
    package.module:function returning a model (use one for custom layers and subclassed
    models). The model is converted to full-INT8 TFLite by the TFLite converter, or by
    ai-edge-quantizer with --quantizer aeq (calibrated on --calib, else DATA), unless --tflite
    gives the deployed model. Every op of the INT8 model is measured against the same op of
    the float twin; where the model has Keras layers, each is mapped to the tensor holding its
    output, verified, and measured as well.

    \b
    Examples:
      qdebug trace model.keras --data x.npy
      qdebug trace model.h5 --data val.npz --calib calib.npz --out traces/run1.h5
      qdebug trace model.keras --data x.npy --tflite deployed_int8.tflite
      qdebug trace float.tflite --data x.npy --recipe int16   # ai-edge-quantizer
      qdebug trace examples/digits_cnn.py:build --data examples/out/digits.npy
      qdebug trace model.keras --data val.npy --workers auto   # every core, one trace
      qdebug trace model.keras --data val.npy --shard 2/8 --out s2.h5   # one job of an array
    """
    _precheck_tflite(tflite)
    if out is not None:
        from qdebug.store.writer import check_target

        check_target(out)
    else:
        _check_default_folder()
    kept = layer_list(keep_float)
    if tflite is not None and (kept or scheme != "int8" or int8_io):
        raise QdebugError(
            "--keep-float, --scheme and --int8-io change the conversion, and --tflite skips it",
            "drop --tflite to convert MODEL with them",
        )
    precheck_path(model, "model", "give a .keras, .h5, SavedModel folder, or file.py:function")
    quantizer = _quantizer(model, tflite, quantizer, recipe, kept, scheme, int8_io)
    for spec in (data, calib):
        precheck_path(spec, "data", "give .npy, .npz, an image folder, or module:function")
    if labels != "data":
        precheck_path(labels, "labels", "give labels.npy, file.npz[:key], or 'data'")
    if labels is not None and labels != "data":
        from qdebug.tracer.labels import check_file_count, load_labels

        # labels that are no class ids, or too few for DATA: refused before TensorFlow loads
        got = load_labels(labels)
        if shard is None:
            check_file_count(got, data, samples)
    from qdebug.user_metrics import load_user_metrics

    user = load_user_metrics(metric, output_metric)  # a bad SPEC: refused before TensorFlow
    from qdebug.cli.sharding import run_sharded
    from qdebug.shards.slicing import parse_shard

    shard_spec = parse_shard(shard) if shard is not None else None
    sharded = run_sharded(click.get_current_context(), workers, ray_address, shard_spec, quiet)
    if sharded is not None:
        print_result(sharded, fmt, quiet)
        return
    from qdebug.store.outfile import claim
    from qdebug.tracer.tfenv import import_tf

    # Claimed before TensorFlow loads: a second run to the same --out is refused at once.
    with claim(out) if out is not None else contextlib.nullcontext():
        started = time.perf_counter()
        import_tf()
        before = {"TensorFlow import": time.perf_counter() - started}
        from qdebug.tracer.loading import load_model, require_convertible
        from qdebug.tracer.pipeline import TraceOptions

        started = time.perf_counter()
        loaded = load_model(model, trust_code=trust_model_code)
        require_convertible(loaded)
        before["load model"] = time.perf_counter() - started
        _trace_run(loaded, data, out, fmt, quiet, before if profile else None, TraceOptions(
            out=out, samples=samples, store_samples=store_samples, store_budget_mb=store_budget,
            calib=calib, calib_samples=calib_samples, batch_size=batch_size, tflite=tflite,
            xnnpack=xnnpack, int8_io=int8_io, image_range=image_range,
            trust_model_code=trust_model_code, quiet=quiet or fmt == "json", keep_float=kept,
            scheme=scheme, shard=shard_spec, labels=labels,
            metrics=(*user.pooled, *user.per_sample),
            quantizer=quantizer, recipe=recipe,
            output_metrics=user.outputs,
            command_line="qdebug " + " ".join(
                shlex.quote(a) for a in click.get_current_context().meta.get("qdebug.argv", [])
            ),
        ))


def _precheck_tflite(tflite: Path | None) -> None:
    """A --tflite that is missing or not a .tflite: refused before TensorFlow loads."""
    if tflite is None:
        return
    precheck_file(tflite, "--tflite", "give the deployed INT8 .tflite model")
    if read_head(tflite)[4:8] != b"TFL3":
        raise QdebugError(
            f"{tflite} is not a .tflite model (no TFL3 identifier)",
            "give the deployed INT8 .tflite model",
        )


def _quantizer(model: str, tflite: Path | None, quantizer: str | None, recipe: str | None,
               kept: Sequence[str], scheme: str, int8_io: bool) -> str:
    """What quantizes MODEL (``converter`` or ``aeq``), checked before TensorFlow loads: a
    float .tflite alone goes to ai-edge-quantizer, whose options are refused with --tflite
    and the converter's with it."""
    path = Path(model)
    alone = tflite is None and path.suffix.lower() == ".tflite" and path.is_file()
    if tflite is not None and (quantizer == "aeq" or recipe is not None):
        raise QdebugError("--quantizer aeq and --recipe quantize MODEL, and --tflite skips that",
                          "drop --tflite to quantize MODEL with ai-edge-quantizer")
    if alone and quantizer == "converter":
        raise QdebugError(f"{model} is a float .tflite: the TFLite converter takes Keras "
                          "models and SavedModels", "drop --quantizer converter (a float .tflite"
                          " is quantized by ai-edge-quantizer), or give the pair with --tflite")
    chosen = "aeq" if alone or quantizer == "aeq" else "converter"
    if chosen == "converter":
        if recipe is not None:
            raise QdebugError("--recipe is ai-edge-quantizer's recipe",
                              "add --quantizer aeq to quantize MODEL with it")
        return chosen
    if kept or scheme != "int8" or int8_io:
        raise QdebugError(
            "--keep-float, --scheme and --int8-io are the TFLite converter's options, and "
            "ai-edge-quantizer quantizes this model",
            "give an ai-edge-quantizer --recipe instead (int16: 16-bit activations; a recipe "
            "JSON to choose per op)",
        )
    from qdebug.tracer.aeq import resolve_recipe

    resolve_recipe(recipe)  # AEQ installed, the recipe known: refused before TensorFlow loads
    return chosen


def _check_default_folder() -> None:
    """Without --out a trace goes to ``traces/``: a file or a dangling link of that name is
    refused before TensorFlow loads, not after the conversion."""
    from qdebug.tracer.options import default_trace_path

    folder = default_trace_path("model").parent
    if os.path.lexists(folder) and not folder.is_dir():
        raise QdebugError(
            f"cannot write the trace in {folder}/: {folder} is not a folder",
            f"give --out PATH, or move {folder} away",
        )


def _trace_run(loaded: Any, data: str, out: Path | None, fmt: str, quiet: bool,
               before: dict[str, float] | None, options: Any) -> None:
    """Trace; with ``before`` (``--profile``: the phases timed before the tracer started),
    where the time went on stderr, and in the JSON as ``timings``."""
    from qdebug.tracer.pipeline import Tracer

    tracer = Tracer(loaded, data, options)
    for name, seconds in (before or {}).items():
        tracer.phases.record(name, seconds)
    path = tracer.run()
    if before is None:
        print_result(path, fmt, quiet)
        return
    from qdebug.output.profile import profile_lines

    timings = tracer.phases.timings
    for line in profile_lines(timings):
        say_err(line)
    if fmt != "json":
        print_result(path, fmt, quiet)
        return
    from qdebug.output.jsonout import dumps
    from qdebug.output.report_json import report_dict
    from qdebug.store.reader import open_trace

    with open_trace(path) as tr:
        write(dumps({**report_dict(tr), "timings": timings}))


@cli.command()
@click.argument("shards", metavar="SHARD.h5...", nargs=-1, required=True,
                type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), metavar="PATH",
              help="The merged trace (written atomically).")
@click.option("--store-samples", type=click.IntRange(min=0), metavar="K",
              help="Keep activations of the first K samples (default: the shards' "
              "--store-samples).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="The summary printed at the end.")
@click.option("--quiet", "-q", is_flag=True, help="No summary.")
@debug_option
def merge(
    shards: tuple[Path, ...], out: Path, store_samples: int | None, fmt: str, quiet: bool,
) -> None:
    """Merge the shard traces of `qdebug trace --shard K/N` into the trace of one whole run.

    Per-sample statistics are concatenated in sample order; pooled metrics, worst samples and
    culprits are computed again from the summed statistics, as one run would. Refused (exit 2,
    nothing written): shards of different models or conversions (.tflite bytes, layer/op
    tables, outputs, schema, data), overlapping slices, missing slices, non-shard traces.

    \b
    Examples:
      qdebug merge shards/s*.h5 --out traces/run.h5
      qdebug merge s1.h5 s2.h5 s3.h5 --out run.h5 --format json
    """
    from qdebug.shards.merge import merge_traces

    command = "qdebug " + " ".join(
        shlex.quote(a) for a in click.get_current_context().meta.get("qdebug.argv", [])
    )
    path = merge_traces(shards, out, store_samples=store_samples, command_line=command)
    try:
        print_result(path, fmt, quiet)
    except BaseException as exc:
        # A merge whose summary could not be given (a full disk, a closed pipe, Ctrl-C) leaves
        # nothing behind: its trace goes too.
        with contextlib.suppress(OSError):
            path.unlink()
        if isinstance(exc, QdebugError):
            raise QdebugError(f"{exc.message}; the merged trace {path} was not kept",
                              exc.hint) from exc
        raise
