# Two commands set everything up on a fresh machine:
#   make demo   the main job: a demo build run with a known failure, on the embedded defaults
#   make test   the whole test suite (real Temporal dev server, real PostgreSQL, real git)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export META_BUILDER_HOME ?= $(CURDIR)/.metabuilder
# Test processes (pytest-xdist): each gets its own Temporal dev server and databases.
TEST_WORKERS ?= 2

.PHONY: demo eval test bench soak soak-chaos lint up stop clean rc smoke dist check-wheel

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/metabuilder demo

# The golden tasks on the real engine (embedded dev server, recorded LLM answers): about a minute.
eval: $(STAMP)
	$(BIN)/metabuilder eval

test: $(STAMP)
	@scripts/ensure-postgres.sh
	@scripts/ensure-test-tools.sh
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

bench: $(STAMP)
	$(BIN)/python bench/bench_classifier.py
	$(BIN)/python bench/bench_steps.py
	$(BIN)/python bench/bench_failover.py

# Not in CI: about 2 minutes of runs through worker SIGKILLs and a Temporal restart (scripts/soak.py).
soak: $(STAMP)
	$(BIN)/python scripts/soak.py --runs 44 --report bench/SOAK.md

# Not in CI either: 200 runs x 5 steps with 10% chaos across the recoverable fault types, through
# the same kills and restart (docs/CANARY_AND_CHAOS.md#soak); 5 minutes on 2 cores at load 7 (bench/SOAK_CHAOS.md).
soak-chaos: $(STAMP)
	$(BIN)/python scripts/soak.py --runs 200 --steps 5 --chaos 0.1 --deadline 2400 --report bench/SOAK_CHAOS.md

lint: $(STAMP)
	$(BIN)/ruff check .
	PYTHON=$(BIN)/python scripts/mypy.sh

# A release candidate: make rc TAG=v0.2.0-rc1 (see docs/RELEASE_PROCESS.md)
rc: $(STAMP)
	@test -n "$(TAG)" || { echo "usage: make rc TAG=vX.Y.Z-rcN" >&2; exit 2; }
	PYTHON=$(BIN)/python scripts/release_rc.sh "$(TAG)"

# The sdist and the wheel, into dist/
dist: $(STAMP)
	rm -rf dist && $(BIN)/python -m build --outdir dist .

# A user's install: the wheel without dev extras in a fresh venv, CLI and demo from outside the repo
check-wheel: $(STAMP)
	scripts/check-wheel.sh $(BIN)/python

# Smoke tests against a running deployment: SMOKE_BASE_URL, SMOKE_TOKEN, SMOKE_WORKSPACE
smoke: $(STAMP)
	RUN_SMOKE=true $(BIN)/python -m pytest tests/smoke -v

up: $(STAMP)
	$(BIN)/metabuilder up

stop: $(STAMP)
	$(BIN)/metabuilder server stop

clean:
	-$(BIN)/metabuilder server stop
	rm -rf $(VENV) .metabuilder *.egg-info
