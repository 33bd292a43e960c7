# AI Mass. `make demo` and `make test` set everything up themselves: a virtualenv with the pinned
# packages (requirements.lock), and Debian's clickhouse-server when no ClickHouse binary is found.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DURATION ?= 60
PYTEST_ARGS ?=

.PHONY: install clickhouse stunnel mosquitto demo test test-unit bench chaos clean stack-up stack-down deploy-up deploy-down deploy-env images

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

# stunnel (Debian's stunnel4): the TLS terminator the Kafka TLS test puts in front of the broker, which has
# no working TLS of its own (tests/integration/test_kafka_tls.py; skipped when it is missing).
stunnel:
	@if command -v stunnel4 >/dev/null || command -v stunnel >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's stunnel4 …"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4 >/dev/null; \
	else \
	  echo "stunnel not found: the Kafka TLS test will be skipped (install it: sudo apt-get install -y stunnel4)" >&2; \
	fi

# mosquitto (Debian's): the MQTT broker the gateway's sensor test starts on a free port
# (tests/integration/test_gateway_fleet.py; skipped, saying so, when it is missing).
mosquitto:
	@if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's mosquitto …"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	else \
	  echo "mosquitto not found: the gateway's MQTT test will be skipped (install it: sudo apt-get install -y mosquitto)" >&2; \
	fi

demo: install clickhouse
	$(VENV)/bin/aimass demo --duration $(DURATION)

test: install clickhouse stunnel mosquitto
	$(PY) -m pytest $(PYTEST_ARGS)

# The long chaos run: five minutes of kills, rebalances and ClickHouse outages (make test runs 40 s of it).
chaos: install clickhouse
	AIMASS_CHAOS_SECONDS=$${AIMASS_CHAOS_SECONDS:-300} $(PY) -m pytest tests/chaos -s $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The benchmark suite (about 5 minutes on 2 cores): a table, bench/results/bench.json and bench.png.
# BENCH_ARGS passes options, e.g. BENCH_ARGS="--only detector --threads 1"; bench/gpu.sh runs it on a GPU.
BENCH_ARGS ?=
bench: install clickhouse $(VENV)/.bench-installed
	$(VENV)/bin/aimass bench $(BENCH_ARGS)

$(VENV)/.bench-installed: requirements-bench.lock $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-bench.lock
	@touch $@

stack-up: install clickhouse
	$(VENV)/bin/aimass stack up

stack-down: install
	$(VENV)/bin/aimass stack down

# ---------------------------------------------------------------- a real site (Docker engine needed)
# `make deploy-up` brings up deploy/compose (Kafka, ClickHouse, collector, Jaeger, Prometheus, Grafana and
# the services); PROFILE=gpu runs the CUDA detector instead of the CPU one. The first run writes
# deploy/compose/.env from .env.example with fresh random secrets; edit it for the site.
COMPOSE := docker compose -f deploy/compose/compose.yaml
PROFILE ?=
IMAGE_TAG ?= 0.1.0

deploy-env: deploy/compose/.env

# No prerequisite on .env.example on purpose: a newer example must never overwrite the site's secrets.
deploy/compose/.env:
	@umask 077 && sed \
	  -e "s/^CLICKHOUSE_PASSWORD=.*/CLICKHOUSE_PASSWORD=$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(16))')/" \
	  -e "s/^CLICKHOUSE_SINK_PASSWORD=.*/CLICKHOUSE_SINK_PASSWORD=$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(16))')/" \
	  -e "s/^CLICKHOUSE_READER_PASSWORD=.*/CLICKHOUSE_READER_PASSWORD=$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(16))')/" \
	  -e "s/^AIMASS_REGISTRY_TOKEN=.*/AIMASS_REGISTRY_TOKEN=$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(32))')/" \
	  -e "s/^GRAFANA_ADMIN_PASSWORD=.*/GRAFANA_ADMIN_PASSWORD=$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(12))')/" \
	  -e "s/^KAFKA_CLUSTER_ID=.*/KAFKA_CLUSTER_ID=$$($(PYTHON) -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip(chr(61)))')/" \
	  deploy/compose/.env.example > $@
	@echo "wrote $@ with fresh secrets (Grafana user admin, password in GRAFANA_ADMIN_PASSWORD); review it for the site"

deploy-up: deploy/compose/.env
	$(COMPOSE) $(if $(PROFILE),--profile $(PROFILE)) up -d --build

deploy-down:
	$(COMPOSE) down

images:
	docker build -f docker/Dockerfile -t aimass:$(IMAGE_TAG) .
	docker build -f docker/Dockerfile.gpu -t aimass-gpu:$(IMAGE_TAG) .

clean:
	rm -rf $(VENV) .aimass .pytest_cache
