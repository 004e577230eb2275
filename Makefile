# Everything runs from the project's virtualenv, created on first use. `make` alone lists the
# targets (make help).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The local settings file that manage.py and every target below read (docs/CONFIGURATION.md).
ENV_FILE := .env

.DEFAULT_GOAL := help
.PHONY: help run run-api run-fanout run-processor run-relay run-stream migrate topics dlq demo rebuild-feeds infra chaos soak bench bench-stream test test-fast test-packages lint venv clean

## help: list the targets with what each does (what `make` alone does)
help:
	@sed -n 's/^## \([^:]*\): \(.*\)$$/\1|\2/p' $(firstword $(MAKEFILE_LIST)) | awk -F'|' '{ printf "  %-14s %s\n", $$1, $$2 }'

## venv: create .venv and install requirements-dev.txt (every target does it when needed)
venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

## .env: create the local settings file: a random DJANGO_SECRET_KEY and the plain-HTTP local values
$(ENV_FILE): | $(STAMP)
	$(PY) scripts/devstack.py env-file

## run: database, dev broker (if none answers), topics, API, fan-out worker, relay and stream process, in the foreground
run: $(STAMP) $(ENV_FILE)
	$(PY) scripts/devstack.py run

## run-api: only the API under gunicorn, as make run starts it (metrics directory .run/prometheus)
run-api: $(STAMP) $(ENV_FILE)
	$(PY) scripts/devstack.py api

## run-fanout: only the fan-out worker, as make run starts it
## run-processor: the fan-out worker (the same as run-fanout)
run-fanout run-processor: $(STAMP) $(ENV_FILE)
	$(PY) scripts/devstack.py fanout

## run-relay: only the outbox relay, as make run starts it
run-relay: $(STAMP) $(ENV_FILE)
	$(PY) scripts/devstack.py relay

## run-stream: only the stream process (GET /feeds/{id}/stream) under uvicorn on STREAM_PORT, as make run starts it
run-stream: $(STAMP) $(ENV_FILE)
	$(PY) scripts/devstack.py stream

## migrate: create the database if needed, apply migrations and collect static files
migrate: $(STAMP) $(ENV_FILE)
	$(PY) scripts/devstack.py migrate

## topics: create the Kafka topics
topics: $(STAMP) $(ENV_FILE)
	$(PY) manage.py create_topics

## dlq: dead letters; e.g. make dlq ARGS="show 3" or ARGS="replay --all"
ARGS ?= list
dlq: $(STAMP) $(ENV_FILE)
	$(PY) manage.py dlq $(ARGS)

## demo: fill the running system (make run) with demo data; e.g. DEMO_ARGS="--users 10000 --seed 2"
DEMO_ARGS ?=
demo: $(STAMP) $(ENV_FILE)
	$(PY) manage.py seed_demo $(DEMO_ARGS)

## rebuild-feeds: recompute stored feeds; e.g. REBUILD_ARGS="--user 42" or "--all --dry-run"
REBUILD_ARGS ?= --all
rebuild-feeds: $(STAMP) $(ENV_FILE)
	$(PY) manage.py rebuild_feeds $(REBUILD_ARGS)

## infra: PostgreSQL, Kafka, Redis and Prometheus in Docker (compose reads the key from .env)
infra: $(ENV_FILE)
	docker compose up -d postgres kafka redis prometheus

## chaos: the stack under post traffic while workers die, the broker stops and PostgreSQL restarts
CHAOS_SECONDS ?= 120
chaos: $(STAMP)
	$(PY) scripts/chaos.py --seconds $(CHAOS_SECONDS)

## soak: the stack under a steady traffic mix at half its maximum for SOAK_SECONDS; fails on leaks or losses
SOAK_SECONDS ?= 1800
SOAK_WORKERS ?= 1
soak: $(STAMP)
	$(PY) scripts/soak.py --seconds $(SOAK_SECONDS) --workers $(SOAK_WORKERS)

## bench: seed a graph, run the stack with production settings, measure; writes BENCHMARKS.md
bench: $(STAMP)
	$(PY) scripts/bench.py

## bench-stream: BENCH_STREAMS (2000) open streams, one post to all of them; writes its section of BENCHMARKS.md
bench-stream: $(STAMP)
	$(PY) scripts/bench_stream.py

## test: the whole suite against the real PostgreSQL, Redis and a dev broker (installs the Debian packages it uses)
test: $(STAMP) test-packages
	$(VENV)/bin/pytest

## test-fast: only the unit tests (not marked broker, drill or browser): no broker, browser, worker or API processes
test-fast: $(STAMP) test-packages
	$(VENV)/bin/pytest -m "not broker and not drill and not browser"

## test-packages: check the Debian packages the tests use (chromium, prometheus, wrk, curl); install them as root
test-packages:
	@scripts/system-packages.sh test

## lint: ruff's checks and formatting
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## clean: remove .run, static files and caches (not .venv, nor .env and its key)
clean:
	rm -rf .run staticfiles .pytest_cache .ruff_cache
