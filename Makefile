# StreamLab. Every target builds the environment first if it is missing (env/setup.sh is a no-op
# when nothing changed), so `make reproduce` and `make test` work on a fresh clone.
#   make reproduce [EXP=name|all] [PRESET=smoke|cpu|paper]   reproduce tables into outputs/
#   make test                                                lint, then the whole suite, notebooks included
#   make lint                                                ruff (settings in pyproject.toml)
#   make lab                                                 JupyterLab on notebooks/
#   make gpu-dry-run / gpu-wheels / gpu-publish DIR=...      the GPU pass (env/gpu/README.md)
SHELL := /bin/bash
VENV ?= .venv
EXP ?= all
PRESET ?= cpu
STREAMLAB := $(VENV)/bin/streamlab
PYTEST_ARGS ?=

.PHONY: setup lint reproduce test test-gpu test-slow lab runs notebooks-sync gpu-wheels gpu-dry-run gpu-publish

setup:
	@VENV=$(VENV) bash env/setup.sh

reproduce: setup
	$(STREAMLAB) reproduce $(EXP) --preset $(PRESET)

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-gpu: setup
	$(VENV)/bin/python -m pytest -m gpu $(PYTEST_ARGS)

test-slow: setup
	$(VENV)/bin/python -m pytest -m slow $(PYTEST_ARGS)

# --allow-root only where we are root (containers, our CI machines); Jupyter refuses root otherwise.
lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

runs: setup
	$(STREAMLAB) runs

# After editing a notebook's .py (or .ipynb), bring its pair back in step.
notebooks-sync: setup
	$(VENV)/bin/jupytext --sync notebooks/*/*.py
	$(VENV)/bin/python -m shared.notebook clean notebooks/*/*.ipynb

# The GPU pass (env/gpu/README.md): try it here, fetch the wheels the GPU machine lacks, publish what it returned.
gpu-dry-run: setup
	PYTHON=$(VENV)/bin/python bash env/gpu/pass.sh --dry-run

gpu-wheels: setup
	PYTHON=$(VENV)/bin/python bash env/gpu/wheels.sh

gpu-publish: setup
	@test -n "$(DIR)" || { echo "make gpu-publish: set DIR to the folder the GPU pass returned" >&2; exit 2; }
	$(VENV)/bin/python -m shared.gpu_publish "$(DIR)"
