"""qdebug fix --allow int16,float and sensitivity --scheme int16 through ai-edge-quantizer's
per-op recipe, on the wide-activations example (three tensors with an outlier channel 64×
wider than the rest): int16 reaches the target for less than float, the trace it writes says
so, and the mixed model runs on LiteRT's builtin kernels."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import qdebug
from qdebug.cli import cli
from qdebug.metrics import sqnr_db
from qdebug.tools.fix_search import Target
from qdebug.tools.mixed_search import search_mixed

pytestmark = [pytest.mark.tf, pytest.mark.slow]
pytest.importorskip("ai_edge_quantizer")

TARGET = 38.0


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import wide_activations

    d = tmp_path_factory.mktemp("mixed")
    wide_activations.build().save(d / "wide.keras")
    np.save(d / "x.npy", wide_activations.data()[:64])
    return d


@pytest.fixture(scope="module")
def fixed(wide: Path) -> tuple[Path, str]:
    """``qdebug fix --allow int16,float`` run once: (its trace, its stdout)."""
    out = wide / "fixed.h5"
    r = CliRunner().invoke(cli, ["fix", str(wide / "wide.keras"), "--data", str(wide / "x.npy"),
                                 "--target-output-sqnr", str(TARGET), "--allow", "int16,float",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.stdout + r.stderr
    return out, r.stdout


def _recipe_lines(stdout: str) -> list[dict[str, object]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("recipe ("))
    end = next(i for i, line in enumerate(lines) if line.startswith("reproduce:"))
    entries: list[dict[str, object]] = json.loads("\n".join(lines[start + 1:end]))
    return entries


def test_int16_reaches_the_target_for_less_than_float(wide: Path, fixed: tuple[Path, str]) -> None:
    out, stdout = fixed
    assert "raise to int16: " in stdout and "target reached" in stdout
    with qdebug.open(out) as tr:  # the trace it wrote confirms the numbers
        sqnr = float(tr.output_metrics()["sqnr_db"][0])
        assert sqnr >= TARGET
        assert f"-> {sqnr:.1f} dB" in stdout
        int16_convs = [o.name for o in tr.ops if o.op_type == "CONV_2D" and o.dtype == "int16"]
        assert tr.mixed_precision  # each op's precision is recorded: int16 and int8 here
        assert {o.precision for o in tr.ops if o.op_type == "CONV_2D"} == {"int16"}
    assert len(int16_convs) >= 3, int16_convs  # the three wide tensors, both sides
    # the same search allowed only float: it needs the same ops, and costs more
    floats = search_mixed(str(wide / "wide.keras"), str(wide / "x.npy"), Target(TARGET),
                          allow=("float",), out=wide / "float.h5")
    assert floats.reached and floats.final.count("float") >= 3
    assert floats.final.count("int16") == 0  # nothing raised to what was not allowed
    cost16 = json.loads(out.with_suffix(".recipe.json").read_text())
    assert cost16 == _recipe_lines(stdout)  # the printed recipe is the one written
    int16_line = next(line for line in stdout.splitlines() if line.startswith("cost: "))
    model_b = int(int16_line.split("cost: +")[1].split(" B model")[0])
    assert model_b < floats.final.cost.model_bytes
    assert floats.final.cost.total_bytes > 3 * model_b


def test_the_mixed_model_runs_on_builtin_kernels(wide: Path, fixed: tuple[Path, str]) -> None:
    from qdebug.tracer.litert import LiteModel

    out, _ = fixed
    mixed = LiteModel(out.with_suffix(".tflite").read_bytes(), preserve=False)
    assert not mixed.xnnpack
    float_model = LiteModel(out.with_name("fixed-float.tflite").read_bytes(), preserve=False)
    kinds = {mixed.tensors[op.outputs[0]].dtype.name for op in mixed.compute_ops()}
    assert {"int16", "int8"} <= kinds
    x = np.load(wide / "x.npy")
    got: list[np.ndarray] = []
    want: list[np.ndarray] = []
    for s in x:
        for lite, into in ((mixed, got), (float_model, want)):
            lite.invoke([s])
            o = lite.output_details[0]
            v = lite.get(int(o["index"])).astype(np.float32)
            qp = lite.tensors[int(o["index"])].qp
            into.append(v if qp is None else (v - qp.zero_point) * qp.scale)
    with qdebug.open(out) as tr:
        traced = float(tr.output_metrics()["sqnr_db"][0])
    assert sqnr_db(np.stack(want), np.stack(got)) == pytest.approx(traced, abs=0.5)


def test_reproduce_line_names_the_recipe(fixed: tuple[Path, str]) -> None:
    out, stdout = fixed
    line = next(x for x in stdout.splitlines() if x.startswith("reproduce: "))
    args = shlex.split(line.removeprefix("reproduce: "))
    assert args[:2] == ["qdebug", "trace"]
    assert args[args.index("--recipe") + 1] == str(out.with_suffix(".recipe.json"))
    assert "--quantizer" in args and args[args.index("--quantizer") + 1] == "aeq"


def test_sensitivity_int16_beside_float(wide: Path) -> None:
    r = CliRunner().invoke(cli, ["sensitivity", str(wide / "wide.keras"), "--data",
                                 str(wide / "x.npy"), "--scheme", "int16", "--layers", "3",
                                 "--format", "json"])
    assert r.exit_code == 0, r.stdout + r.stderr
    got = json.loads(r.stdout)
    assert got["quantizer"] == "ai-edge-quantizer" and len(got["layers"]) == 3
    rows = {row["layer"]: row for row in got["layers"]}
    wide_rows = [rows[n] for n in ("conv2", "conv3") if n in rows]
    assert wide_rows, rows.keys()
    for row in wide_rows:  # a wide tensor raised on both sides: int16 buys it for less
        assert row["int16"]["delta_db"] > 1.0
        assert row["int16"]["cost"]["total_bytes"] < row["float"]["cost"]["total_bytes"]


def test_a_float_tflite_is_fixed_through_its_recipe(wide: Path, fixed: tuple[Path, str]) -> None:
    """The float .tflite fix wrote beside its trace, given as MODEL: the same search, and a
    reproducing command without --quantizer (a .tflite is always quantized by AEQ)."""
    out, _ = fixed
    model = out.with_name("fixed-float.tflite")
    again = wide / "tfl" / "fixed.h5"
    r = CliRunner().invoke(cli, ["fix", str(model), "--data", str(wide / "x.npy"), "-n", "32",
                                 "--target-output-sqnr", str(TARGET), "--allow", "int16",
                                 "--out", str(again)])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "raise to float" not in r.stdout  # float was not allowed
    line = next(x for x in r.stdout.splitlines() if x.startswith("reproduce: "))
    assert "--recipe" in line and "--quantizer" not in line
    with qdebug.open(again) as tr:
        assert float(tr.output_metrics()["sqnr_db"][0]) >= TARGET
        assert any(o.precision == "int16" for o in tr.ops)


def test_out_of_reach_tries_every_op_at_int16(wide: Path) -> None:
    """A target int16 cannot reach: when no group gains any more, every op at int16 is
    traced once, as the bound the fix prints, and the search says why it stopped."""
    from qdebug.tools.fix_report import run_mixed_fix

    said: list[str] = []
    lines, reached = run_mixed_fix(
        str(wide / "wide.keras"), str(wide / "x.npy"), Target(99.0), allow=("int16",),
        max_ops=16, time_budget_s=600, out=wide / "far.h5", prefix="qdebug trace M --data D",
        say=said.append, options={"samples": 32})
    assert not reached
    assert sum(line.startswith("  + every op at int16: ") for line in said) == 1
    assert "target not reached (no candidates)" in "\n".join(lines)
    recipe = json.loads((wide / "far.recipe.json").read_text())
    raised = [e for e in recipe if e["regex"].startswith("^")]
    assert raised and all(e["op_config"]["activation_tensor_config"]["num_bits"] == 16
                          for e in raised)
    with qdebug.open(wide / "far.h5") as tr:  # every op that computes values is int16
        assert {o.precision for o in tr.ops if o.op_type in ("CONV_2D", "FULLY_CONNECTED")} \
            == {"int16"}
