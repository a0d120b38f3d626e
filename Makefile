# Two commands set everything up on a fresh machine: `make run` and `make test`.
# Services: KAFKA_BOOTSTRAP_SERVERS/DATABASE_URL when set, else the local stack
# (deploy/local/stack: a real Kafka broker and PostgreSQL server, no Docker needed).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(CURDIR)/$(VENV)/bin
STACK := deploy/local/stack
PYTEST_ARGS ?=

# The one rule for services (tests/helpers/services.py applies the same): when both
# KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL are set, those servers; otherwise the local
# stack (make test tells tools/test-parts which, and it starts the stack: the tests find
# it themselves, as the local stack they may stop and start); WITH_SERVICES starts it and
# exports its variables to the command.
NEED_STACK = [ -z "$${KAFKA_BOOTSTRAP_SERVERS:-}" ] || [ -z "$${DATABASE_URL:-}" ]
WITH_SERVICES = if $(NEED_STACK); then $(STACK) up >&2 && eval "$$($(STACK) env)"; fi;

.PHONY: install services run migrate test test-unit lint docs format fuzz faults faults-long faults-replicated bench bench-floor bench-store bench-store-ab bench-decode bench-outcomes bench-drainpath bench-retention bench-reconcile bench-ingest bench-api bench-tracing bench-state bench-history bench-history-ab bench-history-bytes bench-history-queries bench-watch bench-fanout schemas check-schemas down clean check-deploy

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

services:
	@$(WITH_SERVICES) echo "KAFKA_BOOTSTRAP_SERVERS=$$KAFKA_BOOTSTRAP_SERVERS DATABASE_URL=$$DATABASE_URL"

migrate: install
	@$(WITH_SERVICES) $(BIN)/ocitag-worker migrate

# The whole product (worker, ingest, api, and a local registry feeding ingest) on the
# local stack, under one supervisor: deploy/local/run.
run: install
	@exec deploy/local/run

lint: install
	$(BIN)/ruff check worker tests bench examples tools/docs_links.py tools/trace_svg.py
	$(BIN)/ruff format --check worker tests bench examples tools/docs_links.py tools/trace_svg.py
	$(BIN)/mypy

# The documentation site (mkdocs.yml) into site/: strict, so that a broken link or anchor,
# or a page left out of the navigation, fails (make test runs it, and so CI).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

format: install
	$(BIN)/ruff format worker tests bench examples tools/docs_links.py tools/trace_svg.py
	$(BIN)/ruff check --fix worker tests bench examples tools/docs_links.py tools/trace_svg.py

# .venv, lint, the documentation site, the schema and deployment checks and the whole
# suite on real services, in parts (tools/test-parts says which and how;
# docs/development.md how long): the checks, the local stack's start and the unit and
# integration tests at the same time, then the fault scenarios alone (about 12-14 min on
# a clean clone on 2 cores, 15.7 min one after the other).
test:
	@if $(NEED_STACK); then services=local; else services=given; fi; \
		OCITAG_TEST_SERVICES=$$services tools/test-parts $(PYTEST_ARGS)

test-unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

fuzz: install
	OCITAG_FUZZ_RECORDS=$${OCITAG_FUZZ_RECORDS:-2000000} $(BIN)/pytest tests/unit/test_fuzz.py $(PYTEST_ARGS)

faults: install
	@$(STACK) up
	$(BIN)/pytest tests/faults $(PYTEST_ARGS)

# The fault scenarios on replicated Kafka and PostgreSQL (tests/faults/test_replicated.py):
# three brokers and a PostgreSQL standby, in .cache/stack-replicated on their own ports
# (OCITAG_REPLICATED_STACK_DIR, _KAFKA_PORT, _PG_PORT). make test runs them too.
faults-replicated: install
	$(BIN)/pytest tests/faults/test_replicated.py $(PYTEST_ARGS)

faults-long: install
	@$(STACK) up
	OCITAG_FAULT_SEEDS=$${OCITAG_FAULT_SEEDS:-5} OCITAG_FAULT_EVENTS=$${OCITAG_FAULT_EVENTS:-50000} \
		$(BIN)/pytest tests/faults $(PYTEST_ARGS)

schemas: install
	$(PY) -m worker.schemas schemas

down:
	$(STACK) down
	OCITAG_STACK_DIR=$${OCITAG_REPLICATED_STACK_DIR:-.cache/stack-replicated} \
		OCITAG_KAFKA_PORT=$${OCITAG_REPLICATED_KAFKA_PORT:-19192} \
		OCITAG_PG_PORT=$${OCITAG_REPLICATED_PG_PORT:-15442} $(STACK) down

clean: down
	rm -rf $(VENV) .cache site

