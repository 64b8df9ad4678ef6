"""The tools on the TensorFlow side: ``check``, ``fix`` and ``sensitivity``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click

from qdebug.cli.app import cli, debug_option, say, say_err, write
from qdebug.cli.params import FiniteFloat
from qdebug.cli.paths import precheck_path
from qdebug.errors import QdebugError
from qdebug.output.fmt import printable


@cli.command()
@click.argument("model")
@click.option("--data", metavar="DATA", help="Evaluation data (same forms as qdebug trace).")
@click.option("--calib", metavar="DATA", help="Calibration data; with --data, coverage of the "
              "evaluation data by the calibrated ranges is checked.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--trust-model-code", is_flag=True,
              help="Allow Lambda layers in a model file (runs code stored in the file).")
@debug_option
def check(
    model: str, data: str | None, calib: str | None, fmt: str, trust_model_code: bool,
) -> None:
    """Pre-flight: why MODEL may not quantize well, before or without a full trace.

    Tries the float and INT8 conversions, tfmot's quantize_model (tf_keras models), the dtypes,
    the data (sample count, duplicates, constant/NaN inputs, calibrated-range coverage) and the
    architecture (residual depth, unbalanced merges, softmax heads, outliers). Each finding
    names the layer and the fix. Exit 1 when a finding is an error (data that cannot be used —
    unreadable, empty, of the wrong shape — is a finding too), 0 otherwise, 2 when MODEL or a
    data path does not exist or cannot be loaded at all.
    Findings: docs/check-and-fix.md.

    \b
    Examples:
      qdebug check examples/erf_gelu.py:build
      qdebug check model.keras --data val.npy --calib calib.npy --format json
    """
    precheck_path(model, "model", "give a .keras, .h5, SavedModel folder, or file.py:function")
    for spec in (data, calib):
        precheck_path(spec, "data", "give .npy, .npz, an image folder, or module:function")
    from qdebug.tools.check import ERROR, render_json, render_text, run_checks
    from qdebug.tracer.tfenv import import_tf

    import_tf()
    findings = run_checks(model, data, calib, trust_model_code=trust_model_code)
    if fmt == "json":
        write(render_json(model, findings))
    else:
        say(render_text(model, findings))
    sys.exit(1 if any(f.severity == ERROR for f in findings) else 0)


def _search_options(calib: str | None, samples: int | None, trust: bool) -> dict[str, Any]:
    opts: dict[str, Any] = {"trust_model_code": trust}
    if calib is not None:
        opts["calib"] = calib
    if samples is not None:
        opts["samples"] = samples
    return opts


def _allowed(allow: str | None, model: str) -> tuple[str, ...] | None:
    """The precisions of ``--allow`` (None: the converter's float fallback)."""
    from qdebug.tools.precision import PRECISIONS

    if allow is None:
        return ("float",) if model.lower().endswith(".tflite") else None
    parts = tuple(dict.fromkeys(p.strip().lower() for p in allow.split(",") if p.strip()))
    bad = [p for p in parts if p not in PRECISIONS]
    if bad or not parts:
        what = (f"{', '.join(bad)} is not a precision ops can be raised to" if bad
                else "names no precision")
        raise QdebugError(f"--allow {allow}: {what}", "give int16, float or int16,float")
    if parts == ("float",) and not model.lower().endswith(".tflite"):
        return None  # float alone: the converter's --keep-float, as without --allow
    return parts


@cli.command()
@click.argument("model")
@click.option("--data", required=True, metavar="DATA", help="Evaluation data.")
@click.option("--calib", metavar="DATA", help="Calibration data (default: DATA).")
@click.option("--target-output-sqnr", type=FiniteFloat(), metavar="DB",
              help="Reach at least this output SQNR (dB).")
@click.option("--target-top1", type=FiniteFloat(0, 1), metavar="F",
              help="Reach at least this top-1 agreement (fraction of samples).")
@click.option("--allow", metavar="int16,float",
              help="What ops may be raised to, through ai-edge-quantizer's per-op recipe: "
              "int16 (16-bit activations, int8 weights: cheap), float, or both (int16 tried "
              "first). Without it (or with float alone): layers kept in float by the converter "
              "(--keep-float); a float .tflite MODEL always goes through ai-edge-quantizer.")
@click.option("--max-float-layers", type=click.IntRange(min=1), default=4, show_default=True,
              metavar="N", help="Keep at most N layers in float (without --allow).")
@click.option("--max-ops", type=click.IntRange(min=1), default=16, show_default=True,
              metavar="N", help="Raise at most N ops (with --allow).")
@click.option("--time-budget", type=FiniteFloat(min=1), default=600, show_default=True,
              metavar="S", help="Stop trying new candidates after S seconds.")
@click.option("--samples", "-n", type=click.IntRange(min=1), metavar="N",
              help="Trace the first N samples of DATA per candidate.")
@click.option("--out", "-o", type=click.Path(path_type=Path), metavar="PATH",
              help="The final trace (default: traces/<model>-fixed-<timestamp>.h5); with "
              "--allow its recipe is written beside it (.recipe.json), with the model "
              "(.tflite) and the float model the recipe applies to (-float.tflite).")
@click.option("--trust-model-code", is_flag=True, help="Allow Lambda layers in a model file.")
@debug_option
def fix(
    model: str, data: str, calib: str | None, target_output_sqnr: float | None,
    target_top1: float | None, allow: str | None, max_float_layers: int, max_ops: int,
    time_budget: float, samples: int | None, out: Path | None, trust_model_code: bool,
) -> None:
    """Find the cheapest fix that makes the quantized model reach a target.

    Without --allow: a small set of Keras layers to keep in float (the converter's
    --keep-float). With --allow int16,float: the cheapest set of ops to raise to 16-bit
    activations or to float through ai-edge-quantizer's per-op recipe; an op and the ops
    reading its output are raised together (a tensor keeps 16 bits only where both sides
    compute in 16 bits). Greedy, guided by the culprits of the current trace, every
    candidate verified by re-tracing on LiteRT's builtin kernels. Prints the set, what it
    costs (model and activation bytes, ops), the numbers before and after, the recipe and
    the qdebug trace command that reproduces the final trace. Exit 0 when the target is
    reached, 1 when the budget ran out first.

    \b
    Examples:
      qdebug fix model.keras --data x.npy --target-output-sqnr 35
      qdebug fix model.keras --data x.npy --target-output-sqnr 38 --allow int16,float
      qdebug fix model.tflite --data x.npy --target-top1 0.99 --allow int16
    """
    if target_output_sqnr is None and target_top1 is None:
        raise QdebugError("no target given", "give --target-output-sqnr DB or --target-top1 F")
    precheck_path(model, "model", "give a .keras, .h5, SavedModel folder, .tflite, or "
                  "file.py:function")
    for spec in (data, calib):
        precheck_path(spec, "data", "give .npy, .npz, an image folder, or module:function")
    precisions = _allowed(allow, model)
    if precisions is not None:
        from qdebug.tracer.aeq import require_aeq

        require_aeq()
    if out is not None:
        from qdebug.store.writer import check_target

        check_target(out)
    from qdebug.tracer.tfenv import import_tf

    import_tf()
    from qdebug.tools.fix_report import run_converter_fix, run_mixed_fix
    from qdebug.tools.fix_search import Target
    from qdebug.tracer.pipeline import default_trace_path

    prefix = f"qdebug trace {shlex.quote(model)} --data {shlex.quote(data)}"
    if calib:
        prefix += f" --calib {shlex.quote(calib)}"
    if samples:
        prefix += f" --samples {samples}"
    final = out or default_trace_path(Path(model.split(":")[0]).stem + "-fixed")
    target = Target(target_output_sqnr, target_top1)
    options = _search_options(calib, samples, trust_model_code)
    if precisions is None:
        lines, reached = run_converter_fix(
            model, data, target, max_float_layers=max_float_layers, time_budget_s=time_budget,
            out=final, prefix=prefix, say=say_err, options=options)
    else:
        lines, reached = run_mixed_fix(
            model, data, target, allow=precisions, max_ops=max_ops, time_budget_s=time_budget,
            out=final, prefix=prefix, say=say_err, options=options)
    say("\n".join(lines))
    sys.exit(0 if reached else 1)


@cli.command()
@click.argument("model")
@click.option("--data", required=True, metavar="DATA", help="Evaluation data.")
@click.option("--calib", metavar="DATA", help="Calibration data (default: DATA).")
@click.option("--layers", type=click.IntRange(min=1), default=8, show_default=True, metavar="N",
              help="Try the N best-ranked candidate layers (each costs one trace per precision).")
@click.option("--samples", "-n", type=click.IntRange(min=1), metavar="N",
              help="Trace the first N samples of DATA per candidate.")
@click.option("--scheme", type=click.Choice(["float", "int16"]), default="float",
              show_default=True,
              help="float: each layer alone kept in float by the converter. int16: each layer "
              "alone at 16-bit activations and, beside it, alone in float, both through "
              "ai-edge-quantizer's per-op recipe, with what each costs.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--trust-model-code", is_flag=True, help="Allow Lambda layers in a model file.")
@debug_option
def sensitivity(
    model: str, data: str, calib: str | None, layers: int, samples: int | None, scheme: str,
    fmt: str, trust_model_code: bool,
) -> None:
    """Raise each candidate layer alone; rank layers by the output SQNR it buys.

    Candidates are the trace's worst Keras layers (ops, for a float .tflite). --scheme float
    keeps each alone in float through the converter; a model without Keras layers (a
    subclassed model, a plain SavedModel) has none to keep. --scheme int16 (and any float
    .tflite) goes through ai-edge-quantizer: each layer's ops, with the ops reading its
    output, at int16 alone and in float alone, beside the all-int8 model. Exit 0 with a
    ranking, 1 when no candidate could be tried, 2 on bad input.

    \b
    Examples:
      qdebug sensitivity model.keras --data x.npy --layers 5
      qdebug sensitivity model.keras --data x.npy --scheme int16
      qdebug sensitivity model.tflite --data x.npy --format json
    """
    precheck_path(model, "model", "give a .keras, .h5, SavedModel folder, .tflite, or "
                  "file.py:function")
    for spec in (data, calib):
        precheck_path(spec, "data", "give .npy, .npz, an image folder, or module:function")
    from qdebug.output.jsonout import dumps

    tflite = model.lower().endswith(".tflite")
    if scheme == "int16" or tflite:
        from qdebug.tracer.aeq import require_aeq

        require_aeq()
    from qdebug.tracer.tfenv import import_tf

    import_tf()
    if scheme == "int16" or tflite:
        _raised_sensitivity(model, data, layers, ("int16", "float") if scheme == "int16"
                            else ("float",), fmt, _search_options(calib, samples,
                                                                  trust_model_code))
        return
    from qdebug.tools.fix_search import one_at_a_time

    base, ranked = one_at_a_time(
        model, data, layers=layers,
        progress=None if fmt == "json" else (lambda line: say_err(line)),
        **_search_options(calib, samples, trust_model_code),
    )
    why = ("no layer could be kept in float alone: the trace has no Keras layer to keep (a "
           "model traced as ops: subclassed, a plain SavedModel) or none with ops of its own")
    if fmt == "json":  # the same verdict and exit code as the text form
        write(dumps({
            "baseline_output_sqnr_db": base.output_sqnr_db,
            "layers": [
                {"layer": s.layer, "output_sqnr_db": s.output_sqnr_db, "delta_db": s.delta_db}
                for s in ranked
            ],
            **({} if ranked else {"reason": why}),
        }))
        sys.exit(0 if ranked else 1)
    if not ranked:
        say(f"baseline output SQNR {base.output_sqnr_db:.1f} dB; {why}")
        sys.exit(1)
    lines = [f"baseline output SQNR {base.output_sqnr_db:.1f} dB; each layer alone in float:"]
    lines += [f"  {printable(s.layer):<32} {s.output_sqnr_db:6.1f} dB  ({s.delta_db:+.1f})"
              for s in ranked]
    say("\n".join(lines))



def _raised_sensitivity(model: str, data: str, layers: int, precisions: tuple[str, ...],
                        fmt: str, options: dict[str, Any]) -> None:
    """``sensitivity --scheme int16`` (or of a float .tflite): print and exit."""
    from qdebug.output.jsonout import dumps
    from qdebug.tools.sensitivity import Raise, raised_alone

    base, ranked = raised_alone(
        model, data, layers=layers, precisions=precisions,
        progress=None if fmt == "json" else (lambda line: say_err(line)), **options)

    def one(r: Raise | None) -> dict[str, Any] | None:
        return None if r is None else {"output_sqnr_db": r.output_sqnr_db,
                                       "delta_db": r.delta_db, "cost": r.cost.as_dict()}

    ok = any(r.at_int16 or r.at_float for r in ranked)
    why = "no layer or op could be quantized alone at a higher precision"
    if fmt == "json":
        write(dumps({
            "baseline_output_sqnr_db": base.output_sqnr_db,
            "quantizer": "ai-edge-quantizer",
            "layers": [{"layer": r.name, "ops": list(r.ops), "int16": one(r.at_int16),
                        "float": one(r.at_float)} for r in ranked],
            **({} if ok else {"reason": why}),
        }))
        sys.exit(0 if ok else 1)
    if not ok:
        say(f"baseline output SQNR {base.output_sqnr_db:.1f} dB (all int8); {why}")
        sys.exit(1)

    def cell(r: Raise | None) -> str:
        if r is None:
            return f"{'—':>27}"
        return f"{r.output_sqnr_db:6.1f} dB ({r.delta_db:+5.1f}) {_kib(r.cost.total_bytes):>9}"

    lines = [f"baseline output SQNR {base.output_sqnr_db:.1f} dB (all int8, ai-edge-quantizer);"
             " each layer alone, with the ops reading its output (cost: model + activation "
             "bytes):",
             f"  {'layer':<32} " + " ".join(f"{p + ' alone':>27}" for p in precisions)]
    lines += [f"  {printable(r.name):<32} "
              + " ".join(cell(r.at_int16 if p == "int16" else r.at_float) for p in precisions)
              for r in ranked]
    say("\n".join(lines))


def _kib(n: int) -> str:
    return f"+{n} B" if abs(n) < 10_000 else f"+{n / 1024:.1f} KiB"
