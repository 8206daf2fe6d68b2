PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt "torch==2.13.0" "setuptools>=77" wheel
	$(PIP) install --quiet -c constraints.txt --no-build-isolation -e ".[dev,data,onnx]"
	touch $(STAMP)

run: setup
	$(BIN)/lstmkit charlm train --out runs/charlm --overwrite

test: setup
	$(BIN)/python -m pytest -q -n auto --dist loadfile
	LSTMKIT_ENGINE=reference $(BIN)/python -m pytest -q -n auto --dist loadfile tests/test_layers.py tests/test_cells.py tests/keras/test_keras.py

test-fast: setup
	$(BIN)/python -m pytest -q -n auto --dist loadfile -m "not slow"

lint: setup
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

bench: setup
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache runs
