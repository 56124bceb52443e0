# One command each: `make demo` and `make test`. Only python3 (3.11+) and make are assumed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo serve test lint typecheck unit fuzz bench dashboard clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version)'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m gateway demo

serve: $(STAMP)
	$(PY) -m gateway serve --config config.yaml

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

test: lint typecheck
	$(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest tests/unit

# schemathesis against a real gateway process, at least 1,000 cases with the client key (and
# as many again without); the test suite runs the same test with a small budget.
# FUZZ_SEED=<seed> replays a run whose report line printed that seed.
FUZZ_EXAMPLES ?= 250
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_MIN_CASES=1000 \
		$(PY) -m pytest -p no:cacheprovider tests/e2e/test_fuzz.py

bench: $(STAMP)
	$(PY) -m benchmarks
	$(PY) -m benchmarks.videos

dashboard: $(STAMP)
	$(PY) -m pip install --quiet -e '.[docs]'
	$(PY) -m dashboards.render

clean:
	rm -rf $(VENV) .gateway .mypy_cache .pytest_cache .ruff_cache
