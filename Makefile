# sslib developer commands. Each target creates .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install dev pretrain test lint format docs bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e .
	touch $@

$(VENV)/.dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev,docs]'
	touch $(VENV)/.base $@

install: $(VENV)/.base

dev: $(VENV)/.dev

## Train MIRA on the embedded digits dataset (offline, CPU), then print the online kNN top-1.
pretrain: $(VENV)/.base
	$(PY) scripts/pretrain.py

LINTED := sslib scripts tests benchmarks examples hubconf.py

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

## Rewrite the sources in the project's format (ruff format) and apply ruff's safe fixes.
format: $(VENV)/.dev
	$(VENV)/bin/ruff format $(LINTED)
	$(VENV)/bin/ruff check --fix $(LINTED)

## The test command CI runs: lint, the test suite, and the strict docs build.
test: $(VENV)/.dev
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(PY) -m pytest
	$(VENV)/bin/mkdocs build --strict --site-dir $(VENV)/site

docs: $(VENV)/.dev
	$(VENV)/bin/mkdocs serve

bench: $(VENV)/.dev
	$(PY) benchmarks/labelers.py

clean:
	rm -rf $(VENV) site .pytest_cache
