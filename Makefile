# Seawall: `make run` serves examples/models; `make test` runs the whole suite. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: native run test lint bench bench-backends bench-streaming bench-many-models clean examples scaleout-demo reliability fuzz

# the pytorch backend's tests need torch (the `torch` extra asks for >=2.6): the CPU build of 2.13.0, which pip
# takes from this machine's wheel directory (a plain `torch` from PyPI is a CUDA build of several GB)
TORCH_SPEC ?= torch==2.13.0

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,fuzz]'
	$(BIN)/pip install -q '$(TORCH_SPEC)'
	touch $(STAMP)

# the request path compiled by mypyc into seawall/_native (seawall/native.py): rebuilt when a compiled module's
# source changed; without it (no C compiler) everything runs from the sources, as the start-up log says
native: $(STAMP)
	$(BIN)/python -m seawall.native_build --if-stale >.native-build.log 2>&1 \
		|| { tail -n 30 .native-build.log; echo "native build failed: running pure Python"; }

run: $(STAMP) native
	$(BIN)/seawall --model-repository=examples/models --http-port=8000 --grpc-port=8001 --metrics-port=8002

test: $(STAMP) native
	$(BIN)/pytest -q -n 2 --dist=loadfile

lint: $(STAMP)
	$(BIN)/ruff check seawall tests bench examples/python_backend_examples.py
	$(BIN)/ruff format --check seawall tests bench examples/python_backend_examples.py
	$(BIN)/mypy

# Fuzzing (issue 14): every parser's atheris target for FUZZ_RUNS executions (a crash leaves its input in
# .fuzz/crash-*), the codec properties with FUZZ_EXAMPLES hypothesis examples each, then schemathesis against a
# real server from docs/openapi.yaml for FUZZ_API_EXAMPLES per operation (at most FUZZ_API_SECONDS).
FUZZ_RUNS ?= 20000
FUZZ_EXAMPLES ?= 2000
FUZZ_API_EXAMPLES ?= 100
FUZZ_API_SECONDS ?= 300
FUZZ_TARGETS := http_infer_json http_infer_binary http_generate raw_tensor bytes_elements grpc_infer grpc_infer_split config_pbtxt http2_frames
fuzz: export SEAWALL_PURE_PYTHON = 1
fuzz: $(STAMP)  # from the sources: atheris follows coverage in Python bytecode, which compiled modules lack
	mkdir -p .fuzz
	for target in $(FUZZ_TARGETS); do \
		$(BIN)/python -m tests.fuzz.atheris_run $$target $(FUZZ_RUNS) 2>.fuzz/$$target.log \
			|| { tail -n 60 .fuzz/$$target.log; exit 1; }; \
	done
	SEAWALL_HYPOTHESIS_PROFILE=fuzz SEAWALL_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -p no:cacheprovider \
		tests/fuzz/test_properties.py tests/fuzz/test_http_wire.py tests/fuzz/test_regressions.py
	$(BIN)/python -m tests.fuzz.schemathesis_run $(FUZZ_API_EXAMPLES) $(FUZZ_API_SECONDS)

bench: $(STAMP) native  # extra flags: make bench BENCH_ARGS=--quick
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.streaming
	$(BIN)/python -m bench.many_models --stub-start fork

bench-backends: $(STAMP) native  # onnxruntime and pytorch overhead vs direct calls; extra flags: BENCH_ARGS=--seconds 3
	$(BIN)/python -m bench.backend_overhead $(BENCH_ARGS)

# 100 copies of add_sub on one server beside Triton: density, spread load, and Seawall's load-on-request budget
bench-many-models: $(STAMP) native
	$(BIN)/python -m bench.many_models $(BENCH_ARGS)

# the fault tests, one line each with its figure: shutdown, slow clients, a soak of SOAK_SECONDS, 50 model
# load/unload cycles (memory must come back), the scale-out
SOAK_SECONDS ?= 180
reliability: $(STAMP) native
	SEAWALL_SOAK_SECONDS=$(SOAK_SECONDS) SEAWALL_LOAD_CYCLES=50 $(BIN)/python -m pytest -q -p tests.reliability.report \
		tests/e2e/test_http_shutdown.py tests/e2e/test_group_shutdown.py tests/security/test_http_slow_clients.py tests/e2e/test_disconnect_storms.py \
		tests/reliability tests/deploy/test_scaleout.py

# a decoupled model streaming 100 responses per request, gRPC and SSE, Seawall vs Triton with four clients
bench-streaming: $(STAMP) native
	$(BIN)/python -m bench.streaming $(BENCH_ARGS)

# nginx in front of three Seawall processes, one SIGKILLed and one rolled under load (needs nginx-light)
scaleout-demo: $(STAMP)
	$(BIN)/python -m tests.deploy.scaleout --steady-seconds=5

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