# The contract documents: schemas/*.json in sync with worker/models.py, and
# schemas/asyncapi.yaml valid per the AsyncAPI reference parser (@asyncapi/parser, pinned
# by tools/package-lock.json; installed into tools/node_modules on first use or when the
# lock changes). Needs Node.js >= 18 with npm.
check-schemas: install
	@command -v npm >/dev/null || { echo "check-schemas needs Node.js (>= 18) and npm" >&2; exit 1; }
	@if [ ! tools/node_modules/.package-lock.json -nt tools/package-lock.json ]; then \
		npm ci --prefix tools --ignore-scripts --no-audit --no-fund --loglevel=error; fi
	$(PY) -m worker.schemas --check schemas
	node tools/asyncapi-validate.mjs schemas/asyncapi.yaml

# Offline validation of deploy/ (Dockerfile, compose, Kubernetes manifests, CRDs, alert
# rules and their tests, dashboard, metric names); tools cached in .cache/deploy-check.
check-deploy:
	deploy/check

# Benchmarks (bench/README.md): table on stdout, JSON (+ PNG) in bench/results/. They use
# KAFKA_BOOTSTRAP_SERVERS/DATABASE_URL when set, else start the local stack; each run makes
# its own topics and databases and drops them afterwards. Knobs: BENCH_* variables.
bench: install
	@$(WITH_SERVICES) $(PY) -m bench.history && $(PY) -m bench.versus

# the project against the floor (bench/floor.py), side by side in one run (bench/versus.py);
# also the last part of `make bench`
bench-floor: install
	@$(WITH_SERVICES) $(PY) -m bench.versus

bench-store: install
	@$(WITH_SERVICES) $(PY) -m bench.store

# the store of this checkout against another's (BENCH_STORE_BASELINE), small batches,
# interleaved, in one process (bench/store_ab.py)
bench-store-ab: install
	@$(WITH_SERVICES) $(PY) -m bench.store_ab

bench-decode: install
	$(PY) -m bench.decode

# outcome building of this checkout against another's (BENCH_OUTCOMES_BASELINE), per
# kind and a drain's mix, interleaved in one process (bench/outcomes.py; no services)
bench-outcomes: install
	$(PY) -m bench.outcomes

# A drain's batch path in one process (bench/drainpath.py): the worker's CPU per event in
# decode, Store.apply (its statements apart) and packing, against another checkout's
# worker (BENCH_DRAINPATH_BASELINE), batch by batch in lockstep, on the real PostgreSQL
bench-drainpath: install
	@$(WITH_SERVICES) $(PY) -m bench.drainpath

bench-retention: install
	@$(WITH_SERVICES) $(PY) -m bench.retention
# reconcile's scan against a local registry (no Kafka or PostgreSQL needed)
bench-reconcile: install
	$(PY) -m bench.reconcile

bench-ingest: install
	@$(WITH_SERVICES) $(PY) -m bench.ingest

# PUT round trips through the API and the worker (bench/api.py): PUT/s and p50/p99 at 50
# concurrent clients, and at an offered 200 PUT/s, beside the worker's own event latency.
bench-api: install
	@$(WITH_SERVICES) $(PY) -m bench.api

# Many watchers on one api process at a steady change rate (bench/watch.py): per-event
# delivery latency p50/p99, the api's CPU and memory (BENCH_WATCHERS 50, BENCH_WATCH_RATE
# 200 by default; the issue's target is 1000 watchers at 2000 changes/s)
bench-watch: install
	@$(WITH_SERVICES) $(PY) -m bench.watch

# The watch's fan-out alone, in process (bench/fanout.py): api CPU per delivered event,
# record by record vs joined once, for 100 and 1,000 watchers (no services needed)
bench-fanout: install
	@$(PY) -m bench.fanout

# tracing's cost (bench/tracing.py): drain pace with tracing off, on at 10 % sampling
# (to Jaeger all-in-one, deploy/local/stack jaeger-start), and off again, in one run
bench-tracing: install
	@$(WITH_SERVICES) $(PY) -m bench.tracing

# The state topic's cost (bench/state.py): drain pace with OCITAG_STATE_TOPIC on and off,
# same run, same backlog (BENCH_EVENTS, default 100000; BENCH_ROUNDS alternates the order)
bench-state: install
	@$(WITH_SERVICES) $(PY) -m bench.state

# Tag history (bench/tag_history.py): drain pace and database bytes per applied change
# with history on against off in the same run, then ?at= and digest query p99.
bench-history: install
	@$(WITH_SERVICES) $(PY) -m bench.tag_history

# History's cost in the store alone: Store.apply with history on against off, drain-sized
# and steady-rate batches, interleaved in one process, and the write statement's server
# side by part (bench/history_ab.py)
bench-history-ab: install
	@$(WITH_SERVICES) $(PY) -m bench.history_ab

# History's bytes per relation per applied change, through the real Store, no broker
# (bench/history_bytes.py); BENCH_HISTORY_UUID_IDS=1 for UUID event ids.
bench-history-bytes: install
	@$(WITH_SERVICES) $(PY) -m bench.history_bytes

# ?at= and the digest question p50/p99 on a 1 M-entry history built in SQL, through the
# api and the store's query alone (bench/history_queries.py)
bench-history-queries: install
	@$(WITH_SERVICES) $(PY) -m bench.history_queries
