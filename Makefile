# greendiff: `make demo` and `make test` set up .venv by themselves on a fresh clone.
# GPU users: override the PyTorch pin or index, e.g.
#   make TORCH_VERSION=2.13.0 TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 test
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.greendiff-installed
TORCH_PIP_ARGS := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)

.PHONY: setup demo test bench bench-quality bench-compress bench-tune bench-plan bench-parallel clean

setup: $(STAMP)

# PyTorch first, pinned, so that no later step resolves "torch" to a multi-GB CUDA wheel.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The green recipe on the bundled MNIST, class-conditional (tiny UNet, 16x16, 1,200 steps; previews one row per
# digit at the default guidance 2): ~8-10 min on 2 CPU cores.
demo: $(STAMP)
	$(BIN)/greendiff train --preset tiny --max-steps 1200 --name demo --conditioning class \
		--set run.sample_every=400 --set run.checkpoint_every=400

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Speed benchmarks (minutes); bench-quality: the quick energy-to-quality proof and early stopping (2 CPU cores);
# the full proof runs in sittings: python bench/energy_to_quality.py --full --budget-minutes 55 (rerun to continue).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python bench/tracker_overhead.py --write-benchmarks
	$(BIN)/python bench/train_speed.py --write-benchmarks
	$(BIN)/python bench/loop_overhead.py --write-benchmarks

bench-quality: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python bench/energy_to_quality.py --quick --write-benchmarks
	$(BIN)/python bench/early_stopping.py --write-benchmarks

# Pruning, a distilled student and step distillation against one parent (~1 h on 2 CPU cores).
bench-compress: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	$(BIN)/python bench/compression.py --write-benchmarks

# Tuning with and without pruning; the tuned config against the default green config (~40 min on 2 CPU cores).
bench-plan: $(STAMP)
	$(BIN)/python bench/carbon_windows.py --write-benchmarks
	$(BIN)/python bench/carbon_windows.py --every-hours 3 --write-benchmarks
	$(BIN)/python bench/forecast_accuracy.py --write-benchmarks

bench-parallel: $(STAMP)
	$(BIN)/python bench/parallel.py --write-benchmarks
	$(BIN)/python bench/concurrency.py --write-benchmarks

bench-tune: $(STAMP)
	$(BIN)/python bench/tuning.py --write-benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
