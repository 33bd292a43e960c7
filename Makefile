# AI Mass. `make demo` and `make test` set everything up themselves: a virtualenv with the pinned
# packages (requirements.lock), and Debian's clickhouse-server when no ClickHouse binary is found.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DURATION ?= 60
PYTEST_ARGS ?=

.PHONY: install clickhouse demo test test-unit bench clean stack-up stack-down

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

# ClickHouse: AIMASS_CLICKHOUSE_BIN, or clickhouse-server / clickhouse on PATH, or Debian's package
# installed here when we are root.
clickhouse:
	@if [ -n "$$AIMASS_CLICKHOUSE_BIN" ]; then \
	  test -x "$$AIMASS_CLICKHOUSE_BIN" || { echo "AIMASS_CLICKHOUSE_BIN=$$AIMASS_CLICKHOUSE_BIN is not an executable file" >&2; exit 1; }; \
	elif command -v clickhouse-server >/dev/null || command -v clickhouse >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's clickhouse-server …"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null; \
	else \
	  echo "No ClickHouse server found. Either install Debian's package as root" >&2; \
	  echo "  (sudo apt-get install -y clickhouse-server clickhouse-client)," >&2; \
	  echo "or set AIMASS_CLICKHOUSE_BIN to a 'clickhouse' binary (e.g. from clickhouse.com)." >&2; \
	  exit 1; \
	fi

demo: install clickhouse
	$(VENV)/bin/aimass demo --duration $(DURATION)

test: install clickhouse
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

stack-up: install clickhouse
	$(VENV)/bin/aimass stack up

stack-down: install
	$(VENV)/bin/aimass stack down

clean:
	rm -rf $(VENV) .aimass .pytest_cache
# The long chaos run: five minutes of kills, rebalances and ClickHouse outages (make test runs 40 s of it).
chaos: install clickhouse
	AIMASS_CHAOS_SECONDS=$${AIMASS_CHAOS_SECONDS:-300} $(PY) -m pytest tests/chaos -s $(PYTEST_ARGS)

