# Every target builds the virtualenv it needs, so a fresh clone works as is.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

SIZES  ?= 50 200 400
LATENCY_MS ?= 30

.PHONY: demo test lint bench clean

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

demo: $(VENV)/.installed  ## rotate demo users' keys on a local moto server
	$(BIN)/python tools/demo.py

test: $(VENV)/.installed  ## run the test suite
	$(BIN)/python -m pytest

bench: $(VENV)/.installed  ## rotate SIZES secrets each behind LATENCY_MS per call; print figures
	$(BIN)/python tools/bench.py $(SIZES) --latency-ms $(LATENCY_MS)

lint: $(VENV)/.installed  ## static checks
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) dist .pytest_cache .ruff_cache
