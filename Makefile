# One command sets up and runs the main job; one sets up and runs the tests.
SHELL  := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: setup run test test-fast bench docs constraints clean

setup: $(STAMP)

# constraints.txt pins every dependency to the versions the suite passed with.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## Train the quickstart on built-in data, then draw Grad-CAM heatmaps for it.
run: setup
	@set -eo pipefail; RUN=$$($(BIN)/nnrun train configs/quickstart.yaml --verbose | tee /dev/stderr | tail -n 1); \
	echo "run directory: $$RUN"; \
	$(BIN)/nnrun explain "$$RUN" --method gradcam

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python scripts/bench.py

## Build the documentation site into site/ (broken links or missing pages fail it).
docs: setup
	$(BIN)/mkdocs build --strict

## Pin constraints.txt to this venv's versions (after `make test` passed with them).
constraints: setup
	@{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) runs .pytest_cache
