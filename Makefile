# Covid-19 live stream to database. `make help` lists the targets.
# Every target installs what it needs: a virtualenv in .venv with the pinned requirements.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# A MongoDB wire-protocol server for the fault tests only (never used in production).
JONGODB_PKG := @jongodb/memory-server-bin-linux-x64-gnu@0.1.6
JONGODB     := .tools/node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb

.PHONY: help install check-java run demo test lint bench soak diagram clean connect-server

help:
	@echo "make run      both processes until Ctrl-C: live Bluesky posts (X with TWITTER_BEARER_TOKEN),"
	@echo "              the sample replay when no Jetstream host answers; embedded store in data/db"
	@echo "make demo     offline demo: ~3 short batches from the sample file, then what was stored"
	@echo "make test     lint + the whole test suite"
	@echo "make bench    benchmark: ceiling, bare receiver, full pipeline on both engines, 20 s batches, a held backlog (~30 min),"
	@echo "              then the cost at live rates: idle, 5, 50 (and 50 + 5 deletes) and 400 posts/s, both engines at idle and 50 (bench.cost, ~20 min)"
	@echo "make soak     both programs for SOAK_MINUTES (default 60) at 400 posts/s, 1 s batches: memory"
	@echo "              and batch-time drift, every post counted back; writes bench/soak.md"
	@echo "make connect-server  a local Spark Connect server on 127.0.0.1:15002 from the installed"
	@echo "              pyspark, for spark_streaming.py --engine structured --remote sc://127.0.0.1:15002"
	@echo "make diagram  render flow_diagram.png from flow_diagram.dot (needs Graphviz)"

$(STAMP): requirements.txt requirements-dev.txt requirements-analysis.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"' \
	  || { echo "error: $(PYTHON) is older than Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "Installing the pinned requirements into $(VENV): the first time, pyspark is a ~450 MB download and a wheel build (minutes); pip keeps it in its cache"
	$(PY) -m pip install --progress-bar on -r requirements.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

# The Spark Connect client (optional: only --remote needs it).
CONNECT_STAMP := $(VENV)/.connect-installed

$(CONNECT_STAMP): $(STAMP) requirements-connect.txt
	$(PY) -m pip install --quiet -r requirements-connect.txt
	@touch $(CONNECT_STAMP)

check-java:
	@java -version 2>&1 | grep -Eq 'version "(1[7-9]|2[0-9])' || { \
	  echo "error: Spark needs Java 17 or newer on PATH (Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless)"; \
	  exit 1; }

run: install check-java
	@$(PY) scripts/launch.py run

demo: install check-java
	@$(PY) scripts/launch.py demo

lint: install
	$(VENV)/bin/ruff check .

$(JONGODB):
	@command -v npm >/dev/null || { echo "error: the fault tests need npm (Node.js) to install their MongoDB test server"; exit 1; }
	npm install --silent --no-audit --no-fund --prefix .tools $(JONGODB_PKG)

test: install $(CONNECT_STAMP) check-java lint $(JONGODB)
	JONGODB_BIN=$(JONGODB) $(VENV)/bin/pytest

# A local Spark Connect server from the installed pyspark alone (docs/engines.md): it runs
# the structured engine's source and foreachBatch in this virtualenv's Python, logs in
# data/connect-server. Ctrl-C stops it.
SPARK_HOME_OF_PYSPARK = $(shell $(PY) -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
CONNECT_PORT ?= 15002

connect-server: install $(CONNECT_STAMP) check-java
	@mkdir -p data/connect-server
	SPARK_HOME=$(SPARK_HOME_OF_PYSPARK) PYSPARK_PYTHON=$(abspath $(PY)) SPARK_LOCAL_IP=127.0.0.1 \
	  SPARK_LOG_DIR=$(abspath data/connect-server) \
	  $(SPARK_HOME_OF_PYSPARK)/sbin/start-connect-server.sh --wait --master 'local[2]' \
	  --conf spark.connect.grpc.binding.address=127.0.0.1 \
	  --conf spark.connect.grpc.binding.port=$(CONNECT_PORT)

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(PY) -m pip install --quiet -r bench/requirements.txt
	@touch $(BENCH_STAMP)

bench: install check-java $(BENCH_STAMP)
	$(PY) -m bench.run
	$(PY) -m bench.cost

SOAK_MINUTES ?= 60

soak: install check-java $(BENCH_STAMP)
	$(PY) -m bench.soak --minutes $(SOAK_MINUTES)

diagram:
	dot -Tpng -Gdpi=100 flow_diagram.dot -o flow_diagram.png

clean:
	rm -rf data/demo .pytest_cache .ruff_cache
