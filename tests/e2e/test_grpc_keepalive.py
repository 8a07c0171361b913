"""Triton's gRPC keepalive, HTTP/2 ping and connection-age flags reach the server's HTTP/2 transport.

A raw HTTP/2 client on a socket (the connection preface, SETTINGS, PING and GOAWAY frames of RFC 9113) shows what
the server sends on an idle connection: keepalive PINGs, and a GOAWAY at the maximum connection age. Without the
flags (Triton's defaults: a 2 h keepalive, no age) it sends none of them.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import tritonclient.grpc as grpcclient

from tests.harness import ServerProcess, start_seawall

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SETTINGS, _PING, _GOAWAY = 0x4, 0x6, 0x7
_ACK = 0x1


def _frame(kind: int, flags: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", 0) + payload


@dataclass
class Seen:
    """What the server sent on one idle connection, with the seconds since it was opened."""

    pings: list[float] = field(default_factory=list)
    goaway: float | None = None
    closed: float | None = None  # end of stream (or reset) without a GOAWAY first


def _watch(address: str, seconds: float, *, stop_at_pings: int = 0) -> Seen:
    """Open an HTTP/2 connection, send nothing but the preface and ACKs, and record the server's frames."""
    host, _, port = address.rpartition(":")
    seen = Seen()
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(_PREFACE + _frame(_SETTINGS, 0))
        buffer = b""
        while (left := seconds - (time.monotonic() - start)) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                seen.closed = time.monotonic() - start
                break
            buffer += chunk
            while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
                length = int.from_bytes(buffer[:3], "big")
                kind, flags, payload = buffer[3], buffer[4], buffer[9 : 9 + length]
                buffer = buffer[9 + length :]
                if kind == _SETTINGS and not flags & _ACK:
                    sock.sendall(_frame(_SETTINGS, _ACK))
                elif kind == _PING and not flags & _ACK:
                    seen.pings.append(time.monotonic() - start)
                    sock.sendall(_frame(_PING, _ACK, payload))
                elif kind == _GOAWAY:
                    seen.goaway = time.monotonic() - start
                    return seen
            if stop_at_pings and len(seen.pings) >= stop_at_pings:
                break
    return seen


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    process = start_seawall(*request.param)
    yield process
    assert process.is_ready()
    with grpcclient.InferenceServerClient(process.grpc) as client:
        assert client.is_server_ready()  # a new connection is served as before
    process.stop()


@pytest.mark.parametrize("server", [()], indirect=True)
def test_tritons_defaults_send_no_ping_and_no_goaway(server: ServerProcess) -> None:
    seen = _watch(server.grpc, 2.0)
    assert (seen.pings, seen.goaway, seen.closed) == ([], None, None)


@pytest.mark.parametrize(
    "server",
    [
        (
            "--grpc-keepalive-time=200",
            "--grpc-keepalive-permit-without-calls=true",
            "--grpc-http2-max-pings-without-data=0",
        )
    ],
    indirect=True,
)
def test_keepalive_pings_reach_an_idle_client(server: ServerProcess) -> None:
    seen = _watch(server.grpc, 15.0, stop_at_pings=3)
    assert len(seen.pings) == 3 and seen.goaway is None and seen.closed is None
    assert seen.pings[0] < 10.0


@pytest.mark.parametrize(
    "server", [("--grpc-max-connection-age=300", "--grpc-max-connection-age-grace=300")], indirect=True
)
def test_max_connection_age_sends_goaway(server: ServerProcess) -> None:
    seen = _watch(server.grpc, 15.0)
    assert seen.goaway is not None and 0.2 < seen.goaway < 12.0
    assert seen.pings == []
