# One place for the two README commands.  `make demo` sets everything up and runs the demo;
# `make test` runs the test suite.  TORCH_SPEC pins the CPU build that lies on this machine's
# disk (pip picks it from its find-links); elsewhere override it, e.g.
#   make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/neuroprune demo --out neuroprune-out --overwrite

test: setup
	$(BIN)/python -m pytest -q -n 2

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) neuroprune-out .pytest_cache .hypothesis
