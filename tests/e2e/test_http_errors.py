"""End-to-end HTTP error paths: every bad input gets an exact status and message; the server stays ready."""

from __future__ import annotations

import gzip
import json
import socket
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import ServerProcess, start_seawall
from tests.harness import http_request as request


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_seawall()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(autouse=True)
def still_ready(server: ServerProcess) -> Iterator[None]:
    yield
    status, _, _ = request(server, "GET", "/v2/health/ready")
    assert status == 200, "server not ready after the bad request"


def _error(server: ServerProcess, method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
    status, reply_headers, reply = request(
        server, method, path, body, {k.replace("_", "-"): v for k, v in headers.items()}
    )
    assert reply_headers["content-type"] == "application/json"
    return status, json.loads(reply)["error"]


def _raw(server: ServerProcess, data: bytes) -> tuple[int, dict[str, str], Any]:
    host, port = server.http.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)["error"]


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/v2/health/live/", 404, "Not Found"),
        ("GET", "//v2/health/live", 404, "Not Found"),
        ("GET", "/V2/health/live", 404, "Not Found"),
        ("GET", "/v2/models/add_sub/versions/abc", 404, "Not Found"),
        ("GET", "/v2/models/add_sub/versions/-1", 404, "Not Found"),
        ("GET", "/v2/models/add_sub/versions/1/trace/setting", 404, "Not Found"),
        ("POST", "/v2/health/live", 405, "Method Not Allowed"),
        ("HEAD", "/v2/health/ready", 405, ""),
        ("OPTIONS", "/v2", 405, "Method Not Allowed"),
        ("GET", "/v2/models/add_sub/infer", 405, "Method Not Allowed"),
        ("GET", "/v2/models/nope/ready", 400, "Model version not ready"),
        ("POST", "/v2/repository/r/index", 501, "'repository_name' specification is not supported"),
        (
            "POST",
            "/v2/repository/models/add_sub/load",
            503,
            "explicit model load / unload is not allowed if polling is enabled",
        ),
        (
            "GET",
            "/v2/systemsharedmemory/status",
            501,
            "client shared memory is disabled on this server (start it with --allow-client-shm)",
        ),
        ("GET", "/v2/models/nope/trace/setting", 400, "Request for unknown model : nope"),
        ("POST", "/v2/logging", 400, "failed to parse the request JSON buffer: The document is empty."),
        ("GET", "/v2/models/add_sub/generate", 405, "Method Not Allowed"),
    ],
)
def test_routing_errors(server: ServerProcess, method: str, path: str, status: int, message: str) -> None:
    got_status, headers, body = request(server, method, path)
    assert got_status == status
    if method != "HEAD":
        assert json.loads(body) == {"error": message} and headers["content-type"] == "application/json"


def test_unknown_models(server: ServerProcess) -> None:
    status, message = _error(server, "GET", "/v2/models/nope")
    assert status == 404 and "'nope'" in message
    status, message = _error(server, "POST", "/v2/models/nope/infer", b'{"inputs":[]}')
    assert status == 404 and "'nope'" in message
    assert _error(server, "GET", "/v2/models/nope/stats") == (400, "requested model 'nope' is not available")


def _fp32(name: str = "INPUT0", **extra: Any) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": [4], **extra}


def _infer_body(*inputs: dict[str, Any], **top: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **top}).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "failed to parse the request JSON buffer: unexpected end of data: line 1 column 2 (char 1)"),
        (
            b"",
            "Raw request must only have 1 input (found 1) to be deduced but got 2 inputs "
            "in 'add_sub' model configuration",
        ),
        (_infer_body(id=7), "Unable to parse 'id': expected a string"),
        (
            _infer_body({"name": "INPUT0", "datatype": "FP32", "shape": [-4], "data": [1]}),
            "invalid shape [-4] for input 'INPUT0' for model 'add_sub', dimensions must be >= 0",
        ),
        (
            _infer_body(_fp32(datatype="BOOL", data=[1, 0, 1, 0])),
            "Unable to parse 'data' of input 'INPUT0': BOOL elements must be true or false",
        ),
        (
            _infer_body(_fp32(datatype="UINT8", data=[300, 0, 0, 0])),
            "Unable to parse 'data' of input 'INPUT0': value 300 is out of range for datatype UINT8",
        ),
        (_infer_body(_fp32(name="IN\u0000PUT0", data=[1, 2, 3, 4])), "input name contains a NUL character"),
        (
            _infer_body(_fp32(data=[1, 2, 3])),
            "Unable to parse 'data': Shape does not match true shape of 'data' field",
        ),
        (
            _infer_body({"name": "INPUT0", "datatype": "FP32", "shape": [1099511627776], "data": [1]}),
            "input 'INPUT0' for model 'add_sub' has more than 2147483648 elements (--max-tensor-elements)",
        ),
        (
            _infer_body(_fp32(data=[1, 2, 3, 4]), parameters={"triton_x": 1}),
            "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified.",
        ),
        (
            b'{"inputs":[],"x":' + b"[" * 200 + b"]" * 200 + b"}",
            "request JSON is nested deeper than 100 levels",
        ),
        (
            _infer_body(_fp32(datatype="STRING", data=["a"])),
            "invalid datatype for input INPUT0",
        ),
        (
            _infer_body(_fp32(data=[1.0, 2.0, 3.0, 4.0], parameters={"binary_data_size": 16})),
            "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', "
            "'shared_memory_region' in 'parameters'. But set 'data' 'binary_data_size'",
        ),
    ],
)
def test_infer_json_errors(server: ServerProcess, body: bytes, message: str) -> None:
    assert _error(server, "POST", "/v2/models/add_sub/infer", body) == (400, message)


