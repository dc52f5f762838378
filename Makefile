# sidecar_plugin: the README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# the lowest versions of the dependencies setup.cfg admits (tests/support/oldest-requirements.txt)
OLDEST ?= .venv-oldest
# the files holding tests marked oldest (the others may import what only the test extra installs)
OLDEST_TESTS = $(shell grep -l 'mark.oldest' tests/*/test_*.py)
TEST_OLDEST = $(OLDEST)/bin/python -m pytest -q -p no:cacheprovider -m oldest $(OLDEST_TESTS)
# make test's workers (pytest-xdist); the lowest versions' tier runs beside them, each dealt its own ports
JOBS ?= 5
SLOTS = $(shell echo $$(($(JOBS) + 1)))
PYTEST_SIDE_BY_SIDE = SIDECAR_TEST_PORT_SLOTS=$(SLOTS) $(PY) -m pytest -q -p no:cacheprovider -n $(JOBS) --dist loadgroup
# run $(1) (a pytest of the main virtualenv) and, beside it, the lowest versions' tier and mypy (single-threaded:
# on its own it kept a core of two idle for a minute); fail if any fails; each one's output once it is done
define BESIDE_OLDEST
	@log=$$(mktemp); SIDECAR_TEST_PORT_SLOT=$(JOBS) SIDECAR_TEST_PORT_SLOTS=$(SLOTS) $(TEST_OLDEST) >$$log 2>&1 & \
	oldest=$$!; types=$$(mktemp); $(BIN)/mypy >$$types 2>&1 & mypy=$$!; \
	echo '$(1)'; $(1); main=$$?; wait $$oldest; low=$$?; wait $$mypy; typed=$$?; \
	echo "--- $(TEST_OLDEST) (beside it):"; cat $$log; echo "--- $(BIN)/mypy (beside it):"; cat $$types; \
	rm -f $$log $$types; [ $$main -eq 0 ] && [ $$low -eq 0 ] && [ $$typed -eq 0 ]
endef
BIN := $(VENV)/bin
CONF := conf/supervisord.conf
RUN := run

.PHONY: setup install oldest demo stop status lint unit test test-fast test-oldest chaos bench clean

# the virtualenvs' packages are installed by uv (pip's resolution, the same versions: pip took 100 s and a core to
# unpack and compile LiteLLM's thousands of files; uv unpacks from its cache and compiles on every core: about 30 s).
# Compiled at install, as pip does: where PYTHONDONTWRITEBYTECODE is set, nothing else would, and every start
# of LiteLLM would compile its imports again. pip installs uv itself
UV_VERSION = 0.13.10
UV_PIP = -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
UV_INSTALL = bin/uv pip install --quiet --compile-bytecode --python

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) $(UV_PIP)
	$(VENV)/$(UV_INSTALL) $(PY) -e '.[test,litellm]'
	touch $@

install: $(VENV)/.installed

$(OLDEST)/.installed: setup.cfg pyproject.toml tests/support/oldest-requirements.txt
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python $(UV_PIP)
	$(OLDEST)/$(UV_INSTALL) $(OLDEST)/bin/python -e . -r tests/support/oldest-requirements.txt
	touch $@

## oldest: a second virtualenv with the lowest versions setup.cfg admits (psutil 5.9.4, supervisor 4.2.5, ...)
oldest: $(OLDEST)/.installed

## demo: install, render conf/profile.example.yaml, start supervisord with the sidecar, wait until running,
## show the state and the endpoint, and send a request through the sidecar (see tests/support/demo.py)
## HEALTH_TIMEOUT=S: render's --health-timeout (default: render's); WAIT_TIMEOUT=S: how long to wait for running
HEALTH_TIMEOUT ?=
WAIT_TIMEOUT ?= 360
demo: install
	@$(PY) tests/support/demo.py up --run $(RUN) --conf $(CONF) --bin $(BIN) --health-timeout "$(HEALTH_TIMEOUT)" \
	  --wait-timeout $(WAIT_TIMEOUT)

## stop: stop the demo's supervisord (and with it the sidecar and its listener) and its stand-in upstream
stop:
	@if [ -x $(PY) ]; then $(PY) tests/support/demo.py stop --run $(RUN) --conf $(CONF) --bin $(BIN); \
	else echo "supervisord is not running (no $(VENV) yet)"; fi

status:
	$(BIN)/sidecar-plugin status --state-file $(RUN)/state.json

## lint: ruff (pyflakes, pycodestyle, bugbear) and mypy (the package's functions all typed), as pyproject.toml
## configures them; seconds once mypy's cache is warm
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

## unit: the unit tier alone (tests/unit: pure, in-process; no supervisord, no subprocess), in seconds
unit: install
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

## setup: the virtualenv, the lowest versions' one and the operators' tools, at once (pip's unpacking and
## compiling keep one core busy; the other installs the rest meanwhile)
setup:
	@$(MAKE) --no-print-directory -j3 --output-sync=target install oldest tools

## test: every tier (unit, integration, e2e: the real LiteLLM, ecosystem) on JOBS workers after ruff; beside
## them mypy and the tests marked oldest on the lowest versions setup.cfg admits; JOBS=1 for one test at a time
test: setup
	$(BIN)/ruff check .
	$(call BESIDE_OLDEST,SIDECAR_E2E_REQUIRED=1 $(PYTEST_SIDE_BY_SIDE))

test-fast: setup
	$(call BESIDE_OLDEST,$(PYTEST_SIDE_BY_SIDE) -m "not e2e")

## test-oldest: only the tests marked oldest, on the lowest versions (about 3 min)
test-oldest: oldest
	$(TEST_OLDEST)

## chaos: 200 random faults (seeded; SEED=N to reproduce), a table of faults, checks and violations
chaos: install
	$(PY) tests/support/chaos.py --faults $${FAULTS:-200} $${SEED:+--seed $$SEED}

## bench: detection speed and cost against the peers, then the real LiteLLM under the gateway's traffic: every event's
## longest wait beside plain supervisord (benchmarks/port_bench.py --only EVENTS runs some alone) -> benchmarks/RESULTS.md
bench: install
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(PY) benchmarks/run.py

clean: stop
	rm -rf $(RUN) build *.egg-info

## tools: the operators' tools the ecosystem tests run against (promtool, node_exporter,
## Debian's supervisor); installs them with apt-get when root, else says how (tests skip)
.PHONY: tools
tools:
	@sh tests/support/install_tools.sh
