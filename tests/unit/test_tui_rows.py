"""The viewer's data layer (no Textual): rows, sorting, ranking, alignment, histograms."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from qdebug import metrics
from qdebug.store.reader import Activation, open_trace
from qdebug.tui.activation_view import summarize
from qdebug.tui.compare_rows import align, delta_style
from qdebug.tui.layer_rows import (
    LayerRow,
    build_rows,
    column,
    filter_rows,
    fmt_db,
    fmt_pct,
    printable,
    ranking,
    sort_rows,
    sqnr_drop,
)
from tui_traces import FIXTURE


@pytest.fixture(scope="module")
def rows() -> list[LayerRow]:
    with open_trace(FIXTURE) as tr:
        return build_rows(tr)


def test_rows_carry_pooled_metrics_and_nan_for_unmeasured(rows: list[LayerRow]) -> None:
    assert len(rows) == 13
    assert rows[3].values["sqnr_db"] == pytest.approx(42.6459, abs=1e-3)
    assert math.isnan(rows[1].values["sqnr_db"])  # conv1 is fused into relu1
    assert column("status").cell(rows[1]).plain == "fused → relu1"


def test_sort_keeps_missing_values_last_both_ways(rows: list[LayerRow]) -> None:
    for reverse in (False, True):
        out = sort_rows(rows, "rmse_lsb", reverse)
        vals = [r.values["rmse_lsb"] for r in out]
        assert all(math.isnan(v) for v in vals[9:]) and not any(math.isnan(v) for v in vals[:9])
        assert vals[:9] == sorted(vals[:9], reverse=reverse)
    assert [r.record.op_type for r in sort_rows(rows, "op_type", False)][-4:] == [""] * 4


def test_filter_matches_name_or_class_case_insensitively(rows: list[LayerRow]) -> None:
    assert [r.index for r in filter_rows(rows, "CONV")] == [1, 4, 8]
    assert [r.index for r in filter_rows(rows, "relu")] == [3, 5]
    assert len(filter_rows(rows, "  ")) == 13


def test_ranking_prefers_local_sqnr_when_the_trace_has_it(rows: list[LayerRow]) -> None:
    # a trace without the propagation analysis (schema 1.0): accumulated SQNR ranks
    older = [dataclasses.replace(r, values={k: v for k, v in r.values.items()
                                            if not k.startswith("local_")}) for r in rows]
    assert ranking(older)[:2] == [8, 12]  # conv2, probs
    assert column("local_sqnr_db").cell(older[3]).plain == "—"
    local = [dataclasses.replace(r, values={**r.values, "local_sqnr_db": 50.0 - r.index})
             if r.measured else r for r in rows]
    assert ranking(local)[:2] == [12, 11]
    assert column("local_sqnr_db").cell(local[3]).plain == "47.0"


def test_sqnr_drop_looks_through_fused_layers_to_the_measured_input(rows: list[LayerRow]) -> None:
    drop = sqnr_drop(rows)
    sq = [r.values["sqnr_db"] for r in rows]
    assert drop[3] == pytest.approx(sq[3] - sq[0])  # relu1 ← bn1 ← conv1 ← image
    assert drop[6] == pytest.approx(sq[6] - min(sq[3], sq[5]))  # res_add has two inputs
    assert math.isnan(drop[0]) and math.isnan(drop[1])


def test_align_by_name_and_deltas(rows: list[LayerRow]) -> None:
    shifted = [dataclasses.replace(r, values={**r.values, "sqnr_db": r.values["sqnr_db"] - 4})
               for r in rows[:-1]]
    extra = dataclasses.replace(rows[0], record=dataclasses.replace(rows[0].record, name="new"))
    pairs = align(rows, [*shifted, extra])
    assert [p.name for p in pairs][-2:] == ["probs", "new"]
    assert pairs[3].delta("sqnr_db") == pytest.approx(-4.0)
    assert pairs[12].b is None and math.isnan(pairs[12].delta("sqnr_db"))
    assert pairs[13].a is None
    assert delta_style(-4.0) == "bold red" and delta_style(1.5) == "green"
    assert delta_style(0.2) == "dim"


def test_summarize_marks_clipping_and_per_channel_sqnr() -> None:
    qp = metrics.QuantParams(0.1, 0)
    f = np.array([[0.0, 1.0], [20.0, -3.0]], dtype=np.float32)  # 20.0 is beyond 12.7
    raw = np.array([[0, 10], [127, -30]], dtype=np.int8)
    view = summarize(Activation(f, raw, qp), sample=7, bins=8)
    assert view.clipped == 1 and view.size == 4
    assert int(view.float_counts.sum()) == int(view.int8_counts.sum()) == 4
    assert view.channel_sqnr_db[0] == pytest.approx(metrics.sqnr_db(f[:, 0], raw[:, 0] * 0.1))
    assert math.isinf(view.channel_sqnr_db[1])  # channel 1 has no error
    assert view.low == pytest.approx(-12.8) and view.high == pytest.approx(12.7)


def test_text_helpers() -> None:
    assert printable("a\x1b[0m\u202eb") == "a\\x1b[0m\\u202eb"
    assert printable("[b]x[/b]") == "[b]x[/b]"
    assert fmt_db(math.inf) == "∞" and fmt_db(math.nan) == "—"
    assert fmt_pct(1e-6) == "<0.01%" and fmt_pct(0.5) == "50.00%"


def test_severity_colours_come_from_the_one_set_of_bands() -> None:
    """The viewer's colours, its help legend and the Model Explorer thresholds all follow
    ``metrics.SQNR_BANDS``: each band's values take its colour, the boundary the next one's."""
    from qdebug import metrics
    from qdebug.output.model_explorer import SQNR_THRESHOLDS
    from qdebug.tui.layer_rows import BAND_STYLES, colour_legend, sqnr_style

    ceilings = [c for c, _ in metrics.SQNR_BANDS]
    for i, ceiling in enumerate(ceilings[:-1]):
        assert sqnr_style(ceiling - 0.01) == BAND_STYLES[i]
        assert sqnr_style(ceiling) == BAND_STYLES[i + 1]
    assert sqnr_style(float("inf")) == BAND_STYLES[-1]
    assert sqnr_style(float("-inf")) == BAND_STYLES[0] and sqnr_style(float("nan")) == "dim"
    assert [t for t, _ in SQNR_THRESHOLDS] == [min(c, 1e9) for c in ceilings]
    assert colour_legend() == "SQNR (dB): < 10 bold red, 10–20 red, 20–30 yellow, ≥ 30 green"
