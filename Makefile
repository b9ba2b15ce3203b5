# One place for the two README commands.  `make demo` sets everything up and runs the demo;
# `make test` runs the test suite.  TORCH_SPEC pins the CPU build that lies on this machine's
# disk (pip picks it from its find-links); elsewhere override it, e.g.
#   make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

# `make test-vision` runs the public-architecture coverage (torchvision, timm, Torch-Pruning) in its
# own environment VISION_VENV, so the main one never gets torchvision (whose CUDA wheel breaks
# `import transformers` next to the CPU torch). A constraints file holds torch at TORCH_SPEC's
# version: pip may not replace it.
VISION_VENV ?= .venv-vision
VISION_BIN := $(VISION_VENV)/bin
TORCH_PIN := $(firstword $(TORCH_SPEC))

.PHONY: setup demo test test-dist test-keras-jax bench bench-distributed clean test-vision bench-architectures

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

# the torch.distributed tests: each launches torchrun with 2-3 CPU processes (gloo) under a timeout
test-dist: setup
	$(BIN)/python -m pytest -q -m dist tests/test_distributed.py tests/test_distributed_prune.py tests/test_distributed_sharding.py tests/test_distributed_recover.py

$(VISION_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VISION_VENV)
	$(VISION_BIN)/python -c "import torch" 2>/dev/null || $(VISION_BIN)/pip install --quiet $(TORCH_SPEC)
	echo "$(TORCH_PIN)" > $(VISION_VENV)/constraints.txt
	$(VISION_BIN)/pip install --quiet -c $(VISION_VENV)/constraints.txt -e ".[vision]"
	touch $@

test-vision: $(VISION_VENV)/.installed
	$(VISION_BIN)/python -m pytest -q -n 2 -m "" tests/test_public_architectures.py

bench-architectures: $(VISION_VENV)/.installed
	$(VISION_BIN)/python benchmarks/architectures.py

bench: setup
	$(BIN)/python benchmarks/run_all.py

bench-distributed: setup
	$(BIN)/python benchmarks/distributed.py

clean:
	rm -rf $(VENV) $(VISION_VENV) neuroprune-out .pytest_cache .hypothesis

# The Keras frontend's tests on Keras's jax backend (the default suite runs them on torch).
test-keras-jax: setup
	$(BIN)/pip install --quiet -e ".[keras-jax]"
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q tests/test_keras_graph.py tests/test_keras_surgery.py \
		tests/test_keras_backend.py tests/test_keras_jax.py tests/test_keras_recurrent.py tests/test_keras_attention.py \
		tests/test_keras_recover.py tests/test_keras_export.py tests/test_keras_norms.py \
		tests/test_keras_applications.py tests/test_keras_more_layers.py tests/test_keras_patches.py -m "slow or not slow"
