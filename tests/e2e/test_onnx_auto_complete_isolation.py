"""ONNX auto-complete runs onnxruntime in a throw-away worker process, never in the server: a model whose parsing
crashes the worker (SIGSEGV, as a parser bug would) or never ends (a graph whose session takes far longer than
auto-complete-timeout-seconds) fails its own load with a message naming it, and the server and its other models
keep serving. Auto-complete itself still gives Triton's config (tests/e2e/test_onnxruntime.py checks its fields)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import ModelProto, TensorProto, helper

from tests import onnx_models as m
from tests.harness import ServerProcess, http_request, start_seawall

pytest.importorskip("onnxruntime")

#: every model instance starts a worker process importing its runtime: many at once on a busy machine take a while
STARTUP_S = 240
#: a chain this long takes onnxruntime seconds to turn into a session (6.1 s on a quiet machine, 12 s for 20000 nodes
#: at load average 5): far beyond the TIMEOUT_S the hang test allows, and a wide window for the crash test to find
#: its worker
CHAIN_NODES = 60000
#: auto-complete-timeout-seconds of the hang test (the slow model is its server's only auto-complete): at 8 s a quiet
#: machine described the chain in time and the model loaded
TIMEOUT_S = 1
A = np.array([[1.5, 2.0, -3.0, 4.25]], dtype=np.float32)
PARTIAL = 'name: "{name}"\nbackend: "onnxruntime"\n'


def _graph(name: str, nodes: list[Any]) -> ModelProto:
    """A model of `nodes` from X [batch, 4] to Y [batch, 4]."""
    return m.model_of(
        helper.make_graph(
            nodes,
            name,
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])],
        )
    )


def chain(nodes: int) -> ModelProto:
    """Y = X * (nodes + 1) as a chain of `nodes` Adds: valid, and slow to load."""
    return _graph(
        "chain",
        [helper.make_node("Identity", ["X"], ["t0"])]
        + [helper.make_node("Add", [f"t{i}", "X"], [f"t{i + 1}"]) for i in range(nodes)]
        + [helper.make_node("Identity", [f"t{nodes}"], ["Y"])],
    )


def unknown_op() -> ModelProto:
    """A well-formed ONNX file (the server's intake accepts it) whose graph onnxruntime refuses: an unknown op."""
    return _graph("unknown", [helper.make_node("NoSuchOp", ["X"], ["Y"])])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served model and the slow one: the only auto-complete at start-up is the slow model's (a busy machine
    slows a describing worker's start, which must not count against another model's timeout)."""
    root = tmp_path_factory.mktemp("onnx_isolation")
    m.write(root, "served", m.matmul(), m.MATMUL_CONFIG.format(name="served", extra=""))
    m.write(root, "slow_auto", chain(CHAIN_NODES), PARTIAL.format(name="slow_auto"))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Auto-complete with the default timeout: a model it completes, and one onnxruntime refuses."""
    root = tmp_path_factory.mktemp("onnx_auto")
    m.write(root, "served", m.matmul(), m.MATMUL_CONFIG.format(name="served", extra=""))
    m.write(root, "auto_served", m.matmul(), PARTIAL.format(name="auto_served"))
    m.write(root, "unknown_op", unknown_op(), PARTIAL.format(name="unknown_op"))
    process = start_seawall("--exit-on-error=false", repository=root, timeout=STARTUP_S)
    yield process
    process.stop()


def _workers(server: ServerProcess, model: str) -> list[int]:
    """The server's auto-complete worker processes for `model` (their command line names both)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                argv = file.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as file:
                parent = int(file.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if parent == server.process.pid and f"model={model}".encode() in argv and b"auto-complete" in argv:
            found.append(int(entry))
    return found


def _wait_for_workers(server: ServerProcess, model: str, present: bool, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while bool(found := _workers(server, model)) != present:
        assert time.monotonic() < deadline, f"auto-complete worker of {model} {'never started' if present else 'left'}"
        time.sleep(0.05)
    return found


def _index(server: ServerProcess) -> dict[str, dict[str, str]]:
    status, _, body = http_request(server, "POST", "/v2/repository/index")
    assert status == 200
    return {entry["name"]: entry for entry in json.loads(body)}


def _serves(server: ServerProcess, model: str) -> None:
    """`model` answers over HTTP and gRPC with the matmul's result, and the server is live."""
    assert http_request(server, "GET", "/v2/health/live")[0] == 200
    expected = A @ m.WEIGHTS
    for module, client in (
        (httpclient, httpclient.InferenceServerClient(server.http)),
        (grpcclient, grpcclient.InferenceServerClient(server.grpc)),
    ):
        tensor = module.InferInput("X", list(A.shape), "FP32")
        tensor.set_data_from_numpy(A)
        np.testing.assert_allclose(client.infer(model, [tensor]).as_numpy("Y"), expected, rtol=1e-6)


