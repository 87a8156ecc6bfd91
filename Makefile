# Two entry points: `make demo` and `make test`. Each creates .venv when missing
# and installs what it needs. torch is pinned and installed first: 2.13.0 is a
# local CPU build here, any other spec may download a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed
# Debian packages the tests start for real: promtool and Prometheus, Alertmanager,
# and Chromium with its driver (the operator page's browser test). `make demo`
# needs none of them.
DEBS := prometheus prometheus-alertmanager chromium chromium-driver
DEB_BINS := /usr/bin/promtool /usr/bin/prometheus-alertmanager /usr/bin/chromium /usr/bin/chromedriver

.PHONY: demo test test-unit test-integration bench venv clean debs

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

# apt-get when root and a binary is missing; otherwise say what is missing.
debs:
	@missing=""; for b in $(DEB_BINS); do test -x $$b || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $(DEBS)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBS) >/dev/null; \
	  else \
	    echo "missing$$missing: run 'sudo apt-get install $(DEBS)' (the rule and alerting tests need them)"; \
	  fi; \
	fi

demo: $(STAMP)
	$(PY) -m monitor.demo

test: $(STAMP)
	@$(MAKE) --no-print-directory debs
	$(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

test-integration: $(STAMP)
	@$(MAKE) --no-print-directory debs
	$(PY) -m pytest -q -m integration tests/integration

bench: $(STAMP)
	$(PY) bench/ingest.py
	$(PY) bench/drift.py
	$(PY) bench/rules.py --json bench/results/rules.json

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info demo-out
