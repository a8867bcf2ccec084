# ktcluster — every target sets itself up from nothing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help install demo test test-fast kt-suite lint protos bench bench-quick bench-issue15 clean

help: ## Show this help
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

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

bench-issue15: $(STAMP) ## Issue 15's benchmarks (BENCHMARKS.md sections 10-13; about 25 min), printed for pasting
	RAY_AUTH_MODE=disabled $(BIN)/python -m bench.cnn_side_by_side --runs 3 --kt-runs 1
	RAY_AUTH_MODE=disabled $(BIN)/python -m bench.runner_overhead --trials 5 --epochs 15 --plain-runs 3
	RAY_AUTH_MODE=disabled $(BIN)/python -m bench.schedulers_bench --workload sleep --seeds 1 2 3 4 5
	RAY_AUTH_MODE=disabled $(BIN)/python -m bench.schedulers_bench --workload cnn --seeds 1 2 3
	$(BIN)/python -m bench.scheduler_cost --sizes 100 1000 10000 100000 1000000 --reports 2000
	RAY_AUTH_MODE=disabled $(BIN)/python -m bench.user_clock --runs 3 --sizes 2,16

clean: ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
