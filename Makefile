# Two commands on a fresh clone:  make demo   |   make test
# Both create ./.venv and install the project into it on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

.PHONY: install demo test lint bench
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/hub demo

test: $(VENV)/.installed
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check hub connectors tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python bench/e2e.py
	$(BIN)/python bench/burst.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/deliver.py
	$(BIN)/python bench/poll.py
