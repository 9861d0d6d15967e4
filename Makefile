VENV ?= .venv
PY := $(VENV)/bin/python
# The Python the venv is made from.
PYTHON ?= python3
# What `make setup` installs as torch (pip arguments). From PyPI on Linux x86_64,
# torch==2.13.0 is the CUDA build (it runs on CPUs too); for the CPU build:
#   make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# To keep a torch you have: TORCH= skips it. A new venv then sees the packages of
# $(PYTHON) (a system or conda Python), an existing venv keeps its own:
#   make setup TORCH= PYTHON=/path/to/python     or     make setup TORCH= VENV=~/venvs/torch
TORCH ?= torch==2.13.0
# Overrides for `make train`, e.g. make train ARGS="trainer.max_epochs=20 optim.lr=0.01"
ARGS ?=

.PHONY: setup train test lint bench docs clean

# PyTorch-Ignite's source distribution (its examples/ and tests/), which the compatibility
# tests run with distengine; downloaded once, never committed (tests/ignite_compat/).
IGNITE_SRC := $(VENV)/ignite-src
IGNITE_SDIST := $(IGNITE_SRC)/pytorch_ignite-0.5.5.tar.gz

setup: $(VENV)/.installed $(IGNITE_SDIST)

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(if $(strip $(TORCH)),,--system-site-packages) $(VENV)
	$(if $(strip $(TORCH)),$(PY) -m pip install --quiet $(TORCH),$(PY) -c "import torch" || \
	  { echo "make setup TORCH=: $(VENV) sees no torch to keep (see the Makefile)"; exit 1; })
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c "import torch; print('torch', torch.__version__, '(CUDA build)' if torch.version.cuda else '(CPU build)')"
	touch $@

$(IGNITE_SDIST): | $(VENV)/.installed
	$(PY) -m pip download --quiet --no-deps --no-binary :all: --dest $(IGNITE_SRC) pytorch-ignite==0.5.5
	test -f $@

train: setup
	$(PY) -m launch $(ARGS)

# Two pytest-xdist workers: half of a serial run's wall time is ranks and launchers waiting
# (timeouts, signals, rendezvous), so two at a time finish in about 3/4 of the time on 2 cores.
TEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) benchmarks/run_all.py

docs: setup
	$(PY) tools/api_reference.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
