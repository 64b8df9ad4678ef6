"""The arrows point one way: only qdebug.tracer may import TensorFlow, Keras or LiteRT."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import qdebug

HEAVY = ("tensorflow", "keras", "tf_keras", "ai_edge_litert", "tensorflow_model_optimization")


def _modules_outside_tracer() -> list[str]:
    names = ["qdebug"]
    for info in pkgutil.walk_packages(qdebug.__path__, "qdebug."):
        if not info.name.startswith("qdebug.tracer") and info.name != "qdebug.__main__":
            names.append(info.name)
    return names


def _heavy_after(setup: str) -> list[str]:
    """Run ``setup`` in a fresh interpreter; the heavy modules it left in ``sys.modules``."""
    code = (
        f"{setup}\nimport json, sys\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def test_readers_never_import_tensorflow() -> None:
    modules = _modules_outside_tracer()
    assert "qdebug.store.reader" in modules and "qdebug.metrics" in modules
    assert "qdebug.shards.merge" in modules and "qdebug.shards.local" in modules
    setup = f"import importlib\nfor m in {modules!r}: importlib.import_module(m)\nimport qdebug"
    assert _heavy_after(setup) == []


def test_opening_a_trace_needs_no_tensorflow(fixture_trace) -> None:  # type: ignore[no-untyped-def]
    setup = (
        f"import qdebug\nt = qdebug.open({str(fixture_trace)!r})\n"
        "t.layer_metrics(); t.activation('relu1', 0)\n"
        "from qdebug.output.report_json import report_json; report_json(t)"
    )
    assert _heavy_after(setup) == []


def test_cli_report_does_not_import_tensorflow(fixture_trace) -> None:  # type: ignore[no-untyped-def]
    setup = (
        f"from qdebug.cli import cli\ntry:\n    cli(['report', {str(fixture_trace)!r}, "
        "'--format', 'json'])\nexcept SystemExit:\n    pass"
    )
    assert _heavy_after(setup) == []
