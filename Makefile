# Seawall: `make run` serves examples/models; `make test` runs the whole suite. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-torch lint bench clean examples

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/seawall --model-repository=examples/models --http-port=8000 --grpc-port=8001 --metrics-port=8002

test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist=loadfile

# the pytorch backend's tests (tests/e2e/test_pytorch.py skips without torch, which is large): install torch into
# $(VENV), then run them; TORCH_SPEC picks the build (e.g. TORCH_SPEC='torch==2.13.0' for a local CPU wheel)
TORCH_SPEC ?= torch>=2.6,<3
test-torch: $(STAMP)
	$(BIN)/pip install -q '$(TORCH_SPEC)'
	$(BIN)/pytest -q tests/e2e/test_pytorch.py tests/e2e/test_pytorch_runtime.py

lint: $(STAMP)
	$(BIN)/ruff check seawall tests bench examples/python_backend_examples.py
	$(BIN)/ruff format --check seawall tests bench examples/python_backend_examples.py
	$(BIN)/mypy

bench: $(STAMP)  # extra flags: make bench BENCH_ARGS=--quick
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# NVIDIA's python_backend examples, unchanged, against Seawall: make examples PYTHON_BACKEND=<work tree or bare
# git dir of github.com/triton-inference-server/python_backend> [EXAMPLES_ARGS=--only=add_sub,decoupled]. Its own
# environment (torch, jax and the clients' packages go there, never into $(VENV)).
PYTHON_BACKEND ?=
EXAMPLES_VENV ?= .venv-examples
examples:
ifeq ($(strip $(PYTHON_BACKEND)),)
	@echo "make examples: skipped: no python_backend checkout given (make examples PYTHON_BACKEND=/path/to/python_backend)"
else
	test -x $(EXAMPLES_VENV)/bin/python || $(PYTHON) -m venv $(EXAMPLES_VENV)
	$(EXAMPLES_VENV)/bin/pip install -q -e . 'tritonclient[all]' requests
	$(EXAMPLES_VENV)/bin/python examples/python_backend_examples.py --python-backend=$(PYTHON_BACKEND) $(EXAMPLES_ARGS)
endif

clean:
	rm -rf $(VENV) $(EXAMPLES_VENV) .pytest_cache .mypy_cache .ruff_cache
