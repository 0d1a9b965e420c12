# The quick start: `make run` starts a local cluster (3 nodes, 1 coordinator;
# `make run MODE=leader` for a Raft group per partition),
# `make test` runs the tests (`make test-fast`: those that start no process),
# `make lint` runs ruff and mypy.
# Each creates .venv and installs the project (with its dev tools) on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The protobuf/gRPC code generator, pinned apart from the project (proto/tools.txt).
PROTOC_VENV  := $(VENV)/protoc
PROTOC_STAMP := $(PROTOC_VENV)/.installed-stamp
DATA   ?= data

.PHONY: run test test-fast lint proto bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kvstore needs Python 3.11 or newer (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

$(PROTOC_STAMP): proto/tools.txt
	$(PYTHON) -m venv $(PROTOC_VENV)
	$(PROTOC_VENV)/bin/python -m pip install --quiet -r proto/tools.txt
	@touch $(PROTOC_STAMP)

# MODE=leader or leaderless; left out: a new data dir's default (leaderless), or the saved mode.
run: $(STAMP)
	$(BIN)/kvstore cluster up --nodes 3 --coordinators 1 $(if $(MODE),--mode $(MODE)) --data-dir $(DATA)

test: $(STAMP) $(PROTOC_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Every test not marked `process`: no process, socket or gRPC server (see
# tests/conftest.py).
test-fast: $(STAMP)
	KVSTORE_QUICK_PROPERTIES=1 $(BIN)/python -m pytest -m "not process" $(PYTEST_ARGS)

# ruff and mypy, configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

proto: $(PROTOC_STAMP)
	$(PROTOC_VENV)/bin/python proto/generate.py

bench: $(STAMP)
	$(BIN)/kvstore bench --echo $(BENCH_ARGS)

# A short chaos run (see chaos/): a 5-node cluster under kills and pauses,
# then the checks. `make chaos CHAOS_ARGS="--seed 7 --duration 120"` for more.
# Phony: the chaos/ package directory must not count as the target.
.PHONY: chaos
chaos: $(STAMP)
	$(BIN)/python -m chaos --duration 30 $(CHAOS_ARGS)

# The deterministic simulation (see chaos/sim/): `make sim SEED=7` replays
# one seed (BUG=name plants a broken variant, TRACE=1 prints everything);
# `make sim SEEDS=10000` is the long run (FIRST=... where it starts, JOBS=...
# how many processes); MODE=leader simulates leader mode (Raft) instead.
.PHONY: sim
SEEDS ?= 300
FIRST ?= 1
sim: $(STAMP)
ifdef SEED
	$(BIN)/python -m chaos.sim --seed $(SEED) $(if $(MODE),--mode $(MODE)) $(if $(BUG),--bug $(BUG)) $(if $(TRACE),--trace)
else
	$(BIN)/python -m chaos.sim --seeds $(SEEDS) --first $(FIRST) $(if $(MODE),--mode $(MODE)) $(if $(JOBS),--jobs $(JOBS)) $(if $(BUG),--bug $(BUG))
endif

# Builds deploy/Dockerfile with podman and runs the image and the compose
# cluster (needs root and Debian's podman, runc and debootstrap; see the script).
.PHONY: container-check
container-check:
	deploy/container-check

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
