"""Issue 9, finding 9: trailer fields of a chunked body never join the header section, so a key or a header a
proxy strips cannot be smuggled in after the body; oversized trailers are refused; the connection stays usable.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import numpy as np
import pytest

from tests.harness import ServerProcess, http_call, start_seawall
from tests.security.test_http_memory import _address, _read_reply

RESTRICTED = "This API is restricted, expecting header 'admin-key'"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_seawall("--http-restricted-api=model-repository:admin-key=k")
    yield process
    process.stop()


def _chunked(path: str, body: bytes, trailers: str, head: str = "") -> bytes:
    request = f"POST {path} HTTP/1.1\r\nHost: x\r\n{head}Transfer-Encoding: chunked\r\n\r\n".encode()
    return request + b"%x\r\n%s\r\n0\r\n%s\r\n" % (len(body), body, trailers.encode())


def _send(server: ServerProcess, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(_address(server.http), timeout=10) as sock:
        sock.sendall(raw)
        return _read_reply(sock)


def _healthy(server: ServerProcess) -> None:
    assert http_call(server.http, "GET", "/v2/health/ready")[0] == 200
    assert server.process.poll() is None


@pytest.mark.parametrize("name", ["admin-key", "Admin-Key", "ADMIN-KEY", "aDmIn-KeY"])
@pytest.mark.parametrize("route", ["/v2/repository/index", "/v2/repository/models/identity/unload"])
def test_key_sent_only_as_a_trailer_does_not_authorize(server: ServerProcess, name: str, route: str) -> None:
    status, _, body = _send(server, _chunked(route, b"{}", f"{name}: k\r\n"))
    assert (status, json.loads(body)["error"]) == (403, RESTRICTED)
    assert http_call(server.http, "GET", "/v2/models/identity/ready")[0] == 200  # not unloaded
    _healthy(server)


def test_trailer_cannot_complete_a_wrong_key(server: ServerProcess) -> None:
    raw = _chunked("/v2/repository/index", b"{}", "admin-key: k\r\n", head="admin-key: wrong\r\n")
    status, _, body = _send(server, raw)
    assert (status, json.loads(body)["error"]) == (403, RESTRICTED)
    _healthy(server)


@pytest.mark.parametrize("name", ["Inference-Header-Content-Length", "inference-header-content-length"])
def test_trailer_cannot_change_how_the_body_is_read(server: ServerProcess, name: str) -> None:
    """A header that changes the handler's reading (here: JSON + binary framing) is ignored as a trailer."""
    document = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}
    ).encode()
    body = document + np.arange(4, dtype=np.float32).tobytes()
    status, _, reply = _send(server, _chunked("/v2/models/identity/infer", body, f"{name}: {len(document)}\r\n"))
    assert status == 400  # the whole body was read as JSON: the binary tail does not parse
    assert json.loads(reply)["error"].startswith("failed to parse the request JSON buffer")
    # the same header in the head is honoured
    raw = _chunked("/v2/models/identity/infer", body, "", head=f"{name}: {len(document)}\r\n")
    assert _send(server, raw)[0] == 200
    _healthy(server)


def test_oversized_trailers_are_refused(server: ServerProcess) -> None:
    for trailers in ("x-big: " + "a" * 20000 + "\r\n", "".join(f"x-{i}: {'a' * 100}\r\n" for i in range(200))):
        status, _, body = _send(server, _chunked("/v2/repository/index", b"{}", trailers, head="admin-key: k\r\n"))
        assert (status, json.loads(body)["error"]) == (431, "request trailers exceed 16384 bytes")
    _healthy(server)


def test_connection_stays_usable_after_trailers(server: ServerProcess) -> None:
    raw = _chunked("/v2/repository/index", b"{}", "x-trailer: 1\r\nadmin-key: k\r\n", head="admin-key: k\r\n")
    with socket.create_connection(_address(server.http), timeout=10) as sock:
        sock.sendall(raw + b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    first, second = data.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 ") and first.endswith(b"]")
    assert second.startswith(b"200 ") and b"Content-Length: 0" in second
    _healthy(server)
