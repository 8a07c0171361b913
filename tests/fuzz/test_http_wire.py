"""The HTTP/1.1 request parser fuzzed end to end: request heads and bodies, near valid and mangled (methods, paths,
duplicate and conflicting framing headers, chunked bodies with odd sizes and extensions, compressed bodies that are
not, bytes cut short), sent over a raw socket to a real Seawall. Whatever arrives, the answer is never a 5xx other
than the documented 501/503, the server never logs a traceback, and it stays live.
"""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.harness import ServerProcess, http_call, start_seawall

INFER = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}).encode()
PATHS = [
    "/v2/models/identity/infer",
    "/v2/models/identity/versions/1/infer",
    "/v2/models/add_sub/infer",
    "/v2/health/ready",
    "/v2/repository/index",
    "/v2/logging",
    "/v2/models/identity/generate",
    "/v2/trace/setting",
    "/v2/models/%2e%2e/infer",
    "/v2/models/identity/infer?x=1",
    "*",
    "http://x/v2",
]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_seawall("--http-header-timeout-secs=2", "--http-body-timeout-secs=2")
    try:
        yield process
    finally:
        process.stop()


def _chunked(body: bytes, sizes: list[int], extension: bytes) -> bytes:
    out, at = b"", 0
    for size in sizes:
        piece = body[at : at + size]
        at += size
        out += b"%x%s\r\n%s\r\n" % (len(piece), extension, piece)
    return out + b"0\r\n\r\n"


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"POST", b"GET", b"PUT", b"HEAD", b"OPTIONS", b"P\x00ST", b"GE"]))
    path = draw(st.sampled_from(PATHS)).encode()
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x"]))
    body = draw(st.sampled_from([INFER, b"", b"{}", b" ", b"\x00" * 8, INFER[:-3]]) | st.binary(max_size=64))
    encoding = draw(st.sampled_from([None, b"gzip", b"deflate", b"identity", b"br", b"gzip, gzip"]))
    if encoding == b"gzip" and draw(st.booleans()):
        body = gzip.compress(body)
    headers = [b"Host: x"]
    framing = draw(st.sampled_from(["length", "chunked", "both", "none", "wrong-length", "two-lengths"]))
    payload = body
    if framing in ("chunked", "both"):
        sizes = draw(st.lists(st.integers(0, 40), max_size=4))
        payload = _chunked(body, sizes, draw(st.sampled_from([b"", b";x=1", b";" + b"e" * 100])))
        headers.append(b"Transfer-Encoding: chunked")
    if framing in ("length", "both"):
        headers.append(b"Content-Length: %d" % len(payload))
    if framing == "wrong-length":
        headers.append(b"Content-Length: %d" % draw(st.integers(0, len(payload) + 5)))
    if framing == "two-lengths":
        headers += [b"Content-Length: %d" % len(payload), b"Content-Length: %d" % (len(payload) + 1)]
    if encoding is not None:
        headers.append(b"Content-Encoding: " + encoding)
    if draw(st.booleans()):
        name = draw(st.sampled_from([b"Inference-Header-Content-Length", b"Expect", b"Connection", b"X-\xff"]))
        value = draw(st.sampled_from([b"0", b"5", b"-1", b"100-continue", b"close", b"99999999999999999999", b""]))
        headers.append(name + b": " + value)
    head = method + b" " + path + b" " + version + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n"
    wire = head + payload
    cut = draw(st.integers(0, len(wire)))
    return wire[:cut] if draw(st.integers(0, 9)) == 0 else wire


def _exchange(address: str, data: bytes) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # nothing more will come: the server answers or closes
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return reply


@given(requests())
def test_no_request_makes_a_server_error(server: ServerProcess, data: bytes) -> None:
    reply = _exchange(server.http, data)
    for line in reply.split(b"\r\n"):
        if line.startswith(b"HTTP/1.1 5"):
            assert line[9:12] in (b"501", b"503"), (data, reply[:500])
    assert "Traceback" not in server.log(), server.log()[-3000:]


def test_the_server_is_live_after_the_fuzzing(server: ServerProcess) -> None:
    assert http_call(server.http, "GET", "/v2/health/live")[0] == 200
    assert http_call(server.http, "POST", "/v2/models/identity/infer", INFER)[0] == 200
