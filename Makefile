# Two commands: `make run` starts the service on the embedded default; `make test` passes the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# Two test processes: most tests wait on real servers and processes, so two share two cores well
# (22 minutes for the suite on two cores, against 34 in one process).
PYTEST_WORKERS ?= 2

.PHONY: run demo test test-fast test-acceptance lint format services install install-dev browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/backburner serve

# The emulator and a server on ports 8766 and 8290, a batch per provider, sample files, a search.
demo: install
	$(BIN)/backburner demo

services:
	@bash scripts/ensure-services.sh

# The dashboard's browser test drives Debian's Chromium; nothing is downloaded by a test tool.
# Two `make test` at once (two checkouts) install it one after the other, not both at once.
HAVE_BROWSER := command -v chromium >/dev/null && command -v chromedriver >/dev/null
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=600
browser:
	@$(HAVE_BROWSER) || flock /tmp/backburner-browser-install.lock sh -c '$(HAVE_BROWSER) || \
	  ($(APT_GET) update && $(APT_GET) install -y chromium chromium-driver)'

test: install-dev services browser
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-fast: install-dev services
	$(BIN)/pytest -n $(PYTEST_WORKERS) -m "not acceptance" $(PYTEST_ARGS)

test-acceptance: install-dev services browser
	$(BIN)/pytest -n $(PYTEST_WORKERS) -m acceptance $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: install-dev
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