@pytest.fixture(scope="module")
def hang_server(root: Path) -> Iterator[ServerProcess]:
    process = start_seawall(
        "--exit-on-error=false",
        f"--backend-config=onnxruntime,auto-complete-timeout-seconds={TIMEOUT_S}",
        repository=root,
        timeout=STARTUP_S,
    )
    yield process
    process.stop()


def test_a_model_whose_parsing_hangs_fails_its_load_after_the_timeout(hang_server: ServerProcess) -> None:
    entry = _index(hang_server)["slow_auto"]
    assert (entry["state"], entry.get("reason")) == (
        "UNAVAILABLE",
        f"auto-complete of model 'slow_auto' did not finish within {TIMEOUT_S} s: its onnxruntime worker was stopped",
    )
    _wait_for_workers(hang_server, "slow_auto", present=False)  # the worker was killed, not left parsing
    _serves(hang_server, "served")


def test_auto_complete_in_a_worker_still_completes_the_config(server: ServerProcess) -> None:
    config = httpclient.InferenceServerClient(server.http).get_model_config("auto_served")
    assert (config["platform"], config["backend"], config["max_batch_size"]) == ("onnxruntime_onnx", "onnxruntime", 4)
    assert "dynamic_batching" in config
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [("X", "TYPE_FP32", [4])]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [("Y", "TYPE_FP32", [4])]
    assert _workers(server, "auto_served") == []  # the describing worker is gone; the model's own serve
    _serves(server, "auto_served")


def test_a_model_onnxruntime_refuses_fails_with_its_error_from_the_worker(server: ServerProcess) -> None:
    entry = _index(server)["unknown_op"]
    assert entry["state"] == "UNAVAILABLE"
    assert entry["reason"].startswith("unable to load model 'unknown_op': onnx runtime error ")
    assert "NoSuchOp" in entry["reason"]
    _serves(server, "served")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_model_whose_parsing_crashes_its_worker_fails_only_its_own_load(root: Path, protocol: str) -> None:
    server = start_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",
        "--load-model=served",
        repository=root,
        timeout=STARTUP_S,
    )
    try:
        outcome: list[BaseException | None] = []

        def load() -> None:
            try:
                if protocol == "http":
                    httpclient.InferenceServerClient(server.http, network_timeout=STARTUP_S).load_model("slow_auto")
                else:
                    grpcclient.InferenceServerClient(server.grpc).load_model("slow_auto", client_timeout=STARTUP_S)
                outcome.append(None)
            except Exception as exc:  # the load's error, checked below
                outcome.append(exc)

        loader = threading.Thread(target=load)
        loader.start()
        (worker,) = _wait_for_workers(server, "slow_auto", present=True)
        os.kill(worker, signal.SIGSEGV)  # what a crash of onnxruntime's parser does to the process
        loader.join(STARTUP_S)
        assert not loader.is_alive()
        (error,) = outcome
        assert error is not None
        message = error.message() if hasattr(error, "message") else str(error)  # type: ignore[attr-defined]
        assert message == (
            "load failed for model 'slow_auto': auto-complete of model 'slow_auto' failed: its onnxruntime worker "
            "process stopped while reading the model;\n"
        )
        assert server.process.poll() is None
        _serves(server, "served")
        assert http_request(server, "GET", "/v2/models/served/ready")[0] == 200
        server.wait_for_log("the onnxruntime worker describing it for auto-complete died")
    finally:
        server.stop()
