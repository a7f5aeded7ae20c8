# Every target builds the virtualenv it needs, so a fresh clone works as is.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint clean

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

demo: $(VENV)/.installed  ## rotate demo users' keys on a local moto server
	$(BIN)/python tools/demo.py

test: $(VENV)/.installed  ## run the test suite
	$(BIN)/python -m pytest

lint: $(VENV)/.installed  ## static checks
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) dist .pytest_cache .ruff_cache
