"""The layer detail of a real LSTM (unrolled: one layer, ~170 ops): the op list is folded into a
summary so the histograms come first; ``o`` lists every op under them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from rich.console import Console
from textual.widgets import Static

from qdebug.cli import cli
from qdebug.tui.app import create_app
from qdebug.tui.ops_view import FOLD_OPS, WORST_OPS
from qdebug.tui.screens.detail import LayerDetailScreen
from tui_traces import sync


def _text(app: object, selector: str) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(app.screen.query_one(selector, Static).content)  # type: ignore[attr-defined]
    return console.export_text()


def _lstm_trace(tmp: Path) -> Path:
    import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((12, 6), name="seq")
    h = keras.layers.LSTM(8, unroll=True, name="lstm")(inp)
    out = keras.layers.Dense(4, activation="softmax", name="probs")(h)
    keras.Model(inp, out, name="lstm_net").save(tmp / "m.keras")
    np.save(tmp / "x.npy", np.random.default_rng(0).normal(size=(16, 12, 6)).astype(np.float32))
    r = CliRunner().invoke(cli, ["trace", str(tmp / "m.keras"), "--data", str(tmp / "x.npy"),
                                 "--out", str(tmp / "t.h5"), "-q", "--store-samples", "4"])
    assert r.exit_code == 0, r.stderr
    return tmp / "t.h5"


@sync
async def test_an_lstm_shows_a_summary_of_its_ops_and_its_histogram_first(tmp_path: Path) -> None:
    app = create_app(_lstm_trace(tmp_path))
    lstm = next(i for i, r in enumerate(app.trace.layers) if r.name == "lstm")
    n_ops = len(app.trace.layers[lstm].ops)
    assert n_ops > 100  # unrolled: each time step is a dozen ops
    async with app.run_test(size=(120, 40)) as pilot:
        app.screen.open_detail(lstm)  # type: ignore[attr-defined]
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, LayerDetailScreen)
        head = _text(app, "#detail-head")
        assert f"{n_ops} ops: " in head and "FULLY_CONNECTED" in head
        assert head.count("  op ") == WORST_OPS  # the lowest local SQNR ones, not all of them
        assert len(head.splitlines()) < 15  # it was n_ops lines before any histogram
        hist = app.screen.query_one("#hist", Static)
        assert "float vs int8 values" in _text(app, "#hist")
        assert hist.region.y < 20  # on the first screen
        assert _text(app, "#ops-all").strip() == ""
        await pilot.press("o")
        await pilot.pause()
        listed = _text(app, "#ops-all")
        assert listed.startswith(f"every op of lstm ({n_ops})")
        assert listed.count("  op ") == n_ops
        await pilot.press("o")
        await pilot.pause()
        assert _text(app, "#ops-all").strip() == ""
        app.screen.dismiss()
        await pilot.pause()
        probs = next(i for i, r in enumerate(app.trace.layers) if r.name == "probs")
        assert len(app.trace.layers[probs].ops) <= FOLD_OPS
        app.screen.open_detail(probs)  # type: ignore[attr-defined]
        await pilot.pause()
        assert not app.screen.check_action("all_ops", ())  # nothing folded: no `o`
