# The two commands of the README: `make run` and `make test`. Both create the virtual
# environment on first use and re-install only when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench clean chaos limits

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/opsflow migrate
	$(BIN)/opsflow dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

# The reliability suite at full size: the crash and outage scenarios (tests/chaos), and
# Temporal's limits at the issue's sizes (tests/test_limits.py: 5,000 updates, a 2,000-turn
# transcript, 50,000 events to one customer). `make test` runs both short.
chaos: $(STAMP)
	OPSFLOW_CHAOS_SIZE=full $(BIN)/pytest -p no:cacheprovider tests/chaos

limits: $(STAMP)
	OPSFLOW_CHAOS_SIZE=full $(BIN)/pytest -p no:cacheprovider tests/test_limits.py

clean:
	rm -rf $(VENV) .opsflow .mypy_cache .pytest_cache .ruff_cache
