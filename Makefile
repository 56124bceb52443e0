# One command each: `make demo` and `make test`. Only python3 (3.11+) and make are assumed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo serve test lint typecheck unit fuzz bench dashboard lock clean

# Dependencies come from the lock files (requirements/*.lock, written by `make lock`), then the
# project itself without dependencies, so an install is the same on every machine and every day.
$(STAMP): pyproject.toml requirements/dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version)'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.lock
	$(PY) -m pip install --quiet --no-deps -e .
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
	$(PY) -m pip install --quiet -r requirements/docs.lock
	$(PY) -m dashboards.render

# Re-resolves pyproject.toml's dependencies into requirements/*.lock: runtime (the Docker image),
# dev (runtime + the dev extra: `make install`, the test suite) and docs (dev + the docs extra:
# `make dashboard`). Pins already in a lock are kept unless they no longer fit; a full refresh
# is `make lock LOCK_FLAGS=--upgrade`. uv comes from PyPI (the dev extra), installed into .venv.
COMPILE := $(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 \
	--custom-compile-command 'make lock' $(LOCK_FLAGS) pyproject.toml
lock: $(STAMP)
	@$(VENV)/bin/uv --version >/dev/null 2>&1 || $(PY) -m pip install --quiet uv
	$(COMPILE) -o requirements/runtime.lock
	$(COMPILE) --extra dev -c requirements/runtime.lock -o requirements/dev.lock
	$(COMPILE) --extra dev --extra docs -c requirements/dev.lock -o requirements/docs.lock
	$(PY) -m pip install --quiet -r requirements/dev.lock
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .gateway .mypy_cache .pytest_cache .ruff_cache
