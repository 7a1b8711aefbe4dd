# statusd: the single entry point. `make run` and `make test` work from a fresh clone (Python 3.11+).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pytest-xdist workers: two per core (at most 8). Most tests spend much of their time waiting on
# the real Redis, Celery, PostgreSQL and servers they start, so one worker per core leaves the
# cores half idle; two per core keeps them busy (CI=true on 2 cores: pytest 513 s, the cores 86%
# busy while it runs). The end-to-end tests' bounds are sized for saturated cores: the whole
# suite also passes at 4 workers with other work beside it.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); n=$$((2 * n)); [ "$$n" -gt 8 ] && n=8; echo $$n)
SYSTEM_PACKAGES := redis-server chromium chromium-driver iproute2 prometheus prometheus-alertmanager postgresql

.PHONY: help run test test-all lint bench bench-quick bench-scale chaos chaos-short clean system-deps

help:
	@echo "make run    - start statusd in dev mode (SQLite, Redis, API, worker, beat)"
	@echo "make test   - run the test suite (SQLite and PostgreSQL variants; CI=true adds the scale runs)"
	@echo "make test-all - the whole suite, scale runs included (as CI runs it), then chaos-short"
	@echo "make lint   - ruff check, ruff format --check, mypy, import contracts (lint-imports)"
	@echo "make bench  - the whole pipeline: ingest, transition storm, sync drain, sweep storm,"
	@echo "              steady state and detection latency, each against plain code (bench-quick: tiny)"
	@echo "make bench-scale - 1 vs 2 consume / serve processes (needs PostgreSQL on 127.0.0.1)"
	@echo "make chaos  - the whole deployment under seeded random faults, checked by an oracle"
	@echo "              (DURATION=150 seconds, SEED=random; its own PostgreSQL from the server binaries)"
	@echo "make chaos-short - the same at two fixed seeds, ~4 minutes each, 300 containers"
	@echo "make clean  - remove the virtualenv and caches (keeps .statusd/ and statusd.db)"

# The virtualenv, rebuilt only when a pyproject.toml changes (repeated runs start at once). The
# statusd-client distribution (clients/python) goes in too: its tests are part of the suite.
$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "statusd needs Python 3.11+, found " + sys.version.split()[0])'
	@if [ ! -x $(BIN)/python ]; then \
	  if ! $(PYTHON) -m venv $(VENV); then \
	    rm -rf $(VENV); \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); \
	    else echo "python3 -m venv failed: install the venv module (Debian/Ubuntu: sudo apt-get install python3-venv)" >&2; exit 1; fi; \
	  fi; \
	fi
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e './clients/python[api]'
	@touch $@

run: $(VENV)/.installed
	$(BIN)/statusd up

# Tests need a redis-server binary, for the status-page test Chromium + chromedriver, for the
# bare-machine test `ip` (iproute2) to make a network namespace, and for the monitoring pack's
# test promtool (Debian's `prometheus` package; the Prometheus server and node exporter it may
# start are stopped and disabled: the tests need only promtool), for the on-call tests Debian's
# Alertmanager (`prometheus-alertmanager`; its packaged service is stopped and disabled too: the
# tests start their own on free ports), and for the failover test the PostgreSQL server binaries
# (it runs a primary and a replica of its own).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(SYSTEM_PACKAGES); } \
	      || echo "warning: could not install$$missing; the tests that need them will fail" >&2; \
	    case "$$missing" in *prometheus*) \
	      for unit in prometheus prometheus-node-exporter prometheus-alertmanager; do \
	        { systemctl disable --now $$unit || service $$unit stop; } >/dev/null 2>&1 || true; \
	      done;; \
	    esac; \
	  else \
	    echo "missing system packages:$$missing -- install them, e.g. sudo apt-get install -y $(SYSTEM_PACKAGES)" >&2; \
	  fi; \
	fi

