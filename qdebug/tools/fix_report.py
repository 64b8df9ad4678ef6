"""``qdebug fix``'s two searches run and said in lines: the converter's float layers
(``fix_search``) and the per-op int16/float recipe (``mixed_search``)."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qdebug.tools.fix_search import Target, search_fix
from qdebug.tools.precision import FLOAT, INT16


def _verdict(reached: bool, stopped: str, tried: int) -> str:
    verdict = "target reached" if reached else f"target not reached ({stopped})"
    return f"{verdict}; {tried} candidate(s) traced"


def _top1(b: float, f: float) -> list[str]:
    return [f"top-1 agreement: {b:.3f} -> {f:.3f}"] if b == b else []


def run_converter_fix(
    model: Any, data: Any, target: Target, *, max_float_layers: int, time_budget_s: float,
    out: Path, prefix: str, say: Callable[[str], None], options: dict[str, Any],
) -> tuple[list[str], bool]:
    """Layers kept in float by the converter (``--keep-float``): the lines to print and
    whether the target was reached."""
    result = search_fix(
        model, data, target, max_float_layers=max_float_layers, time_budget_s=time_budget_s,
        out=out, command_prefix=prefix + f" --out {shlex.quote(str(out))}", progress=say,
        **options,
    )
    b, f = result.baseline, result.final
    lines = [f"keep in float: {', '.join(f.keep_float) or '(nothing)'}"]
    if result.cost is not None:
        lines.append(f"cost: {result.cost.describe()}")
    lines.append(f"output SQNR: {b.output_sqnr_db:.1f} dB -> {f.output_sqnr_db:.1f} dB")
    lines += _top1(b.top1, f.top1)
    lines += [_verdict(result.reached, result.stopped, len(result.tried)), f"trace: {f.trace}",
              f"reproduce: {result.command}"]
    return lines, result.reached


def run_mixed_fix(
    model: Any, data: Any, target: Target, *, allow: Sequence[str], max_ops: int,
    time_budget_s: float, out: Path, prefix: str, say: Callable[[str], None],
    options: dict[str, Any],
) -> tuple[list[str], bool]:
    """Ops raised to int16 or float through ai-edge-quantizer: the lines to print (the
    recipe as JSON among them) and whether the target was reached."""
    from qdebug.tools.mixed_search import reproduce_command, search_mixed

    result = search_mixed(model, data, target, allow=allow, max_ops=max_ops,
                          time_budget_s=time_budget_s, out=out, progress=say, **options)
    b, f = result.baseline, result.final
    lines = []
    for precision, word in ((INT16, "raise to int16"), (FLOAT, "raise to float")):
        raised = dict(f.raised)
        ops = [name for k, name in result.labels.items() if raised.get(k) == precision]
        if precision in allow:
            lines.append(f"{word}: {', '.join(ops) or '(nothing)'}")
    lines += [f"cost: {f.cost.describe()}",
              f"output SQNR: {b.output_sqnr_db:.1f} dB -> {f.output_sqnr_db:.1f} dB"]
    lines += _top1(b.top1, f.top1)
    e = result.everywhere
    if e is not None and e.raised != f.raised:
        hint = (f" (reaches the target: --max-ops {len(e.raised)})"
                if target.met(e) and not result.reached else "")
        lines.append(f"every op at int16 would read {e.output_sqnr_db:.1f} dB, cost "
                     f"{e.cost.describe()}{hint}")
    keras = not str(model).lower().endswith(".tflite")
    recipe_path = f.trace.with_suffix(".recipe.json")
    lines += [_verdict(result.reached, result.stopped, len(result.tried)),
              f"trace: {f.trace}",
              f"recipe ({recipe_path}, ai-edge-quantizer, for {result.float_model}):",
              "[" + ",\n ".join(json.dumps(e) for e in result.recipe) + "]",
              f"reproduce: {reproduce_command(prefix, result, keras)} "
              f"--out {shlex.quote(str(f.trace))}"]
    return lines, result.reached


__all__ = ["run_converter_fix", "run_mixed_fix"]
