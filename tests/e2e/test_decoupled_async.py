"""`async def execute` of a decoupled model runs in the background, as Triton runs it: its instance takes the next
batch while an earlier execute still awaits; an exception it raises there is logged, and the stream it left open
ends with an error. From a stub and in process, over gRPC streaming (tritonclient)."""

from __future__ import annotations

import queue
import shutil
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.harness import TEST_MODELS, ServerProcess, start_seawall

IN_PROCESS = 'parameters { key: "SEAWALL_IN_PROCESS" value: { string_value: "true" } }\n'


@pytest.fixture(scope="module", params=["stub", "in_process"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("decoupled_async")
    shutil.copytree(TEST_MODELS / "decoupled_async", root / "decoupled_async")
    if request.param == "in_process":
        config = root / "decoupled_async" / "config.pbtxt"
        config.write_text(config.read_text() + IN_PROCESS)
    process = start_seawall(repository=root)
    yield process
    process.stop()


class Stream:
    """One gRPC stream to decoupled_async; `send(IN, mode)` and `take()` its next (result, error)."""

    def __init__(self, server: ServerProcess) -> None:
        self.results: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.client = grpcclient.InferenceServerClient(server.grpc)
        self.client.start_stream(callback=lambda result, error: self.results.put((result, error)))

    def send(self, value: int, mode: str) -> None:
        tensor = grpcclient.InferInput("IN", [1], "INT32")
        tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
        self.client.async_stream_infer("decoupled_async", [tensor], request_id=mode, parameters={"mode": mode})

    def take(self) -> tuple[Any, Any]:
        return self.results.get(timeout=60)

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def test_the_instance_executes_the_next_batch_while_an_execute_awaits(server: ServerProcess) -> None:
    waiting = server.log().count("decoupled_async: waiting")
    stream = Stream(server)
    try:
        started = time.monotonic()
        stream.send(1, "wait")
        server.wait_for_log("decoupled_async: waiting", waiting + 1)  # its execute awaits on the only instance
        stream.send(2, "release")  # runs although the first execute has not returned
        answers = [stream.take(), stream.take()]
        assert all(error is None for _, error in answers)
        assert sorted(int(result.as_numpy("OUT")[0]) for result, _ in answers) == [1, 2]
        assert time.monotonic() - started < 20  # not the 30 s the first would wait without the second
    finally:
        stream.close()
    with httpclient.InferenceServerClient(server.http) as client:
        assert client.is_server_ready() and client.is_model_ready("decoupled_async")


def test_an_exception_in_the_background_is_logged_and_its_stream_ends_with_an_error(server: ServerProcess) -> None:
    stream = Stream(server)
    try:
        stream.send(3, "raise")
        (first, error), (none, failure) = stream.take(), stream.take()
        assert error is None and int(first.as_numpy("OUT")[0]) == 3
        assert none is None
        assert failure.message() == "the model released the response sender without sending the final flag"
    finally:
        stream.close()
    server.wait_for_log("execute() of decoupled model 'decoupled_async' raised in the background")
    server.wait_for_log("ValueError: the async model raised on purpose")
    stream = Stream(server)  # the instance serves on
    try:
        stream.send(4, "release")
        result, error = stream.take()
        assert error is None and int(result.as_numpy("OUT")[0]) == 4
    finally:
        stream.close()
