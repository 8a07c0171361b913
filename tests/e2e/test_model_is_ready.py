"""A model's own `is_ready()` (Triton's python backend): asked at every model-readiness check (HTTP
GET /v2/models/<m>/ready, gRPC ModelReady); False, an exception, a value that is not a bool or a check slower than
five seconds make the model not ready (logged), and it is ready again once is_ready() says so. Inference and the
server's own readiness are unaffected. Stub and in process, sync and `async def is_ready`."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, start_seawall

IN_PROCESS = 'parameters { key: "SEAWALL_IN_PROCESS" value: { string_value: "true" } }\n'
ASYNC = 'parameters { key: "async" value: { string_value: "1" } }\n'


@pytest.fixture(scope="module", params=["stub", "in_process", "stub_async", "in_process_async"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("is_ready")
    shutil.copytree(TEST_MODELS / "ready_flag", root / "ready_flag")
    shutil.copytree(EXAMPLES / "add_sub", root / "add_sub")
    config = root / "ready_flag" / "config.pbtxt"
    config.write_text(
        config.read_text()
        + (IN_PROCESS if "in_process" in request.param else "")
        + (ASYNC if "async" in request.param else "")
    )
    process = start_seawall(repository=root)
    yield process
    process.stop()


def set_state(server: ServerProcess, state: int) -> None:
    tensor = httpclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([state], dtype=np.int32))
    with httpclient.InferenceServerClient(server.http) as client:
        result = client.infer("ready_flag", [tensor]).as_numpy("OUT")
    assert result is not None and int(result[0]) == state  # inference works whatever is_ready() says


def ready(server: ServerProcess) -> tuple[bool, bool]:
    """(HTTP, gRPC) readiness of ready_flag; the server itself and add_sub stay ready."""
    with httpclient.InferenceServerClient(server.http) as client:
        by_http = client.is_model_ready("ready_flag")
        assert client.is_server_ready() and client.is_model_ready("add_sub")
    with grpcclient.InferenceServerClient(server.grpc) as client:
        by_grpc = client.is_model_ready("ready_flag")
    return by_http, by_grpc


def test_is_ready_decides_the_models_readiness(server: ServerProcess) -> None:
    set_state(server, 0)
    assert ready(server) == (True, True)
    set_state(server, 1)
    assert ready(server) == (False, False)
    set_state(server, 0)
    assert ready(server) == (True, True)


def test_not_ready_answers_400_over_http(server: ServerProcess) -> None:
    set_state(server, 1)
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"http://{server.http}/v2/models/ready_flag/ready", timeout=30)
    assert caught.value.code == 400 and caught.value.read() == b'{"error":"Model version not ready"}'
    set_state(server, 0)
    assert ready(server) == (True, True)


@pytest.mark.parametrize(
    ("state", "logged"),
    [
        (2, "is_ready() failed: RuntimeError: is_ready raised on purpose"),
        (3, "is_ready() failed: is_ready() must return a boolean value"),
    ],
)
def test_a_failing_is_ready_is_not_ready_and_logged(server: ServerProcess, state: int, logged: str) -> None:
    set_state(server, state)
    assert ready(server) == (False, False)
    server.wait_for_log(logged)
    set_state(server, 0)
    assert ready(server) == (True, True)


def test_a_slow_is_ready_is_not_ready_after_five_seconds(server: ServerProcess) -> None:
    set_state(server, 4)
    started = time.monotonic()
    with httpclient.InferenceServerClient(server.http, network_timeout=60) as client:
        assert not client.is_model_ready("ready_flag")
    assert 4 < time.monotonic() - started < 8
    server.wait_for_log("is_ready() did not answer in time: not ready")
    set_state(server, 0)
    deadline = time.monotonic() + 30  # the slow call ends within 8 s; the next check asks again
    while ready(server) != (True, True):
        assert time.monotonic() < deadline
        time.sleep(0.2)
