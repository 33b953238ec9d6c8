# The operator's interface (DESIGN.md section 6). Everything runs from a local .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
DATA_DIR ?= ./var
MODEL_DIR ?= ./models
export PORT DATA_DIR MODEL_DIR

.PHONY: run test lint train bench bench-serving bench-instructions bench-offload bench-ingest bench-compare bench-redis-client sample clean

# One stamp per install flavour: re-install only when pyproject.toml changes.
$(VENV)/.run-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train]"
	touch $@

$(VENV)/.test-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,test]"
	touch $@ $(VENV)/.run-installed

## run: install, make sample data and a first model if there is none, and serve on $(PORT)
run: $(VENV)/.run-installed
	$(PY) -m training bootstrap --data-dir $(DATA_DIR)/sample --model-dir $(MODEL_DIR)
	$(PY) -m service

## test: install what the tests need and run every test
test: $(VENV)/.test-installed
	$(PY) -m pytest $(PYTEST_ARGS)

## lint: ruff check and format check
lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## train: fit a model on the sample data (EVENTS=... to use other files)
EVENTS ?= $(DATA_DIR)/sample/events.csv.gz
train: $(VENV)/.run-installed
	$(PY) -m training fit --events $(EVENTS) --model-dir $(MODEL_DIR)

## bench: the training/quality benchmark on ../shared/data
bench: $(VENV)/.test-installed
	$(PY) -m benchmarks.training

## bench-serving: the serving benchmark (needs wrk and a Redis on 127.0.0.1:6379; see docs/serving.md)
BENCH_SERVING_ARGS ?=
bench-serving: $(VENV)/.test-installed
	$(PY) -m benchmarks.serving $(BENCH_SERVING_ARGS)
	$(PY) -m benchmarks.serving_chart

## bench-instructions: instructions per request by endpoint beside the bare route (needs valgrind)
bench-instructions: $(VENV)/.test-installed
	$(PY) -m benchmarks.instructions $(BENCH_INSTRUCTIONS_ARGS)

## bench-compare: CPU per request of this checkout against BASE (a git revision), paired rounds under wrk
bench-compare: $(VENV)/.test-installed
	$(PY) -m benchmarks.compare --base $(BASE) $(BENCH_COMPARE_ARGS)

## bench-redis-client: a customer-state read's client CPU, redis-py against the store's shared connection
bench-redis-client: $(VENV)/.test-installed
	$(PY) -m benchmarks.redis_client

## bench-offload: health checks under exact rankings of a large catalogue, on the loop vs in threads
bench-offload: $(VENV)/.test-installed
	$(PY) -m benchmarks.offload

clean:
	rm -rf $(VENV) $(DATA_DIR)

## bench-ingest: POST /v1/events throughput and latency, single and batched (needs wrk)
bench-ingest: $(VENV)/.test-installed
	$(PY) -m benchmarks.ingest
