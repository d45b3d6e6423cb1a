# Task runner. The README's two commands are `make demo` and `make test`.
# Python for .venv: the first of python3.11, 3.12, 3.13 that runs (the pinned
# wheels exist for these; a pyenv shim without that version does not run).
# `make setup PYTHON=...` chooses another.
PYTHON ?= $(firstword $(foreach v,3.11 3.12 3.13,$(shell python$(v) -c "" >/dev/null 2>&1 && echo python$(v))))
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DATA ?= data/synthetic
DEMO_OUT ?= results/demo
# ImageNet weights for the MobileNet notebook: the shipped alpha-0.5 file
# (offline; pcam/assets/README.md), "imagenet" (Keras' own, needs internet once),
# "none", or a path to a weights file.
WEIGHTS ?= pcam/assets/mobilenet_v1_0.5_imagenet_no_top.h5
LAB_PORT ?= 8888
TENSORBOARD_PORT ?= 6006

# Test workers (pytest-xdist): one per usable core by default.
TEST_WORKERS ?= auto

.PHONY: setup demo test test-fast lint lab tensorboard clean-demo

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "error: no python3.11, python3.12 or python3.13 found; install one or pass make setup PYTHON=/path/to/python3" >&2; exit 2; }
	@$(PYTHON) -c "" >/dev/null 2>&1 || { echo "error: $(PYTHON) does not run (not installed, or a pyenv shim for a version that is not active); pass make setup PYTHON=/path/to/python3" >&2; exit 2; }
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' \
		|| { echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); the pinned packages need 3.11 to 3.13" >&2; exit 2; }
	@echo "setup: making $(VENV) with $(PYTHON) (Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'))"
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.installed

# Command 1: both notebooks, top to bottom, on built-in synthetic data (a few minutes on a CPU).
demo: setup
	$(BIN)/python -m pcam demo --data-dir $(DEMO_DATA) --out $(DEMO_OUT) --weights $(WEIGHTS)

# Command 2: the test suite (unit, integration, notebook smoke runs), in parallel.
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# The quick loop while editing: everything but the tests marked slow (notebook runs,
# training, the browser, races and kills of real processes), with a tenth of the
# property tests' examples (Hypothesis profile "quick", tests/conftest.py).
test-fast: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow" --hypothesis-profile=quick

lint: setup
	$(BIN)/ruff check pcam tests benchmarks notebooks

# JupyterLab on the notebooks and the executed ones under results/, with the
# project's kernel. Open the printed http://127.0.0.1:...?token=... URL.
lab: setup
	$(BIN)/jupyter lab --no-browser --ip=127.0.0.1 --port=$(LAB_PORT) --ServerApp.root_dir="$(CURDIR)" \
		$(if $(filter 0,$(shell id -u)),--allow-root)

# TensorBoard on the training logs (results/<run>/tensorboard/).
tensorboard: setup
	$(BIN)/tensorboard --logdir results --host 127.0.0.1 --port $(TENSORBOARD_PORT)

clean-demo:
	rm -rf $(DEMO_OUT) $(DEMO_DATA)
