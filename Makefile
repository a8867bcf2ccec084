# ktcluster — every target sets itself up from nothing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help install demo test test-fast kt-suite lint protos bench bench-quick clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install ktcluster editable with dev extras (no-op when up to date)

demo: $(STAMP) ## Run the default digits CNN search on an embedded local Ray (2 CPU workers)
	$(BIN)/ktc submit configs/digits-cnn.yaml --cluster configs/local.yaml

test: $(STAMP) ## Run the whole test suite, slow end-to-end tests included
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP) ## Run the suite without the slow end-to-end tests
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

kt-suite: $(STAMP) ## Run Keras Tuner's own tuner tests with every oracle behind a real chief (5 min on an idle 2-core machine)
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q -m kt_suite tests/kt_suite $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check orchestrator workers deploy tests bench
	$(BIN)/ruff format --check orchestrator workers deploy tests bench
	$(BIN)/mypy orchestrator workers deploy

protos: $(STAMP) ## Regenerate the gRPC code from orchestrator/protocol/protos/ktcluster.proto
	$(BIN)/python -m orchestrator.protocol.protos.generate

bench: $(STAMP) ## Run every benchmark (full) and rewrite BENCHMARKS.md
	RAY_AUTH_MODE=disabled $(BIN)/python -m bench.run

bench-quick: $(STAMP) ## Run every benchmark in quick mode (< 5 min)
	RAY_AUTH_MODE=disabled $(BIN)/python -m bench.run --quick

clean: ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
