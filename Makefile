# Two entry points: `make demo` and `make test`. Each creates .venv when missing
# and installs what it needs. torch is pinned and installed first: 2.13.0 is a
# local CPU build here, any other spec may download a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit test-integration bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m monitor.demo

test: $(STAMP)
	$(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest -q -m integration tests/integration

bench: $(STAMP)
	$(PY) bench/ingest.py
	$(PY) bench/drift.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info demo-out
