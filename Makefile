# convforge — `make demo` and `make test` work on a fresh clone (they run `setup` first).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.convforge-installed
PYTEST_ARGS ?=
OUT    ?= out

.PHONY: help setup demo test test-slow bench lint format clean

help:
	@echo "make setup      create $(VENV) and install convforge with everything from PyPI (no root)"
	@echo "make demo       build/quantize/run the shipped detector on a sample image"
	@echo "make test       the test suite (not the 'slow' simulations)"
	@echo "make test-slow  only the long simulations and trainings"
	@echo "make bench      benchmarks; figures written to benchmarks/results/*.json"
	@echo "make lint       ruff"
	@echo "make clean      remove build outputs (keeps $(VENV))"

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python >= 3.11) on PATH, or run: make PYTHON=python3.12 ..."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# One pip call: yowasp packages installed separately downgrade wasmtime (recompile).
	$(BIN)/python -m pip install -q -e ".[hw,board,hls,dev]"
	# deepforest (below, --no-deps) would fail the check when setup re-runs in an existing venv
	$(BIN)/python -m pip uninstall -q -y deepforest
	$(BIN)/python -m pip check
	# Real aerial tree-crown data ships inside this wheel. convforge only reads its data
	# files and never imports it, so its (heavy) dependencies are deliberately not installed.
	$(BIN)/python -m pip install -q --no-deps deepforest==2.1.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/convforge demo --out $(OUT)/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --out benchmarks/results

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .

clean:
	rm -rf build $(OUT) sim_build benchmarks/results .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
