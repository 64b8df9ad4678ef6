# qdebug — `make demo` and `make test` set up .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint unit bench fuzz clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[trace,dev]'
	touch $(STAMP)

## demo: train a small CNN on bundled digits, trace it, show the result
demo: $(STAMP)
	$(BIN)/python examples/demo.py

## test: lint, type-check and run the whole test suite
test: lint unit

lint: $(STAMP)
	$(BIN)/ruff check qdebug tests examples bench
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

## test-fast: the tests that need no TensorFlow (store, reports, diff, viewer, hostile traces)
test-fast: $(STAMP)
	QDEBUG_TEST_FAST=1 $(BIN)/python -m pytest -n 2 -q tests/unit

## bench: speed and memory ratios (see bench/README.md)
bench: $(STAMP)
	$(BIN)/python bench/run.py

## fuzz: the long fuzz variant
fuzz: $(STAMP)
	$(BIN)/python -m pytest -q -rP -n 2 tests/unit/test_fuzz.py --run-long-fuzz -k long

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
