"""BLS of decoupled models against the real Triton 2.51: the same model (tests/models/bls_stream) iterates
`exec(decoupled=True)` / `async_exec(decoupled=True)` on both servers, and what its iterator gave (each response's
outputs, error code and message, the empty final response) must be the same: a decoupled callee, a callee that is
not decoupled, `exec()` without `decoupled` on a decoupled callee, errors before the stream (missing model, wrong
inputs) and errors inside it (an error response, a callee that raises).

Differences asserted (docs/differences.md): `async for` over the iterator (Triton 2.51's has no `__aiter__`),
and the code of an error response inside the stream (Triton 2.51: INTERNAL whatever the callee's code; Seawall:
the callee's code; the messages are the same).

Not compared: cancel() (Triton 2.51's iterator cancels by a different route and its timing decides what the
callee sees; tests/e2e/test_bls_decoupled.py checks Seawall's answer), and a callee that raises, whose traceback
text differs (only the code and the exception's line are compared).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, triton_and_seawall

Report = dict[str, list[dict[str, object]]]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    root = tmp_path_factory.mktemp("bls_decoupled")
    models = (EXAMPLES / "add_sub", *(TEST_MODELS / m for m in ("bls_stream", "square_int32", "decoupled_modes")))
    with triton_and_seawall(root, *models) as pair:
        yield pair


def _report(server: ServerProcess, parameters: dict[str, object], count: int | None) -> Report | str:
    """What bls_stream's iterator gave for IN = `count` (None: INPUT0/INPUT1 for add_sub)."""
    if count is None:
        inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
        inputs[0].set_data_from_numpy(np.arange(4, dtype=np.float32))
        inputs[1].set_data_from_numpy(np.ones(4, dtype=np.float32))
    else:
        inputs = [httpclient.InferInput("IN", [1], "INT32")]
        inputs[0].set_data_from_numpy(np.array([count], dtype=np.int32))
    with httpclient.InferenceServerClient(server.http, network_timeout=120) as client:
        try:
            result = client.infer("bls_stream", inputs, parameters=parameters)
        except InferenceServerException as exc:
            assert server.is_ready()
            return str(exc.message())
    text = result.as_numpy("REPORT")
    assert text is not None
    found: Report = json.loads(text[0])
    assert server.is_ready()
    return found


@pytest.mark.parametrize(
    ("parameters", "count"),
    [
        ({"mode": "sync"}, 3),
        ({"mode": "sync"}, 0),
        ({"mode": "async_await"}, 2),
        ({"mode": "twice"}, 2),
        ({"target": "decoupled_modes", "inner_mode": "inline"}, 2),
        ({"target": "decoupled_modes", "inner_mode": "thread"}, 2),
        ({"target": "add_sub", "mode": "sync"}, None),
        ({"mode": "unary"}, 3),
        ({"target": "missing"}, 3),
        ({"target": "add_sub"}, 3),
    ],
    ids=str,
)
def test_decoupled_calls_answer_as_triton(
    servers: tuple[ServerProcess, ServerProcess], parameters: dict[str, object], count: int | None
) -> None:
    triton, seawall = servers
    assert _report(seawall, parameters, count) == _report(triton, parameters, count)


@pytest.mark.parametrize(
    ("parameters", "count", "message"),
    [
        ({"target": "decoupled_modes", "inner_mode": "error"}, 1, "a bad request, says the model"),
        ({}, -1, "IN must not be negative, got -1"),
    ],
    ids=["error_response", "callee_refuses"],
)
def test_an_error_response_in_the_stream_keeps_its_code_on_seawall(
    servers: tuple[ServerProcess, ServerProcess], parameters: dict[str, object], count: int, message: str
) -> None:
    triton, seawall = servers
    assert _report(triton, parameters, count) == {"responses": [{"outputs": {}, "error": [1, message]}]}
    assert _report(seawall, parameters, count) == {"responses": [{"outputs": {}, "error": [3, message]}]}


def test_async_for_over_the_iterator_works_on_seawall_only(servers: tuple[ServerProcess, ServerProcess]) -> None:
    triton, seawall = servers
    refused = _report(triton, {"mode": "async_for"}, 2)
    assert isinstance(refused, str) and "'async for' requires an object with __aiter__ method" in refused
    expected = [{"outputs": {"OUT": [i]}, "error": None} for i in (0, 1)] + [{"outputs": {}, "error": None}]
    assert _report(seawall, {"mode": "async_for"}, 2) == {"responses": expected}
    assert _report(seawall, {"mode": "sync"}, 2) == _report(triton, {"mode": "sync"}, 2)  # both serve on


def test_a_callee_that_raises_is_one_error_response_on_both(servers: tuple[ServerProcess, ServerProcess]) -> None:
    parameters = {"target": "decoupled_modes", "inner_mode": "raise"}
    answers = []
    for server in servers:
        found = _report(server, parameters, 1)
        assert isinstance(found, dict)
        answers.append(found["responses"])
    for responses in answers:
        assert len(responses) == 1 and responses[0]["outputs"] == {}
        code, message = responses[0]["error"]  # type: ignore[misc]
        assert "ValueError: the model raised on purpose" in message
    assert answers[0][0]["error"][0] == answers[1][0]["error"][0]  # type: ignore[index]
