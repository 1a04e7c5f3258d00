# The two commands of the README: `make run` and `make test`. Both create the virtual
# environment on first use and re-install only when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench clean chaos

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

# The reliability suite at full size (tests/chaos, and tests/test_limits.py's sizes of
# thousands of updates and events); `make test` runs both short.
chaos: $(STAMP)
	OPSFLOW_CHAOS_SIZE=full $(BIN)/pytest -p no:cacheprovider tests/chaos tests/test_limits.py

clean:
	rm -rf $(VENV) .opsflow .mypy_cache .pytest_cache .ruff_cache
