"""Shared fixtures: the committed fixture trace, and real models traced once per session.

The tiers are folders: ``tests/unit`` needs no TensorFlow (``make test-fast``), ``tests/tf``
builds, converts or traces real models; ``tests/helpers`` holds the modules both import by name.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests" / "helpers"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-long-fuzz", action="store_true", help="run the long fuzz variant")
    parser.addoption("--long-fuzz-every", default="1", metavar="N",
                     help="run every N-th case of each long fuzz kind (default: all)")
    parser.addoption("--run-corpus", action="store_true",
                     help="run every real-model corpus entry, not only the fast subset")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skips = {
        "fuzz_long": (config.getoption("--run-long-fuzz"),
                      "long fuzz: run with --run-long-fuzz (make fuzz)"),
        "corpus": (config.getoption("--run-corpus"),
                   "a slow corpus model: run with --run-corpus (or python bench/corpus.py)"),
    }
    for marker, (wanted, reason) in skips.items():
        if wanted:
            continue
        for item in items:
            if marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def fixture_trace() -> Path:
    """The committed real trace of examples/digits_cnn.py (tests/fixtures/make_fixtures.py)."""
    return FIXTURES / "digits.h5"


@pytest.fixture(scope="session")
def digits_model():  # type: ignore[no-untyped-def]
    """The example CNN, trained briefly on scikit-learn's digits."""
    import digits_cnn

    return digits_cnn.build(epochs=3, seed=0)


@pytest.fixture(scope="session")
def digits_data():  # type: ignore[no-untyped-def]
    import digits_cnn

    return digits_cnn.data()


@pytest.fixture(scope="session")
def deep_model():  # type: ignore[no-untyped-def]
    """The deep residual example (12 blocks), trained briefly."""
    import deep_residual

    return deep_residual.build(epochs=4)


@pytest.fixture(autouse=True)
def _fast_tier_imports_no_tensorflow(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """`make test-fast` promises tests without TensorFlow: a test that imports it fails."""
    before = "tensorflow" in sys.modules
    yield
    if os.environ.get("QDEBUG_TEST_FAST") == "1" and not before and "tensorflow" in sys.modules:
        pytest.fail(f"{request.node.nodeid} imported TensorFlow: mark it `@pytest.mark.tf`")
