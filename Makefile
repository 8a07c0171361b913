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

run: $(STAMP)
	$(BIN)/seawall --model-repository=examples/models --http-port=8000 --grpc-port=8001 --metrics-port=8002

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