def test_core_validation_errors_are_400(server: ServerProcess) -> None:
    wrong_type = _infer_body(
        {"name": "INPUT0", "datatype": "INT32", "shape": [4], "data": [1, 2, 3, 4]},
        _fp32("INPUT1", data=[1, 2, 3, 4]),
    )
    status, message = _error(server, "POST", "/v2/models/add_sub/infer", wrong_type)
    assert status == 400 and "INT32" in message
    wrong_shape = _infer_body(
        {"name": "INPUT0", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]},
        _fp32("INPUT1", data=[1, 2, 3, 4]),
    )
    status, message = _error(server, "POST", "/v2/models/add_sub/infer", wrong_shape)
    assert status == 400 and "unexpected shape for input 'INPUT0'" in message


def _binary_request(sizes: tuple[int, int], payload: bytes) -> tuple[bytes, str]:
    header = _infer_body(*(_fp32(f"INPUT{i}", parameters={"binary_data_size": s}) for i, s in enumerate(sizes)))
    return header + payload, str(len(header))


@pytest.mark.parametrize(
    ("sizes", "payload", "message"),
    [
        (
            (16, 16),
            b"\0" * 24,
            "unexpected size for input 'INPUT1', expecting 16 additional bytes for model 'add_sub'",
        ),
        ((16, 16), b"\0" * 40, "unexpected additional input data for model 'add_sub'"),
        (
            (16, 12),
            b"\0" * 28,
            "input byte size mismatch for input 'INPUT1' for model 'add_sub'. Expected 16, got 12",
        ),
    ],
)
def test_binary_errors(server: ServerProcess, sizes: tuple[int, int], payload: bytes, message: str) -> None:
    body, length = _binary_request(sizes, payload)
    result = _error(server, "POST", "/v2/models/add_sub/infer", body, inference_header_content_length=length)
    assert result == (400, message)


@pytest.mark.parametrize("value", ["abc", "-1", "99999999999999999999", "100000"])
def test_bad_header_length(server: ServerProcess, value: str) -> None:
    body, _ = _binary_request((16, 16), b"\0" * 32)
    result = _error(server, "POST", "/v2/models/add_sub/infer", body, inference_header_content_length=value)
    assert result == (400, f"inference header size should be in range (0, {len(body)}), got: {value}")


def test_body_over_the_limit_is_refused_before_it_is_read(server: ServerProcess) -> None:
    head = b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 67108865\r\n\r\n"
    assert _raw(server, head)[::2] == (413, "request body exceeds the limit of 67108864 bytes")


def test_chunk_flood_is_refused(server: ServerProcess) -> None:
    head = b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert _raw(server, head + b"1\r\n \r\n" * 70000 + b"0\r\n\r\n")[::2] == (
        413,
        "request body has more than 65536 chunks",
    )


def test_decompression_bomb_is_refused(server: ServerProcess) -> None:
    bomb = gzip.compress(b"\0" * (80 << 20), compresslevel=9)
    status, message = _error(server, "POST", "/v2/models/add_sub/infer", bomb, content_encoding="gzip")
    assert status == 413
    assert message in (
        "request body exceeds the limit of 67108864 bytes",
        "decompressed request body exceeds the allowed compression ratio",
    )


def test_corrupt_compressed_body(server: ServerProcess) -> None:
    body = zlib.compress(b'{"inputs":[]}')[:-3] + b"xyz"
    result = _error(server, "POST", "/v2/models/add_sub/infer", body, content_encoding="deflate")
    assert result[0] == 400 and result[1].startswith("failed to decompress the request body")


def test_unsupported_content_encoding(server: ServerProcess) -> None:
    head = b"POST /v2/models/add_sub/infer HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}"
    status, headers, message = _raw(server, head)
    assert (status, message) == (501, "Unsupported compression type")
    assert headers["accept-encoding"] == "gzip, deflate"


def test_malformed_http(server: ServerProcess) -> None:
    assert _raw(server, b"NOT HTTP AT ALL\r\n\r\n")[::2] == (400, "malformed HTTP request")
    bad_length = b"POST /v2 HTTP/1.1\r\nContent-Length: abc\r\n\r\n"
    assert _raw(server, bad_length)[::2] == (400, "malformed HTTP request")


def test_oversized_headers(server: ServerProcess) -> None:
    head = b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"
    assert _raw(server, head)[::2] == (431, "request headers exceed 16384 bytes")


def test_binary_bytes_with_a_bad_length_prefix(server: ServerProcess) -> None:
    payload = struct.pack("<I", 1000) + b"ab"
    header = _infer_body({"name": "INPUT0", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}})
    result = _error(
        server,
        "POST",
        "/v2/models/string_identity/infer",
        header + payload,
        inference_header_content_length=str(len(header)),
    )
    assert result == (400, "input 'INPUT0': BYTES element is longer than the remaining data")
