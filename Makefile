# Set-up and everyday commands. `make demo` and `make test` are the two README commands.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of torch unless an NVIDIA GPU is visible (override: make CONSTRAINTS=constraints/gpu.txt ...)
CONSTRAINTS ?= $(if $(shell command -v nvidia-smi 2>/dev/null),constraints/gpu.txt,constraints/cpu.txt)
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c $(CONSTRAINTS)

.PHONY: install install-test browser demo test test-slow test-slow-ci bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python            ## the package and its runtime dependencies
	$(PIP) -e .

install-test: $(BIN)/python browser ## the package with test dependencies
	$(PIP) -e '.[test]'

# The report and annotation-page tests drive Debian's Chromium (no browser download: playwright is
# pointed at /usr/bin/chromium). Installed with apt when missing and we are root; else those tests skip.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium not installed: browser tests will skip"; }

demo: install                     ## the main job on the embedded defaults, offline
	$(BIN)/valind demo

test: install-test                ## the default test run (what CI runs)
	$(BIN)/python -m pytest -m "not slow and not gpu"

test-slow: install-test           ## every test with real models (tens of minutes on 2 cores)
	$(BIN)/python -m pytest -m "slow"

# CI's second step: the real-backend tests that fit its time budget (packaged encoder, SmolLM2
# conversion and extraction, a real llama.cpp server, the whole demo chain at test size). The
# heavier real-model runs (training sweeps, QA and generation on SmolLM2) run with `make test-slow`.
SLOW_CI_FILES := tests/test_extract_embedded.py tests/test_models.py tests/test_extract_hf.py tests/test_extract_openai.py \
                 tests/test_demo.py
test-slow-ci: install-test
	$(BIN)/python -m pytest -m "slow and not gpu" $(SLOW_CI_FILES)

bench: install-test               ## benchmarks; figures go to bench/RESULTS.md by hand
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) valind-demo .pytest_cache
