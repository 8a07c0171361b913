"""BLS from a decoupled model (tests/models/bls_decoupled_caller, and bls_decoupled_async_caller whose `async def
execute` runs in the background), in a stub and in process (SEAWALL_IN_PROCESS):
`exec()` and `exec(decoupled=True)` made inside execute() stream through the model's response sender, the
callee's error responses come through as error events, and the calls of an in-process model from a thread of its
own are refused (docs/differences.md) while a stub serves them; the server stays ready after each."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, http_call, start_seawall

IN_PROCESS = 'parameters { key: "SEAWALL_IN_PROCESS" value: { string_value: "true" } }\n'
REFUSED = "TritonModelException: BLS is only supported during the 'execute' function."


@pytest.fixture(scope="module", params=["stub", "in_process"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("bls_from_decoupled")
    callers = ("bls_decoupled_caller", "bls_decoupled_async_caller")
    for source in (EXAMPLES / "add_sub", TEST_MODELS / "square_int32", *(TEST_MODELS / name for name in callers)):
        shutil.copytree(source, root / source.name)
    for name in callers if request.param == "in_process" else ():
        config = root / name / "config.pbtxt"
        config.write_text(config.read_text() + IN_PROCESS)
    process = start_seawall(repository=root)
    process.in_process = request.param == "in_process"  # type: ignore[attr-defined]
    yield process
    process.stop()


def stream(
    server: ServerProcess, document: dict[str, Any], status: int = 200, model: str = "bls_decoupled_caller"
) -> list[Any]:
    """The events of generate_stream on `model` (`status`: the first event's); the server is ready afterwards."""
    body = json.dumps(document).encode()
    found, headers, reply = http_call(server.http, "POST", f"/v2/models/{model}/generate_stream", body)
    assert found == status, reply
    assert headers["content-type"].startswith("text/event-stream")
    assert http_call(server.http, "GET", "/v2/health/ready")[0] == 200
    return [json.loads(line[len(b"data: ") :]) for line in reply.split(b"\n\n") if line]


def outs(events: list[Any]) -> list[Any]:
    return [event.get("OUT", event.get("error")) for event in events]


def test_calls_from_execute_stream_through_the_sender(server: ServerProcess) -> None:
    assert outs(stream(server, {"IN": 3})) == [4, 0, 1, 2]
    assert outs(stream(server, {"IN": 0})) == [1]


def test_an_error_response_of_the_callee_is_an_error_event(server: ServerProcess) -> None:
    assert outs(stream(server, {"IN": -1})) == [0, "IN must not be negative, got -1"]


def test_calls_from_a_thread_of_the_model(server: ServerProcess) -> None:
    if getattr(server, "in_process", False):  # refused: only the thread running execute() may call
        assert outs(stream(server, {"IN": 2, "thread": True}, 500)) == [REFUSED]
    else:
        assert outs(stream(server, {"IN": 2, "thread": True})) == [3, 0, 1]
    assert outs(stream(server, {"IN": 1})) == [2, 0]  # the model serves on


def test_async_calls_from_an_async_execute_in_the_background(server: ServerProcess) -> None:
    """`async def execute` of a decoupled model runs in the background (as in Triton): its awaited calls work."""
    model = "bls_decoupled_async_caller"
    assert outs(stream(server, {"IN": 3}, model=model)) == [4, 0, 1, 2]
    assert outs(stream(server, {"IN": -1}, model=model)) == [0, "IN must not be negative, got -1"]
