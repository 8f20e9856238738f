# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
JARS_STAMP := .local/jars/.provisioned
CONF ?= conf/local.yaml
EVENTS ?= 100000

.PHONY: help setup jars run demo test test-unit check chaos chaos-quick cluster-demo bench bench-merge kafka-up kafka-down kafka-status clean distclean

help:
	@echo "make run        set up, start the local Kafka broker, produce a demo stream, ingest, verify"
	@echo "make test       set up, then run the whole test suite (real Spark, Delta and Kafka)"
	@echo "make setup      venv + pinned Python packages + jars from Maven Central (idempotent)"
	@echo "make check      ruff (with docstring rules) and mypy"
	@echo "make chaos      long fault-injection run (kill -9, broker restarts, backfills beside the stream); make chaos-quick: a bounded one"
	@echo "make cluster-demo  ingest + gold on a local Spark standalone cluster (2 workers); a worker and the driver killed"
	@echo "make bench      benchmarks (python -m bench, long; BENCH_ARGS='--quick' or '--before-src DIR')"
	@echo "make bench-merge  the slow MERGE scaling section into bench/results/merge-scope"
	@echo "make kafka-up | kafka-down | kafka-status    the embedded broker (127.0.0.1)"
	@echo "make clean      stop the broker; delete local data, checkpoints, broker data"
	@echo "make distclean  clean + delete the venv and jars"

$(INSTALLED): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]}: set PYTHON=/path/to/python3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: $(INSTALLED) jars

jars: $(INSTALLED)
	$(PY) -m pipelines --conf $(CONF) jars

run: setup
	$(PY) -m pipelines --conf $(CONF) demo --events $(EVENTS)

demo: run

test: setup check
	$(PY) -m pytest -q --timeout=900 --durations=25 tests

test-unit: setup
	$(PY) -m pytest -q tests/unit

# The long fault-injection run (>= 50 kills, 5 broker restarts, 1,000,000 events); result committed under bench/results/.
chaos: setup
	$(PY) -m pipelines --conf $(CONF) chaos --rounds 50 --events 1000000 --broker-restarts 5 --seed 1 \
	    --result-file bench/results/chaos-latest.md

# A bounded run (5 rounds, 1 broker restart, 8,000 events; a few minutes).
chaos-quick: setup
	$(PY) -m pipelines --conf $(CONF) chaos --rounds 5 --events 8000 --broker-restarts 1 --seed 3

# A Spark standalone cluster on loopback (a master, 2 one-core workers), the jobs submitted with
# spark-submit --master spark://...; a worker and then the driver SIGKILLed; verify. A few minutes.
cluster-demo: setup
	$(PY) -m pipelines --conf $(CONF) cluster-demo

check: $(INSTALLED)
	$(PY) -m ruff check pipelines tests bench
	$(PY) -m mypy pipelines

kafka-up: setup
	$(PY) -m pipelines --conf $(CONF) kafka up

kafka-down: $(INSTALLED)
	$(PY) -m pipelines --conf $(CONF) kafka down

kafka-status: $(INSTALLED)
	$(PY) -m pipelines --conf $(CONF) kafka status

clean:
	-test -x $(PY) && $(PY) -m pipelines --conf $(CONF) kafka down --wipe
	rm -rf .local/data spark-warehouse metastore_db derby.log .pytest_cache

distclean: clean
	rm -rf $(VENV) .local

# Benchmarks (results and plots in bench/results/latest/, with machine and commit). Extra options in
# BENCH_ARGS, e.g. BENCH_ARGS='--quick', or BENCH_ARGS='--before-src /tmp/before' after
# `git worktree add /tmp/before HEAD~1` to measure the previous commit's pipeline code too.
BENCH_ARGS ?=
bench: setup
	$(PY) -m bench --out bench/results/latest $(BENCH_ARGS)

# MERGE scaling (up to 50M silver rows; slow): results in bench/results/merge-scope/.
bench-merge: setup
	$(PY) -m bench --sections merge --out bench/results/merge-scope $(BENCH_ARGS)
