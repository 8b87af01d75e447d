# Watchkeeper: `make run` starts the product, `make test` runs every test. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench build clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'setuptools>=77' wheel 'Cython>=3' 'numpy>=2'

$(STAMP): $(PY) pyproject.toml setup.py
	$(PY) -m pip install --quiet 'setuptools>=77' wheel 'Cython>=3' 'numpy>=2'
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

build: $(STAMP)
	$(PY) setup.py --quiet build_ext --inplace

run: build
	$(PY) scripts/make_run.py

test: build
	$(VENV)/bin/ruff check agent hmm_core desktop_app tests benchmarks scripts setup.py
	$(VENV)/bin/mypy
	$(PY) -m pytest

lint: build
	$(VENV)/bin/ruff check agent hmm_core desktop_app tests benchmarks scripts setup.py
	$(VENV)/bin/mypy

bench: build
	for script in benchmarks/bench_*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf build $(VENV) hmm_core/_kernels.c hmm_core/_kernels*.so agent/data/_scan.c agent/data/_scan*.so \
		agent/ledger/_clone.c agent/ledger/_clone*.so
