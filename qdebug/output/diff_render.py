"""``qdebug diff`` output: text for the terminal, markdown for a PR comment, JSON for scripts."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from qdebug.analysis.trace_diff import Change, DiffResult, LayerDiff
from qdebug.output import md
from qdebug.output.fmt import TEXT_LIMIT, db, pct, plain, printable, shown
from qdebug.output.jsonout import dumps
from qdebug.output.jsonout import num as json_num


def _change(c: Change | None) -> dict[str, float | None] | None:
    if c is None:
        return None
    return {"base": json_num(c.base), "new": json_num(c.new), "delta": json_num(c.delta)}


def diff_dict(result: DiffResult) -> dict[str, Any]:
    """The diff as plain data (NaN becomes None; ``diff_json`` writes ±∞ as ``"inf"``)."""
    th = result.thresholds
    return {
        "verdict": result.verdict,
        "base": result.base,
        "new": result.new,
        "model": result.model_name,
        "thresholds": {
            "max_output_drop_db": th.max_output_drop_db,
            "max_layer_drop_db": th.max_layer_drop_db,
            "max_top1_drop": th.max_top1_drop,
            "max_accuracy_drop": th.max_accuracy_drop,
        },
        "int8_accuracy": _change(result.int8_accuracy),
        "float_accuracy": _change(result.float_accuracy),
        "reasons": list(result.reasons),
        "notes": list(result.notes),
        "outputs": [
            {
                "name": o.name,
                "sqnr_db": _change(o.sqnr_db),
                "top1_agreement": _change(o.top1_agreement),
                "regressed": o.regressed,
            }
            for o in result.outputs
        ],
        "most_changed": list(result.most_changed),
        "added": list(result.added),
        "removed": list(result.removed),
        "rematched": list(result.rematched),
        "layers": [
            {
                "name": d.name,
                "class": d.class_name,
                "status": {"base": d.status[0], "new": d.status[1]},
                "rematched": d.rematched,
                "sqnr_db": _change(d.sqnr_db),
                "saturation": _change(d.saturation),
                "local_sqnr_db": _change(d.local_sqnr_db),
                "gain": _change(d.gain),
                "regressed": d.regressed,
            }
            for d in result.layers
        ],
    }


def diff_json(result: DiffResult) -> str:
    """``diff_dict`` as indented JSON."""
    return dumps(diff_dict(result))


def _headline(result: DiffResult, name: Callable[[str], str] = shown) -> str:
    parts = []
    for o in result.outputs:
        text = f"output {name(o.name)}: SQNR {db(o.sqnr_db.base)} → {db(o.sqnr_db.new)} dB"
        text += f" ({db(o.sqnr_db.delta, signed=True)})"
        if not math.isnan(o.top1_agreement.base):  # a classifier
            text += (
                f", top-1 agreement {pct(o.top1_agreement.base)} → {pct(o.top1_agreement.new)}"
            )
        parts.append(text)
    if result.int8_accuracy is not None:
        acc = result.int8_accuracy
        parts.append(f"int8 accuracy {pct(acc.base)} → {pct(acc.new)}")
    return "; ".join(parts)


def _thresholds(result: DiffResult) -> str:
    th = result.thresholds
    return (
        f"thresholds: output SQNR drop ≤ {th.max_output_drop_db:g} dB, layer SQNR drop ≤ "
        f"{th.max_layer_drop_db:g} dB, top-1 drop ≤ {th.max_top1_drop:g}, accuracy drop ≤ "
        f"{th.max_accuracy_drop:g}"
    )


_COLUMNS = ("layer", "class", "SQNR base", "SQNR new", "Δ dB", "saturation Δ", "local Δ dB",
            "gain Δ", "")


def _row(d: LayerDiff, name: Callable[[str], str] = shown,
         text: Callable[[str], str] = shown) -> list[str]:
    return [
        name(d.name),
        text(d.class_name),
        db(d.sqnr_db.base),
        db(d.sqnr_db.new),
        db(d.sqnr_db.delta, signed=True),
        pct(d.saturation.delta, signed=True),
        db(d.local_sqnr_db.delta, signed=True) if d.local_sqnr_db else "n/a",
        plain(d.gain.delta) if d.gain else "n/a",
        "REGRESSED" if d.regressed else ("re-matched" if d.rematched else ""),
    ]


def _layer_lists(result: DiffResult) -> list[tuple[str, tuple[str, ...]]]:
    return [
        ("added (only in NEW)", result.added),
        ("removed (only in BASE)", result.removed),
        ("re-matched (status or tensor changed)", result.rematched),
    ]


def diff_text(result: DiffResult) -> str:
    """The diff for a terminal: verdict first, then the layers that changed most."""
    lines = [
        f"{result.verdict.upper()}  {shown(result.model_name)}: {shown(result.base, TEXT_LIMIT)}"
        f" → {shown(result.new, TEXT_LIMIT)}",
        f"  {_headline(result)}",
        f"  {_thresholds(result)}",
    ]
    lines += [f"  ✗ {shown(r, TEXT_LIMIT)}" for r in result.reasons]
    rows = [_row(result.layer(n)) for n in result.most_changed]
    if rows:
        widths = [max(len(c), *(len(r[k]) for r in rows)) for k, c in enumerate(_COLUMNS)]
        lines.append("layers that changed most:")
        for cells in [list(_COLUMNS), *rows]:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    else:
        lines.append("no layer's SQNR changed")
    for title, names in _layer_lists(result):
        if names:
            lines.append(f"{title}: {', '.join(shown(n) for n in names)}")
    lines += [f"note: {shown(n, TEXT_LIMIT)}" for n in result.notes]
    # Names and paths come from the traces: each line is made safe for the terminal.
    return "\n".join(printable(line.rstrip()) for line in lines)


#: Names listed per line of added, removed or re-matched layers in markdown.
SHOWN_NAMES = 20
_JSON = "`qdebug diff BASE NEW --format json` has them all"


def _names_md(names: tuple[str, ...]) -> str:
    text = ", ".join(md.code(n) for n in names[:SHOWN_NAMES])
    more = len(names) - SHOWN_NAMES
    return text + (f" and {more:,} more ({_JSON})" if more > 0 else "")


def diff_markdown(result: DiffResult, limit: int = md.BODY_LIMIT) -> str:
    """The diff as a markdown section for a pull request or issue comment: every name from
    the traces escaped (``md``), at most ``limit`` characters (GitHub's comment limit)."""
    mark = "❌ regression" if result.regressed else "✅ no regression"
    head: list[str | md.Rows] = [
        f"### qdebug diff: {mark}",
        "",
        f"{md.code(result.base, TEXT_LIMIT)} → {md.code(result.new, TEXT_LIMIT)} "
        f"(model {md.code(result.model_name)})",
        "",
        f"- {_headline(result, md.code)}",
        f"- {_thresholds(result)}",
    ]
    if result.reasons:
        head.append(md.Rows([], [f"- **{md.text(r, TEXT_LIMIT)}**" for r in result.reasons],
                            "reasons", _JSON))
    head += [f"- note: {md.text(n, TEXT_LIMIT)}" for n in result.notes]
    for title, names in _layer_lists(result):
        if names:
            head.append(f"- {title}: {_names_md(names)}")
    table: list[str | md.Rows] = ["#### Layers that changed most", ""]
    if result.most_changed:
        rows = [_row(result.layer(n), lambda s: md.code(s, in_table=True), md.text)
                for n in result.most_changed]
        table.append(md.table([*_COLUMNS[:-1], " "], rows, "layers", _JSON))
    else:
        table.append("No layer's SQNR changed.")
    return md.fold([head, table], limit)


def regression_message(result: DiffResult) -> str:
    """Why ``assert_no_regression`` failed: every threshold exceeded, then the worse layers."""
    lines = [f"quantization regressed for {result.model_name}: {result.base} → {result.new}"]
    lines += [f"  - {r}" for r in result.reasons]
    worse = [d.name for d in result.regressed_layers]
    if worse:
        lines.append(f"layers that got worse: {', '.join(worse)}")
    return "\n".join(printable(line) for line in lines)


RENDERERS = {"text": diff_text, "markdown": diff_markdown, "json": diff_json}
