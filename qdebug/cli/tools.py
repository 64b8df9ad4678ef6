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


@cli.command()
@click.argument("model")
@click.option("--data", required=True, metavar="DATA", help="Evaluation data.")
@click.option("--calib", metavar="DATA", help="Calibration data (default: DATA).")
@click.option("--target-output-sqnr", type=FiniteFloat(), metavar="DB",
              help="Reach at least this output SQNR (dB).")
@click.option("--target-top1", type=FiniteFloat(0, 1), metavar="F",
              help="Reach at least this top-1 agreement (fraction of samples).")
@click.option("--max-float-layers", type=click.IntRange(min=1), default=4, show_default=True,
              metavar="N", help="Keep at most N layers in float.")
@click.option("--time-budget", type=FiniteFloat(min=1), default=600, show_default=True,
              metavar="S", help="Stop trying new candidates after S seconds.")
@click.option("--samples", "-n", type=click.IntRange(min=1), metavar="N",
              help="Trace the first N samples of DATA per candidate.")
@click.option("--out", "-o", type=click.Path(path_type=Path), metavar="PATH",
              help="The final trace (default: traces/<model>-fixed-<timestamp>.h5).")
@click.option("--trust-model-code", is_flag=True, help="Allow Lambda layers in a model file.")
@debug_option
def fix(
    model: str, data: str, calib: str | None, target_output_sqnr: float | None,
    target_top1: float | None, max_float_layers: int, time_budget: float, samples: int | None,
    out: Path | None, trust_model_code: bool,
) -> None:
    """Find a small set of layers to keep in float so the INT8 model reaches a target.

    Greedy, guided by the culprits of the current trace, every candidate verified by re-tracing.
    Prints the set, the numbers before and after, and the qdebug trace command that reproduces
    the final trace. Exit 0 when the target is reached, 1 when the budget ran out first.

    \b
    Examples:
      qdebug fix model.keras --data x.npy --target-output-sqnr 35
      qdebug fix model.keras --data x.npy --target-top1 0.99 --max-float-layers 3
    """
    if target_output_sqnr is None and target_top1 is None:
        raise QdebugError("no target given", "give --target-output-sqnr DB or --target-top1 F")
    precheck_path(model, "model", "give a .keras, .h5, SavedModel folder, or file.py:function")
    for spec in (data, calib):
        precheck_path(spec, "data", "give .npy, .npz, an image folder, or module:function")
    if out is not None:
        from qdebug.store.writer import check_target

        check_target(out)
    from qdebug.tracer.tfenv import import_tf

    import_tf()
    from qdebug.tools.fix_search import Target, search_fix
    from qdebug.tracer.pipeline import default_trace_path

    prefix = f"qdebug trace {shlex.quote(model)} --data {shlex.quote(data)}"
    if calib:
        prefix += f" --calib {shlex.quote(calib)}"
    if samples:
        prefix += f" --samples {samples}"
    final = out or default_trace_path(Path(model.split(":")[0]).stem + "-fixed")
    result = search_fix(
        model, data, Target(target_output_sqnr, target_top1),
        max_float_layers=max_float_layers, time_budget_s=time_budget, out=final,
        command_prefix=prefix + f" --out {shlex.quote(str(final))}",
        progress=lambda line: say_err(line),
        **_search_options(calib, samples, trust_model_code),
    )
    b, f = result.baseline, result.final
    lines = [f"keep in float: {', '.join(f.keep_float) or '(nothing)'}",
             f"output SQNR: {b.output_sqnr_db:.1f} dB -> {f.output_sqnr_db:.1f} dB"]
    if b.top1 == b.top1:
        lines.append(f"top-1 agreement: {b.top1:.3f} -> {f.top1:.3f}")
    verdict = "target reached" if result.reached else f"target not reached ({result.stopped})"
    lines += [f"{verdict}; {len(result.tried)} candidate(s) traced", f"trace: {f.trace}",
              f"reproduce: {result.command}"]
    say("\n".join(lines))
    sys.exit(0 if result.reached else 1)


@cli.command()
@click.argument("model")
@click.option("--data", required=True, metavar="DATA", help="Evaluation data.")
@click.option("--calib", metavar="DATA", help="Calibration data (default: DATA).")
@click.option("--layers", type=click.IntRange(min=1), default=8, show_default=True, metavar="N",
              help="Try the N best-ranked candidate layers (each costs one trace).")
@click.option("--samples", "-n", type=click.IntRange(min=1), metavar="N",
              help="Trace the first N samples of DATA per candidate.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--trust-model-code", is_flag=True, help="Allow Lambda layers in a model file.")
@debug_option
def sensitivity(
    model: str, data: str, calib: str | None, layers: int, samples: int | None, fmt: str,
    trust_model_code: bool,
) -> None:
    """Keep each candidate layer alone in float; rank layers by the output SQNR it buys.

    Candidates are the trace's worst Keras layers; a model without Keras layers (a subclassed
    model, a plain SavedModel) has none to keep in float. Exit 0 with a ranking, 1 when no
    candidate could be tried, 2 on bad input.

    \b
    Examples:
      qdebug sensitivity model.keras --data x.npy --layers 5
    """
    precheck_path(model, "model", "give a .keras, .h5, SavedModel folder, or file.py:function")
    for spec in (data, calib):
        precheck_path(spec, "data", "give .npy, .npz, an image folder, or module:function")
    from qdebug.output.jsonout import dumps
    from qdebug.tracer.tfenv import import_tf

    import_tf()
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
