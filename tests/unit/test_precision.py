"""Per-op precision bookkeeping (no TensorFlow): raising never lowers an op, costs add up and
read as bytes and ops, the sensitivity names still import from fix_search, and fix --allow
refuses what is not a precision before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from cli_helpers import assert_one_line_error
from qdebug.cli import cli
from qdebug.tools import fix_search, sensitivity
from qdebug.tools.precision import FLOAT, INT16, Footprint, cost, merged


def test_raising_never_lowers_an_op() -> None:
    raised = merged((), ("a", "b"), FLOAT)
    assert raised == (("a", FLOAT), ("b", FLOAT))
    again = merged(raised, ("b", "c"), INT16)  # b stays float, c joins at int16
    assert again == (("a", FLOAT), ("b", FLOAT), ("c", INT16))
    assert merged(again, ("c",), INT16) == again


def test_cost_is_the_difference_in_bytes_and_ops() -> None:
    base = Footprint(model_bytes=26504, activation_bytes=9000, int16_ops=0, float_ops=0,
                     edge_ops=2)
    cand = Footprint(model_bytes=27088, activation_bytes=15656, int16_ops=5, float_ops=0,
                     edge_ops=4)
    c = cost(base, cand)
    assert (c.model_bytes, c.activation_bytes, c.total_bytes) == (584, 6656, 7240)
    assert c.describe() == ("+584 B model, +6656 B activations; 5 op(s) int16, 0 float, "
                            "+2 QUANTIZE/DEQUANTIZE")
    assert c.as_dict()["int16_ops"] == 5
    big = cost(base, Footprint(60000, 9000, 0, 5, 3))
    assert big.describe().startswith("+32.7 KiB model, +0 B activations; 0 op(s) int16, 5 float")


def test_sensitivity_names_still_import_from_fix_search() -> None:
    assert fix_search.one_at_a_time is sensitivity.one_at_a_time
    assert fix_search.Sensitivity is sensitivity.Sensitivity


def test_allow_refuses_what_is_not_a_precision(tmp_path: Path) -> None:
    model, data = tmp_path / "m.keras", tmp_path / "x.npy"
    model.write_bytes(b"never loaded")
    np.save(data, np.zeros((2, 3), np.float32))
    for bad in ("int4", "int16,fp8", ","):
        r = CliRunner().invoke(cli, ["fix", str(model), "--data", str(data),
                                     "--target-output-sqnr", "30", "--allow", bad])
        assert_one_line_error(r.exit_code, r.stderr, "--allow", "int16,float")
