# sidecar_plugin: the README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
CONF := conf/supervisord.conf
RUN := run
CTL := $(BIN)/supervisorctl -c $(CONF)
PLACEHOLDER_KEY := sk-or-placeholder-not-a-real-key

.PHONY: install demo stop status test test-fast chaos bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,litellm]'
	touch $@

install: $(VENV)/.installed

## demo: install, render conf/profile.example.yaml, start supervisord with the sidecar, wait until running
demo: install
	@mkdir -p $(RUN)
	@if [ -z "$$OPENROUTER_API_KEY" ]; then \
	  echo "OPENROUTER_API_KEY is not set: rendering with a placeholder key ($(PLACEHOLDER_KEY))."; \
	  echo "The sidecar will run, but requests to OpenRouter will be refused. Export a real key and re-run make demo."; \
	fi
	@export OPENROUTER_API_KEY="$${OPENROUTER_API_KEY:-$(PLACEHOLDER_KEY)}"; \
	if $(CTL) pid >/dev/null 2>&1; then \
	  echo "supervisord already runs: applying the profile (restarts the sidecar only if something changed)"; \
	  $(BIN)/sidecar-plugin apply --profile conf/profile.example.yaml --out-dir $(RUN) -s unix://$(CURDIR)/$(RUN)/supervisor.sock; \
	else \
	  $(BIN)/sidecar-plugin render --profile conf/profile.example.yaml --out-dir $(RUN) && \
	  echo "starting supervisord -c $(CONF)" && $(BIN)/supervisord -c $(CONF); \
	fi
	$(BIN)/sidecar-plugin wait --state running --timeout 180 --state-file $(RUN)/state.json
	@echo; echo "== supervisorctl status"; $(CTL) status || true
	@echo; echo "== supervisorctl sidecar status"; $(CTL) sidecar status
	@if [ -n "$$OPENROUTER_API_KEY" ]; then \
	  echo; echo "== one /v1/messages request through the sidecar (agentroute-fast)"; \
	  $(PY) -c 'import json,requests,sys; s=requests.Session(); s.trust_env=False; \
	key=open("$(RUN)/master.key").read().strip() if not __import__("os").environ.get("AGENTROUTE_MASTER_KEY") else __import__("os").environ["AGENTROUTE_MASTER_KEY"]; \
	r=s.post("http://127.0.0.1:4000/v1/messages",headers={"x-api-key":key,"anthropic-version":"2023-06-01"}, \
	json={"model":"agentroute-fast","max_tokens":64,"messages":[{"role":"user","content":"Say hello in five words."}]},timeout=120); \
	print(r.status_code, r.text[:500])'; \
	fi
	@echo; echo "The sidecar runs under supervisord ($(CONF)); state: $(RUN)/state.json, log: $(RUN)/litellm.log."
	@echo "Stop everything with: make stop"

## stop: stop the demo's supervisord (and with it the sidecar and its listener)
stop:
	@if [ -x $(BIN)/supervisorctl ] && pid=$$($(CTL) pid 2>/dev/null) && [ "$$pid" -gt 0 ] 2>/dev/null; then \
	  $(CTL) shutdown; \
	  for i in $$(seq 1 300); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
	  if kill -0 $$pid 2>/dev/null; then echo "supervisord (pid $$pid) is still stopping"; exit 1; fi; \
	  echo "supervisord (pid $$pid) and the sidecar are stopped"; \
	else echo "supervisord is not running"; fi

status:
	$(BIN)/sidecar-plugin status --state-file $(RUN)/state.json

## test: unit, integration and end-to-end (real LiteLLM) suites
test: install
	SIDECAR_E2E_REQUIRED=1 $(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -m "not e2e"

## chaos: 200 random faults (seeded; SEED=N to reproduce), a table of faults, checks and violations
chaos: install
	$(PY) tests/chaos.py --faults $${FAULTS:-200} $${SEED:+--seed $$SEED}

## bench: detection speed and cost against the peers -> benchmarks/RESULTS.md and latency.png
bench: install
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(PY) benchmarks/run.py

clean: stop
	rm -rf $(RUN) build *.egg-info

## tools: the operators' tools the ecosystem tests run against (promtool, node_exporter,
## Debian's supervisor); installs them with apt-get when root, else says how (tests skip)
.PHONY: tools
tools:
	@sh tests/install_tools.sh
test: tools
test-fast: tools
