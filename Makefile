# The two commands a new user needs: `make demo` and `make test`.
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit rules docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m bghttp.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The Prometheus rules' promtool checks and unit tests run in `test` as
# tests/prometheus/test_rules.py (skipped without promtool, failed when CI=true).
test: lint
	$(BIN)/pytest -q -ra

unit: $(STAMP)
	$(BIN)/pytest -q -m "not rabbitmq and not slow"

rules:
	promtool check rules docker/prometheus/bghttp-rules.yml
	promtool test rules docker/prometheus/bghttp-rules.test.yml

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bghttp-store site
