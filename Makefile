PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint format clean wipe-local-state bench system-packages

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "scheduler-app needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[bench]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/scheduler-app serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-test system-packages
	$(BIN)/pytest

# Debian packages some tests use: chromium (the dashboard's browser tests) and prometheus (its
# promtool checks docs/alerts.yml). Installed when missing and apt-get can run; where they cannot
# be, those tests skip saying so (and fail under CI=true).
SYSTEM_PACKAGES := chromium:chromium prometheus:promtool
system-packages:
	@missing=""; for entry in $(SYSTEM_PACKAGES); do \
		command -v "$${entry#*:}" >/dev/null 2>&1 || missing="$$missing $${entry%%:*}"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing$$missing (apt-get)"; \
			{ apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
			  { apt-get update -q >/dev/null 2>&1 && \
			    apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1; }; } || \
			echo "could not install$$missing: the tests that need them will skip"; \
		else \
			echo "not installing$$missing (needs root and apt-get): the tests that need them will skip"; \
		fi; \
	fi

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy examples/fastapi_app/app.py

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Every benchmark scenario on SQLite and PostgreSQL (bench/README.md); needs wrk
# (apt-get install wrk) and BENCH_POSTGRES_URL or PostgreSQL on 127.0.0.1:5432.
# BENCH_QUICK=1 for smaller numbers. Not part of `make test`.
bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench all

# Build and tool caches only: never the service's data in var/.
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info

# Deletes var/: the SQLite database (every reminder and job), the generated admin token, the
# outbox and the reports. Asks first; CONFIRM=yes skips the question.
wipe-local-state:
	@if [ "$(CONFIRM)" != yes ]; then \
		printf 'Delete var/ (database, admin token, outbox, reports)? [y/N] '; \
		read answer; [ "$$answer" = y ] || [ "$$answer" = yes ] || { echo kept; exit 1; }; \
	fi
	rm -rf var
