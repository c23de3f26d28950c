# marketfeed: `make run` streams live Binance events to stdout, `make test` runs the tests,
# `make bench` runs the benchmarks. The only requirement is Python 3.11 or newer on PATH: each target
# creates the project's virtual environment (.venv) on first use and reinstalls the project into it
# whenever pyproject.toml changes.

SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= examples/marketfeed.toml
PYTEST_ARGS ?=

# the first interpreter on PATH that is Python >= 3.11 (`make PYTHON=/path/to/python3.12` to choose)
ifndef PYTHON
PYTHON := $(shell for p in python3 python3.14 python3.13 python3.12 python3.11; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; \
	then echo $$p; break; fi; done)
endif

.PHONY: help venv run test bench clean demo reliability soak

help:
	@echo "make run     live Binance spot and USD-M to stdout ($(CONFIG))"
	@echo "make test    the test suite (PYTEST_ARGS='-k name' to select)"
	@echo "make bench   every benchmarks/bench_*.py"
	@echo "make venv    create/refresh $(VENV) only"
	@echo "make demo    every venue simulated on loopback, the daemon on them, the live stream (Ctrl-C stops)"
	@echo "make reliability  the whole reliability suite with its slow tests; table in build/reliability-report.md"
	@echo "make soak    minutes against the simulator: memory steady, no lost or duplicated events (SOAK_SECONDS=180)"

venv: $(STAMP)

# A venv made by an older Python (or a broken one) is replaced; the stamp records the last install.
$(STAMP): pyproject.toml setup.py marketfeed/_book.c marketfeed/_checksum.c adapters/binance/_frames.c marketfeed/_json.h marketfeed/_capture.c marketfeed/_events.c
	@if [ -z "$(PYTHON)" ]; then echo "marketfeed needs Python 3.11 or newer on PATH (python3, python3.11, ...)" >&2; exit 1; fi
	@if ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then \
		echo "creating $(VENV) with $$(command -v $(PYTHON)) ($$($(PYTHON) -V))"; \
		rm -rf $(VENV); \
		$(PYTHON) -m venv $(VENV) || { echo "'$(PYTHON) -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }; \
	fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/marketfeed run --config $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Byte-compiled first, as an installed package is: with PYTHONDONTWRITEBYTECODE set, every process
# would otherwise compile the project anew (~50 ms of each whole-process replay).
bench: $(STAMP)
	@$(BIN)/python -m compileall -q marketfeed adapters >/dev/null
	@shopt -s nullglob; scripts=(benchmarks/bench_*.py); \
	if [ $${#scripts[@]} -eq 0 ]; then echo "no benchmarks/bench_*.py found" >&2; exit 1; fi; \
	for script in "$${scripts[@]}"; do echo "== $$script"; $(BIN)/python "$$script" || exit 1; done

# the Binance spot books come from the real recording beside the checkout when there is one
DEMO_CAPTURE ?= ../shared/captures/binance/spot-btcusdt-20240808.capture.jsonl.gz
DEMO_ARGS ?=

demo: $(STAMP)
	$(BIN)/python -m marketfeed.simulate.demo --capture $(DEMO_CAPTURE) $(DEMO_ARGS)

reliability: $(STAMP)
	$(BIN)/python -m pytest -q tests/reliability --slow $(PYTEST_ARGS)

soak: $(STAMP)
	$(BIN)/python tests/reliability/soak.py

clean:
	rm -rf .pytest_cache build dist *.egg-info
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
