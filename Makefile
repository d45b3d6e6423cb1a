# Task runner. The README's two commands are `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DATA ?= data/synthetic
DEMO_OUT ?= results/demo
# ImageNet weights for the MobileNet notebook: "imagenet" (needs internet once),
# "none", or a path to a weights file.
WEIGHTS ?= imagenet

.PHONY: setup demo test lint clean-demo

$(BIN)/python:
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

# Command 2: the test suite (unit, integration, notebook smoke runs).
test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check pcam tests benchmarks notebooks

clean-demo:
	rm -rf $(DEMO_OUT) $(DEMO_DATA)
