# paybus — the two commands a newcomer needs are `make run` and `make test`.
# Every target creates .venv and installs the project into it when missing.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.paybus-installed

.PHONY: run test test-fast bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## the bus on the embedded default, with demo traffic (Ctrl-C to stop)
	$(VENV)/bin/paybus dev

test: $(STAMP)  ## the whole suite: unit, integration (embedded broker) and e2e
	$(PY) -m pytest

test-fast: $(STAMP)  ## unit tests only
	$(PY) -m pytest tests/unit

bench: $(STAMP)  ## benchmarks (figures, not tests)
	$(VENV)/bin/paybus bench

lint: $(STAMP)
	$(VENV)/bin/ruff check streams connectors schemas tests
	$(VENV)/bin/ruff format --check streams connectors schemas tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .paybus
