# Seawall: `make run` serves examples/models; `make test` runs the whole suite. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# grpc's older TCP endpoints (less CPU per call), as the container image sets them; see deploy/Dockerfile
GRPC_EXPERIMENTS ?= -event_engine_listener,-event_engine_for_all_other_endpoints

run: $(STAMP)
	GRPC_EXPERIMENTS=$(GRPC_EXPERIMENTS) $(BIN)/seawall --model-repository=examples/models --http-port=8000 --grpc-port=8001 --metrics-port=8002

test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist=loadfile

lint: $(STAMP)
	$(BIN)/ruff check seawall tests bench
	$(BIN)/ruff format --check seawall tests bench
	$(BIN)/mypy

bench: $(STAMP)  # extra flags: make bench BENCH_ARGS=--quick
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
