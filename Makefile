# sslib developer commands. Each target creates .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install dev pretrain test lint format typecheck coverage docs bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e .
	touch $@

$(VENV)/.dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev,docs,bench]'
	touch $(VENV)/.base $@

install: $(VENV)/.base

dev: $(VENV)/.dev

## Train MIRA on the embedded digits dataset (offline, CPU), then print the online kNN top-1.
pretrain: $(VENV)/.base
	$(PY) scripts/pretrain.py

LINTED := sslib scripts tests benchmarks examples hubconf.py
MYPY := $(VENV)/bin/mypy

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/lint-imports
	$(MYPY)

## mypy over sslib, as configured in pyproject.toml's [tool.mypy].
typecheck: $(VENV)/.dev
	$(MYPY)

## Rewrite the sources in the project's format (ruff format) and apply ruff's safe fixes.
format: $(VENV)/.dev
	$(VENV)/bin/ruff format $(LINTED)
	$(VENV)/bin/ruff check --fix $(LINTED)

## The test command CI runs: lint, format, layer (import-linter) and type checks, the test suite, and the
## strict docs build.
test: $(VENV)/.dev
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/lint-imports
	$(MYPY)
	$(PY) -m pytest
	$(VENV)/bin/mkdocs build --strict --site-dir $(VENV)/site

## Line and branch coverage of the test suite ([tool.coverage] in pyproject.toml): a terminal report and
## htmlcov/index.html. TESTS= runs a part of the suite, e.g. make coverage TESTS=tests/core/labelers/test_labelers.py
TESTS ?=
coverage: $(VENV)/.dev
	$(PY) -m pytest --cov --cov-report=term:skip-covered --cov-report=html $(TESTS)

docs: $(VENV)/.dev
	$(VENV)/bin/mkdocs serve

## The quick benchmarks: labelers and the on-device multi-crop (docs/benchmarks.md has the others).
bench: $(VENV)/.dev
	$(PY) benchmarks/labelers.py
	$(PY) benchmarks/augment.py

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache htmlcov .coverage .coverage.*
