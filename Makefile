# Everything runs from the project's virtualenv, created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# make run and friends need a secret key; keep a random one per checkout unless one is given.
export DJANGO_SECRET_KEY ?= $(shell mkdir -p .run && { [ -s .run/secret-key ] || $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))' > .run/secret-key; } && cat .run/secret-key)

.PHONY: run run-api run-fanout run-relay migrate topics dlq demo rebuild-feeds infra chaos bench test test-fast lint venv clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

## run: database, dev broker (if none answers), topics, API and fan-out worker, in the foreground
run: $(STAMP)
	$(PY) scripts/devstack.py run

## run-api: only the API under gunicorn
run-api: $(STAMP)
	$(PY) -m gunicorn -c feedsite/gunicorn.conf.py

## run-fanout: only the fan-out worker
run-fanout: $(STAMP)
	$(PY) manage.py run_fanout

## run-relay: only the outbox relay
run-relay: $(STAMP)
	$(PY) manage.py run_outbox_relay

## migrate: create the database if needed and apply migrations
migrate: $(STAMP)
	$(PY) scripts/devstack.py migrate

## topics: create the Kafka topics
topics: $(STAMP)
	$(PY) manage.py create_topics

## dlq: dead letters; e.g. make dlq ARGS="show 3" or ARGS="replay --all"
ARGS ?= list
dlq: $(STAMP)
	$(PY) manage.py dlq $(ARGS)

## demo: fill the running system (make run) with demo data; e.g. DEMO_ARGS="--users 10000 --seed 2"
DEMO_ARGS ?=
demo: $(STAMP)
	$(PY) manage.py seed_demo $(DEMO_ARGS)

## rebuild-feeds: recompute stored feeds; e.g. REBUILD_ARGS="--user 42" or "--all --dry-run"
REBUILD_ARGS ?= --all
rebuild-feeds: $(STAMP)
	$(PY) manage.py rebuild_feeds $(REBUILD_ARGS)

## infra: PostgreSQL, Kafka, Redis and Prometheus in Docker
infra:
	docker compose up -d postgres kafka redis prometheus

## chaos: the stack under post traffic while workers die, the broker stops and PostgreSQL restarts
CHAOS_SECONDS ?= 120
chaos: $(STAMP)
	$(PY) scripts/chaos.py --seconds $(CHAOS_SECONDS)

## bench: seed a graph, run the stack with production settings, measure; writes BENCHMARKS.md
bench: $(STAMP)
	$(PY) scripts/bench.py

## test: the whole suite against the real PostgreSQL, Redis and a dev broker
test: $(STAMP)
	$(VENV)/bin/pytest

## test-fast: only the unit tests (not marked broker, drill or browser): no broker, browser, worker or API processes
test-fast: $(STAMP)
	$(VENV)/bin/pytest -m "not broker and not drill and not browser"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf .run staticfiles .pytest_cache .ruff_cache
