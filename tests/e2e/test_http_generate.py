"""End-to-end tests of the generate extension (`.../generate`, `.../generate_stream`): Triton's JSON mapping of
inputs, parameters and outputs, the exact bytes of an event stream, every malformed body with its exact status and
message (the server stays ready after each), the inference restriction, and clients that go away mid-request."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, http_call, start_seawall

MODELS = (EXAMPLES / "add_sub", EXAMPLES / "string_identity") + tuple(
    TEST_MODELS / name for name in ("generate_echo", "error_raise", "error_response", "slow")
)
SSE = "text/event-stream; charset=utf-8"
NOT_ONE = (
    "generate expects model to produce exactly 1 response, use generate stream for model that generates various "
    "number of responses"
)
LIMIT = 1 << 20  # --http-max-input-size of the test server


def copy_models(root: Path, *models: Path) -> Path:
    for source in models:
        shutil.copytree(source, root / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = copy_models(tmp_path_factory.mktemp("generate"), *MODELS)
    process = start_seawall(f"--http-max-input-size={LIMIT}", repository=root)
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def still_ready(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "server" in request.fixturenames:
        server: ServerProcess = request.getfixturevalue("server")
        assert http_call(server.http, "GET", "/v2/health/ready")[0] == 200, "server not ready afterwards"
        assert server.process.poll() is None


def exchange(address: str, path: str, body: bytes, headers: bytes = b"") -> bytes:
    """The exact bytes of the reply to one POST (the connection is closed by the client's request)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%bConnection: close\r\n\r\n"
        sock.sendall(head % (path.encode(), len(body), headers) + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def split_reply(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, lower-case headers and the raw body (still chunked when it was sent so)."""
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def dechunk(body: bytes) -> list[bytes]:
    """The chunks of a chunked body, checking its framing (the last chunk ends it)."""
    chunks = []
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n", body
            return chunks
        chunks.append(body[:size])
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]


def events(chunks: list[bytes]) -> list[Any]:
    """The JSON documents of Server-Sent Events, one `data:` event per chunk."""
    documents = []
    for chunk in chunks:
        assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n") and chunk.count(b"\n") == 2, chunk
        documents.append(json.loads(chunk[len(b"data: ") : -2]))
    return documents


def generate(server: ServerProcess, model: str, document: Any, stream: bool = False) -> tuple[int, Any]:
    route = "generate_stream" if stream else "generate"
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    status, headers, reply = http_call(server.http, "POST", f"/v2/models/{model}/{route}", body)
    if stream and status == 200:
        assert headers["content-type"] == SSE
        return status, [json.loads(line[len(b"data: ") :]) for line in reply.split(b"\n\n") if line]
    assert headers["content-type"] == "application/json"
    return status, json.loads(reply)


# ------------------------------------------------------------------------------------------------ mapping


def test_generate_maps_inputs_parameters_and_outputs(server: ServerProcess) -> None:
    document = {
        "text_input": "hi",
        "values": [1, 2.5, 3],
        "flag": True,
        "id": "42",
        "parameters": {"temperature": 0.5, "stream": False, "pair": [1, 2], "n": 3, "s": "x"},
    }
    status, headers, body = http_call(server.http, "POST", "/v2/models/generate_echo/generate", json.dumps(document))
    assert (status, headers["content-type"]) == (200, "application/json")
    # keys sorted as Triton writes them; one element unwrapped; `id` also counts as a parameter, as in Triton
    assert body == (
        b'{"count":5,"id":"42","model_name":"generate_echo","model_version":"1","text_output":"hi flag",'
        b'"values_out":[2.0,5.0,6.0]}'
    )


def test_generate_stream_bytes(server: ServerProcess) -> None:
    body = b'{"INPUT0": [1, 2, 3, 4], "INPUT1": [1, 1, 1, 1]}'
    status, headers, raw = split_reply(exchange(server.http, "/v2/models/add_sub/generate_stream", body))
    assert (status, headers["content-type"], headers["transfer-encoding"]) == (200, SSE, "chunked")
    assert "content-length" not in headers
    assert raw == (
        b"6c\r\ndata: "
        b'{"OUTPUT0":[2.0,3.0,4.0,5.0],"OUTPUT1":[0.0,1.0,2.0,3.0],"model_name":"add_sub","model_version":"1"}'
        b"\n\n\r\n0\r\n\r\n"
    )


def test_request_the_model_sees(server: ServerProcess) -> None:
    """Parameters reach the model as request parameters (nested ones too), `id` as the request id and a parameter;
    a batching model gets a batch of one."""
    document = {
        "INPUT0": [1, 2],
        "id": "r1",
        "k": "v",
        "parameters": {"sleep_ms": 1, "b": True, "sequence_id": 5, "timeout": 60_000_000},
    }
    status, reply = generate(server, "slow", document)
    assert status == 200
    seen = json.loads(reply["REQUEST"])
    assert (seen["id"], seen["correlation_id"]) == ("r1", 5)  # scheduling keys act as on the infer route
    assert seen["parameters"] == {"id": "r1", "k": "v", "sleep_ms": 1, "b": True}
    assert reply["OUTPUT0"] == [1.0, 2.0] and reply["id"] == "r1"


def test_a_key_given_twice_keeps_the_last_value(server: ServerProcess) -> None:
    status, reply = generate(server, "generate_echo", b'{"text_input": "a", "text_input": "b"}')
    assert (status, reply["text_output"]) == (200, "b")


@pytest.mark.parametrize(
    ("document", "text_output", "values_out"),
    [
        ({"text_input": ["a", "b"]}, ["a", "b"], []),  # two elements: batch of one, shape [1, 2]
        ({"text_input": [["a"]]}, "a", []),  # nested arrays are flattened
        ({"text_input": "a", "values": []}, "a", []),  # no element: the -1 dimension is 0
        ({"parameters": {"text_input": "b"}}, "b", []),  # an input inside `parameters`
        ({"text_input": "\u00e9\u0000"}, "\u00e9\u0000", []),
        ({"text_input": "a", "values": 7}, "a", 14.0),  # a scalar is one element
        ({"text_input": "a", "values": [[1], [2]]}, "a", [2.0, 4.0]),
    ],
)
def test_input_shapes(server: ServerProcess, document: Any, text_output: Any, values_out: Any) -> None:
    status, reply = generate(server, "generate_echo", document)
    assert status == 200, reply
    assert (reply["text_output"], reply["values_out"]) == (text_output, values_out)


def test_every_datatype_by_json(server: ServerProcess) -> None:
    document = {"INPUT0": ["x", "yz"]}
    assert generate(server, "string_identity", document) == (
        200,
        {"LENGTH": [1, 2], "OUTPUT0": ["x", "yz"], "model_name": "string_identity", "model_version": "1"},
    )


def test_a_version_in_the_path(server: ServerProcess) -> None:
    body = b'{"INPUT0": [1, 2, 3, 4], "INPUT1": [0, 0, 0, 0]}'
    status, _, reply = http_call(server.http, "POST", "/v2/models/add_sub/versions/1/generate_stream", body)
    assert status == 200 and reply.startswith(b'data: {"OUTPUT0":[1.0,2.0,3.0,4.0]')


def test_stream_connection_is_kept_alive(server: ServerProcess) -> None:
    """A chunked stream ends cleanly: the same connection then serves another stream and a plain infer."""
    host, port = server.http.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        body = json.dumps({"INPUT0": [1, 2, 3, 4], "INPUT1": [1, 1, 1, 1]})
        for _ in range(2):
            connection.request("POST", "/v2/models/add_sub/generate_stream", body)
            reply = connection.getresponse()
            assert reply.status == 200 and reply.getheader("transfer-encoding") == "chunked"
            assert reply.read().startswith(b'data: {"OUTPUT0":[2.0')
        connection.request("POST", "/v2/models/add_sub/generate", body)
        assert connection.getresponse().read().startswith(b'{"OUTPUT0":[2.0')
        connection.request("GET", "/v2/health/ready")
        assert connection.getresponse().status == 200
    finally:
        connection.close()


# ------------------------------------------------------------------------------------------------- errors


_TYPE = "has invalid type. It should be either 'int', 'bool', or 'string'."
_JSON = "failed to parse the request JSON buffer: "
_OBJECT = _JSON + "expected a JSON object"
_DATA = "Unable to parse 'data' of input "
_SHAPE = "The schema can not convert input '{}' to tensor with proper shape"
_NESTED = "Converting keyword: 'parameters': "
_MISSING = (
    "[request id: <id_unknown>] expected number of inputs between 1 and 4 but got {} inputs for model "
    "'generate_echo'. Got input(s) [{}], but missing required input(s) ['text_input']. Please provide all "
    "required input(s)."
)
#: (body, status, message); a message ending with ": " is a prefix
MALFORMED = [
    (b"", 400, _JSON + "The document is empty."),
    (b"not json", 400, _JSON),
    (b"[1, 2]", 400, _OBJECT),
    (b'"text"', 400, _OBJECT),
    (b"null", 400, _OBJECT),
    (b'{"text_input": "a"]]]', 400, _JSON),
    (b'{"x": ' + b"[" * 200 + b"]" * 200 + b"}", 400, "request JSON is nested deeper than 100 levels"),
    (b'{"text_input": 5}', 400, _DATA + "'text_input': BYTES elements must be strings"),
    (b'{"text_input": null}', 400, _DATA + "'text_input': BYTES elements must be strings"),
    (b'{"text_input": "a", "pair": [1, 2, 3]}', 400, _SHAPE.format("pair")),
    (b'{"text_input": "a", "pair": 1}', 400, _SHAPE.format("pair")),
    (
        b'{"text_input": ["a", "b"], "pair": [1, 2]}',
        400,
        "[request id: <id_unknown>] input 'pair' batch size does not match other inputs for 'generate_echo'",
    ),
    (b'{"text_input": "a", "pair": [1.5, 2]}', 400, _DATA + "'pair': INT32 elements must be integers"),
    (b'{"text_input": "a", "pair": ["1", 2]}', 400, _DATA + "'pair': INT32 elements must be integers"),
    (
        b'{"text_input": "a", "pair": [4294967296, 1]}',
        400,
        _DATA + "'pair': value 4294967296 is out of range for datatype INT32",
    ),
    (b'{"text_input": "a", "flag": 1}', 400, _DATA + "'flag': BOOL elements must be true or false"),
    (b'{"text_input": "a", "values": {"x": 1}}', 400, _DATA + "'values': FP32 elements must be numbers"),
    (b'{"text_input": "a", "values": [1e400]}', 400, _JSON),
    (b'{"text_input": "a", "other": {"x": 1}}', 400, f"parameter 'other' {_TYPE}"),
    (b'{"text_input": "a", "other": [1]}', 400, f"parameter 'other' {_TYPE}"),
    (b'{"text_input": "a", "other": null}', 400, f"parameter 'other' {_TYPE}"),
    (b'{"text_input": "a", "o\\u0000": 1}', 400, "parameter name contains a NUL character"),
    (
        b'{"text_input": "a", "parameters": 5}',
        400,
        "Expected JSON object for keyword: 'parameters': attempt to access JSON non-object as object",
    ),
    (b'{"text_input": "a", "parameters": {"parameters": {}}}', 400, _NESTED + f"parameter 'parameters' {_TYPE}"),
    (
        b'{"text_input": "a", "parameters": {"text_input": "b"}}',
        400,
        _NESTED + "[request id: <id_unknown>] input 'text_input' already exists in request",
    ),
    (
        b'{"id": "7", "text_input": "a", "parameters": {"text_input": "b"}}',
        400,
        _NESTED + "[request id: 7] input 'text_input' already exists in request",
    ),
    (b'{"text_input": "a", "parameters": {"pair": [1]}}', 400, _NESTED + _SHAPE.format("pair")),
    (b'{"text_input": "a", "id": 5}', 400, "Unable to parse 'id': expected a string"),
    (b'{"text_input": "a", "timeout": -1}', 400, "'timeout' parameter must be a non-negative integer of microseconds"),
    (b"{}", 400, _MISSING.format(0, "")),
    (b'{"values": [1]}', 400, _MISSING.format(1, "'values'")),
    (b'{"text_input": "fail"}', 500, "the model refused 'fail'"),
]


@pytest.mark.parametrize(("body", "status", "message"), MALFORMED)
@pytest.mark.parametrize("route", ["generate", "generate_stream"])
def test_malformed_bodies(server: ServerProcess, route: str, body: bytes, status: int, message: str) -> None:
    """Errors before the first response are plain JSON error replies on both routes, as in Triton."""
    got, headers, reply = http_call(server.http, "POST", f"/v2/models/generate_echo/{route}", body)
    assert (got, headers["content-type"]) == (status, "application/json"), reply
    assert "transfer-encoding" not in headers
    error = json.loads(reply)["error"]
    assert error.startswith(message) if message.endswith(": ") else error == message


@pytest.mark.parametrize("route", ["generate", "generate_stream"])
def test_bodies_over_the_limit(server: ServerProcess, route: str) -> None:
    body = b'{"text_input": "' + b"a" * LIMIT + b'"}'
    status, headers, reply = http_call(server.http, "POST", f"/v2/models/generate_echo/{route}", body)
    assert (status, json.loads(reply)) == (413, {"error": f"request body exceeds the limit of {LIMIT} bytes"})


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("POST", "/v2/models/nope/generate", 404, "Request for unknown model: 'nope' is not found"),
        ("POST", "/v2/models/nope/generate_stream", 404, "Request for unknown model: 'nope' is not found"),
        (
            "POST",
            "/v2/models/generate_echo/versions/7/generate_stream",
            404,
            "Request for unknown model: 'generate_echo' version 7 is not found",
        ),
        ("GET", "/v2/models/generate_echo/generate", 405, "Method Not Allowed"),
        ("PUT", "/v2/models/generate_echo/generate_stream", 405, "Method Not Allowed"),
        ("POST", "/v2/models/generate_echo/generate/", 404, "Not Found"),
        ("POST", "/v2/models/generate_echo/versions/x/generate", 404, "Not Found"),
    ],
)
def test_routing_errors(server: ServerProcess, method: str, path: str, status: int, message: str) -> None:
    got, _, reply = http_call(server.http, method, path, b'{"text_input": "a"}')
    assert (got, json.loads(reply)) == (status, {"error": message})


@pytest.mark.parametrize(
    ("model", "document", "status", "message"),
    [
        ("error_response", {"INPUT0": [-1]}, 404, "no such thing"),
        (
            "error_raise",
            {"INPUT0": [1]},
            500,
            "Failed to process the request(s) for model 'error_raise_0_0', message: ValueError: boom in execute",
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_model_errors(
    server: ServerProcess, model: str, document: Any, status: int, message: str, stream: bool
) -> None:
    """A model that is not decoupled fails before its one response: a JSON error reply with the error's status."""
    assert generate(server, model, document, stream) == (status, {"error": message})


def test_outputs_json_cannot_carry(server: ServerProcess) -> None:
    """A response JSON cannot carry (Infinity) is an error of that response: 400 with its message, on /generate
    a JSON error reply, on /generate_stream its event."""
    body = b'{"INPUT0": [1e39, 0, 0, 0], "INPUT1": [1, 0, 0, 0]}'  # FP32 overflow: OUTPUT0 is infinite
    expected = {
        "error": "output 'OUTPUT0' contains NaN or Infinity, which JSON cannot represent; request it as binary data"
    }
    assert generate(server, "add_sub", body) == (400, expected)
    status, headers, raw = split_reply(exchange(server.http, "/v2/models/add_sub/generate_stream", body))
    assert (status, headers["content-type"]) == (400, SSE)
    assert events(dechunk(raw)) == [expected]


def test_compressed_body_is_decompressed(server: ServerProcess) -> None:
    import gzip

    body = gzip.compress(b'{"INPUT0": [1, 2, 3, 4], "INPUT1": [1, 1, 1, 1]}')
    status, _, reply = split_reply(
        exchange(server.http, "/v2/models/add_sub/generate", body, b"Content-Encoding: gzip\r\n")
    )
    assert status == 200 and reply.startswith(b'{"OUTPUT0":[2.0,3.0,4.0,5.0]')


# --------------------------------------------------------------------------------------- clients that leave


def test_client_leaving_before_the_response(server: ServerProcess) -> None:
    """The client closes while the model runs: the server drops the request and goes on serving."""
    host, port = server.http.rsplit(":", 1)
    body = json.dumps({"INPUT0": [1], "parameters": {"sleep_ms": 300}}).encode()
    for route in ("generate", "generate_stream"):
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            head = b"POST /v2/models/slow/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            sock.sendall(head % (route.encode(), len(body)) + body)
            time.sleep(0.05)
    status, reply = generate(server, "slow", {"INPUT0": [2]}, stream=True)
    assert status == 200 and reply[0]["OUTPUT0"] == 2.0


# ------------------------------------------------------------------------------------------- decoupled models


@pytest.fixture(scope="module")
def decoupled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = copy_models(tmp_path_factory.mktemp("decoupled"), TEST_MODELS / "generate_decoupled")
    try:
        process = start_seawall(repository=root)
    except RuntimeError as exc:
        if "decoupled model 'generate_decoupled' is not supported" in str(exc):
            pytest.skip("Seawall does not serve decoupled models yet (issue 11, item 1)")
        raise
    yield process
    process.stop()


def _decoupled(index: int) -> bytes:
    document = {"index": index, "model_name": "generate_decoupled", "model_version": "1", "text_output": "ab"}
    return b"data: " + json.dumps(document, separators=(",", ":")).encode() + b"\n\n"


@pytest.mark.parametrize(
    ("repeat", "expected"),
    [
        (3, [_decoupled(0), _decoupled(1), _decoupled(2)]),
        (0, []),
        (-1, [_decoupled(0), b'data: {"error":"the model refused a negative repeat"}\n\n']),
    ],
)
def test_decoupled_stream(decoupled: ServerProcess, repeat: int, expected: list[bytes]) -> None:
    """One event per response, flushed as it comes; the empty final message sends nothing; a later error is an
    event under the status already sent."""
    body = json.dumps({"text_input": "ab", "repeat": repeat}).encode()
    status, headers, raw = split_reply(exchange(decoupled.http, "/v2/models/generate_decoupled/generate_stream", body))
    assert (status, headers["content-type"]) == (200, SSE)
    assert dechunk(raw) == expected


@pytest.mark.parametrize(("repeat", "status"), [(1, 200), (0, 400), (3, 400), (-1, 400)])
def test_decoupled_generate(decoupled: ServerProcess, repeat: int, status: int) -> None:
    body = json.dumps({"text_input": "ab", "repeat": repeat}).encode()
    got, _, reply = http_call(decoupled.http, "POST", "/v2/models/generate_decoupled/generate", body)
    expected = json.loads(_decoupled(0)[len(b"data: ") :]) if status == 200 else {"error": NOT_ONE}
    assert (got, json.loads(reply)) == (status, expected)
    assert http_call(decoupled.http, "GET", "/v2/health/ready")[0] == 200


def test_decoupled_client_leaving_stops_the_stream(decoupled: ServerProcess) -> None:
    """A client that leaves a long stream cancels it: the model (which checks `is_cancelled()`) stops, so the
    next request to its one instance is answered long before the abandoned stream would have ended (100 s)."""
    host, port = decoupled.http.rsplit(":", 1)
    body = json.dumps({"text_input": "ab", "repeat": 10000, "parameters": {"sleep_ms": 10}}).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = b"POST /v2/models/generate_decoupled/generate_stream HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        sock.sendall(head % len(body) + body)
        received = b""
        while received.count(b"data: ") < 3:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    started = time.monotonic()
    document = {"text_input": "cd", "repeat": 1}
    status, headers, reply = http_call(
        decoupled.http, "POST", "/v2/models/generate_decoupled/generate", json.dumps(document), timeout=60
    )
    assert (status, json.loads(reply)["text_output"]) == (200, "cd")
    assert time.monotonic() - started < 50


# ------------------------------------------------------------------------------------------------ restriction


def test_generate_is_an_inference_route(tmp_path: Path) -> None:
    root = copy_models(tmp_path, EXAMPLES / "add_sub")
    process = start_seawall("--http-restricted-api=inference:infer-key=s3cret", repository=root)
    try:
        body = b'{"INPUT0": [1, 2, 3, 4], "INPUT1": [1, 1, 1, 1]}'
        for route in ("generate", "generate_stream"):
            path = f"/v2/models/add_sub/{route}"
            for headers in ({}, {"infer-key": "wrong"}):
                status, _, reply = http_call(process.http, "POST", path, body, headers)
                refusal = {"error": "This API is restricted, expecting header 'infer-key'"}
                assert (status, json.loads(reply)) == (403, refusal)
            assert http_call(process.http, "POST", path, body, {"infer-key": "s3cret"})[0] == 200
        assert http_call(process.http, "GET", "/v2/health/ready")[0] == 200
    finally:
        process.stop()


def test_generate_is_not_advertised(server: ServerProcess) -> None:
    """Triton 2.51 serves generate without listing it among the server's extensions; so does Seawall."""
    status, _, reply = http_call(server.http, "GET", "/v2")
    assert status == 200 and not any("generate" in e for e in json.loads(reply)["extensions"])