# Exit code 5 (no tests collected) is a failure: an empty run must never look green. The 25
# slowest tests are listed at the end, so a suite creeping past its time budget shows where.
# Fleet-sized and benchmark runs (marker `scale`, ~10 minutes of the suite's time) always run on CI
# (CI=true) and in `make test-all`; a local `make test` leaves them out to stay within 15 minutes.
# worksteal: an idle xdist worker takes queued tests from the busy one; the order the workers
# get (tests/support/schedule.py) starts the longest tests first on each, from tests/durations.json
# (refresh it with PYTEST_ARGS=--store-durations after a whole run when tests grew or got faster).
# compileall first: the suite starts ~400 statusd processes, and where PYTHONDONTWRITEBYTECODE is
# set (as on CI) each of them would otherwise compile the project's modules from source again
# (~0.8 s of CPU per `statusd worker`); it only rewrites what changed since the last run.
SCALE_SELECT = $(if $(filter true 1,$(CI)),,-m "not scale")
test: $(VENV)/.installed system-deps
	@$(BIN)/python -m compileall -q -j 0 statusd tests $(wildcard bench) clients/python/src >/dev/null
	@set +e; $(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal -p no:cacheprovider --durations=25 \
	  $(SCALE_SELECT) $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; \
	if [ -n '$(SCALE_SELECT)' ]; then echo "scale runs left out (CI=true or 'make test-all' runs them)"; fi; \
	exit $$code

# The suite, then the short chaos run (after pytest, never inside it: it needs the machine).
test-all:
	@$(MAKE) --no-print-directory test CI=true
	@$(MAKE) --no-print-directory chaos-short

lint: $(VENV)/.installed
	$(BIN)/ruff check statusd tests $(wildcard bench) clients/python
	$(BIN)/ruff format --check statusd tests $(wildcard bench) clients/python
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	cd clients/python && ../../$(BIN)/mypy

# wrk drives the load when installed (a Python client can be slower than the server it measures).
bench: $(VENV)/.installed
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk; } \
	  || echo "wrk not installed: falling back to the Python load generator" >&2; }
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/steady_cpu.py
	$(BIN)/python bench/steady_cpu.py --rates 100 1000 20000
	$(BIN)/python bench/redis_bytes.py
	$(BIN)/python bench/writepath.py
	$(BIN)/python bench/registration.py
	$(BIN)/python bench/detection.py

# The same scenarios at tiny sizes: a smoke run (tests/test_bench_quick_smoke.py runs the write
# path's and the steady CPU's).
bench-quick: $(VENV)/.installed
	$(BIN)/python bench/ingest.py --duration 1 --workers 1
	$(BIN)/python bench/steady_cpu.py --quick
	$(BIN)/python bench/writepath.py --quick
	$(BIN)/python bench/registration.py --quick
	$(BIN)/python bench/detection.py --quick

# Scale-out ratios (docs/benchmarks.md): creates and drops its own databases on BENCH_PG_URL.
bench-scale: $(VENV)/.installed
	$(BIN)/python bench/scale_out.py $(BENCH_ARGS)

# A run prints its seed; SEED=<it> replays the same fault schedule and fleet.
DURATION ?= 150
chaos: $(VENV)/.installed
	$(BIN)/python bench/chaos.py --duration $(DURATION) $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)

# The oracle's every check in about 4 minutes per seed: 90 s of faults on 300 containers, then
# the settle time. Seed 101 draws 10 faults: the PostgreSQL primary crashed and restarted, and
# failed over to its replica; Redis restarted empty; the worker and a serve SIGKILLed; loss on the
# links; the main API answering 503 and slowly, the alert receiver 503 (2). Seed 20 draws 11: the
# worker partitioned from Redis and PostgreSQL for 9 s, then SIGSTOPped (skipped: still cut off)
# and SIGKILLed; a failover; PostgreSQL restarted and unreachable; Redis restarted empty; the
# main API hanging (2), the alert receiver 503 and hanging. A failing seed replays with the
# command the run prints.
CHAOS_SHORT_SEEDS ?= 101 20
chaos-short: $(VENV)/.installed
	@for seed in $(CHAOS_SHORT_SEEDS); do \
	  $(BIN)/python bench/chaos.py --seed $$seed --duration 90 --containers 300 --settle 55 || exit 1; \
	done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
