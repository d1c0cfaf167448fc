# StreamLab. Every target builds the environment first if it is missing (env/setup.sh is a no-op
# when nothing changed), so `make reproduce` and `make test` work on a fresh clone.
#   make reproduce [EXP=name|all] [PRESET=smoke|cpu|paper]   reproduce tables into outputs/
#   make test                                                the whole suite, notebooks included
#   make lab                                                 JupyterLab on notebooks/
SHELL := /bin/bash
VENV ?= .venv
EXP ?= all
PRESET ?= cpu
STREAMLAB := $(VENV)/bin/streamlab
PYTEST_ARGS ?=

.PHONY: setup reproduce test test-gpu test-slow lab runs notebooks-sync clean-outputs

setup:
	@VENV=$(VENV) bash env/setup.sh

reproduce: setup
	$(STREAMLAB) reproduce $(EXP) --preset $(PRESET)

test: setup
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
