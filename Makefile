# Closeloop: two commands for a newcomer (`make demo`, `make test`), a few for developers.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format bench-ingest bench-writeback bench-dispatch bench-metrics bench-scaleout clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Closeloop needs Python 3.11 or newer")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	DEBUG=1 $(PY) manage.py demo

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench-ingest: install
	$(PY) bench/ingest.py

bench-dispatch: install
	$(PY) bench/dispatch.py

bench-writeback: install
	$(PY) bench/writeback.py

bench-miniapp: install
	$(PY) bench/miniapp.py

bench-metrics: install
	$(PY) bench/metrics.py

# Needs PostgreSQL (DATABASE_URL names the server) and Redis (BENCH_REDIS_URL, default db 14).
bench-scaleout: install
	$(PY) bench/scaleout.py

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache *.egg-info
