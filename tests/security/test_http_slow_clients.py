"""Issue 9, finding 6: slow clients (slowloris). Every HTTP listener cuts a head that does not arrive in time, a
body that does not progress, an idle keep-alive connection, and refuses connections over its cap or over one
peer's share, while a health probe from another address still gets through.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.harness import EXAMPLES, ROOT, ServerProcess, http_call, start_seawall
from tests.security.test_http_memory import _address, _read_reply

TIMEOUT = 2  # seconds, for the header, body and idle timeouts of the `slow` server


@pytest.fixture(scope="module")
def slow() -> Iterator[ServerProcess]:
    process = start_seawall(
        "--http-restricted-api=model-repository:admin-key=k",
        f"--http-header-timeout-secs={TIMEOUT}",
        f"--http-body-timeout-secs={TIMEOUT}",
        f"--http-idle-timeout-secs={TIMEOUT}",
        "--http-min-body-rate=64",
    )
    yield process
    process.stop()


def _healthy(server: ServerProcess) -> None:
    assert http_call(server.http, "GET", "/v2/health/ready")[0] == 200
    assert server.process.poll() is None


def _wait_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    sock.settimeout(limit)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


def _error(reply: bytes) -> tuple[int, str]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


def test_one_byte_a_second_head_is_cut(slow: ServerProcess) -> None:
    with socket.create_connection(_address(slow.http), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\n")
        start = time.monotonic()
        reply = b""
        for byte in b"X-Padding: " + b"a" * 15:  # 15 s of header if nobody stops it
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(1)
            try:
                reply += sock.recv(4096)
            except TimeoutError:
                continue
            if reply:
                break
        rest, _ = _wait_closed(sock, 10)
        elapsed = time.monotonic() - start
    assert _error(reply + rest) == (408, f"request headers not received within {TIMEOUT} seconds")
    assert elapsed < TIMEOUT + 6
    _healthy(slow)


@pytest.mark.parametrize("listener", ["http", "metrics", "grpc"])
def test_silent_connection_is_closed(slow: ServerProcess, listener: str) -> None:
    with socket.create_connection(_address(slow.addresses[listener]), timeout=10) as sock:
        data, elapsed = _wait_closed(sock, 15)
    if listener != "grpc":  # gRPC says goodbye in HTTP/2 frames
        assert data == b""  # nothing was asked, nothing is answered
    assert TIMEOUT - 0.5 < elapsed < TIMEOUT + 6
    _healthy(slow)


@pytest.mark.parametrize(
    "framing", ["Content-Length: 1000\r\n", "Transfer-Encoding: chunked\r\n"], ids=["length", "chunked"]
)
def test_half_sent_body_is_cut(slow: ServerProcess, framing: str) -> None:
    with socket.create_connection(_address(slow.http), timeout=10) as sock:
        head = f"POST /v2/repository/index HTTP/1.1\r\nHost: x\r\nadmin-key: k\r\n{framing}\r\n"
        sock.sendall(head.encode() + (b"a\r\n{" if "chunked" in framing else b"{"))
        data, elapsed = _wait_closed(sock, 15)
    message = f"request body not received at 64 bytes per second within {TIMEOUT} seconds"
    assert _error(data) == (408, message)
    assert elapsed < TIMEOUT + 6
    _healthy(slow)


def test_dripping_body_is_cut(slow: ServerProcess) -> None:
    """One byte every half second keeps a gap timeout happy; the minimum rate does not."""
    with socket.create_connection(_address(slow.http), timeout=10) as sock:
        sock.sendall(b"POST /v2/repository/index HTTP/1.1\r\nHost: x\r\nadmin-key: k\r\nContent-Length: 1000\r\n\r\n")
        start = time.monotonic()
        sock.settimeout(0.5)
        reply = b""
        while time.monotonic() - start < 15 and not reply:
            try:
                sock.sendall(b" ")
                reply = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
        rest, _ = _wait_closed(sock, 10)
    assert _error(reply + rest)[0] == 408
    assert time.monotonic() - start < TIMEOUT + 8
    _healthy(slow)


def test_idle_keep_alive_connection_is_closed(slow: ServerProcess) -> None:
    with socket.create_connection(_address(slow.http), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_reply(sock)[0] == 200
        # still usable right after
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_reply(sock)[0] == 200
        data, elapsed = _wait_closed(sock, 15)
    assert data == b""
    assert TIMEOUT - 0.5 < elapsed < TIMEOUT + 6
    _healthy(slow)


def test_reply_the_client_does_not_read_is_dropped(slow: ServerProcess) -> None:
    """16 MiB of output to a client that never reads: the reply stops draining, the connection is dropped."""
    count = 4 << 20
    document = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, count],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 4 * count},
                }
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    body = document + bytes(4 * count)
    head = (
        f"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        f"Inference-Header-Content-Length: {len(document)}\r\n\r\n"
    )
    with socket.create_connection(_address(slow.http), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(head.encode() + body)
        time.sleep(3 * TIMEOUT + 2)  # not reading
        received = 0
        sock.settimeout(5)
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    assert received < 4 * count
    _healthy(slow)


def test_slow_inference_is_not_cut(slow: ServerProcess) -> None:
    """The deadlines are for the client's bytes, not for the server's work: a keep-alive connection that
    sends requests promptly outlives the timeouts."""
    with socket.create_connection(_address(slow.http), timeout=10) as sock:
        for _ in range(6):
            sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_reply(sock)[0] == 200
            time.sleep(TIMEOUT / 2)


@pytest.fixture(scope="module")
def capped() -> Iterator[ServerProcess]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))  # inherited: the usual default
    try:
        process = start_seawall("--http-max-connections=8", "--http-max-connections-per-peer=4")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    yield process
    process.stop()


def _connect(server: ServerProcess, source: str) -> socket.socket:
    return socket.create_connection(_address(server.http), timeout=10, source_address=(source, 0))


def _refused(sock: socket.socket) -> tuple[int, str, str]:
    data, _ = _wait_closed(sock, 10)
    head = data.partition(b"\r\n\r\n")[0].decode()
    retry = [line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("retry-after")]
    return (*_error(data), retry[0] if retry else "")


def _health_from(server: ServerProcess, source: str) -> int:
    with _connect(server, source) as sock:
        return _health_on(sock)


def _health_on(sock: socket.socket) -> int:
    sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
    return _read_reply(sock)[0]


def _hold(server: ServerProcess, source: str, count: int) -> list[socket.socket]:
    """`count` open connections from `source` that the server has accepted (each answered once, kept alive)."""
    held = [_connect(server, source) for _ in range(count)]
    assert [_health_on(sock) for sock in held] == [200] * count
    return held


def test_one_peer_cannot_take_every_connection(capped: ServerProcess) -> None:
    held = _hold(capped, "127.0.0.1", 4)
    try:
        with _connect(capped, "127.0.0.1") as extra:
            assert _refused(extra) == (503, "too many connections from this address (limit 4); retry later", "1")
        assert _health_from(capped, "127.0.0.2") == 200  # another address still gets through
        held += [_connect(capped, "127.0.0.2") for _ in range(4)]
        time.sleep(0.3)
        with _connect(capped, "127.0.0.3") as extra:
            assert _refused(extra) == (503, "too many connections to this listener (limit 8); retry later", "1")
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if _health_from(capped, "127.0.0.1") == 200:
                break
        except (AssertionError, OSError):
            time.sleep(0.2)
    assert _health_from(capped, "127.0.0.1") == 200  # the slots are given back when the clients leave


def test_open_file_limit_is_raised(capped: ServerProcess) -> None:
    """Started with a soft limit of 1024, the server raises it to the hard limit (its caps need descriptors)."""
    with open(f"/proc/{capped.process.pid}/limits") as limits:
        row = next(line for line in limits if line.startswith("Max open files"))
    soft, hard = row.split()[3:5]
    assert soft == hard


def test_caps_are_fitted_under_a_low_open_file_limit() -> None:
    """The issue's case: with few descriptors, idle sockets made health fail. The caps shrink to fit the limit, so
    one address is refused while a probe from another still gets through."""

    # the limit is set by a launcher that then becomes the server, not by a preexec_fn: this test process may run
    # grpc's threads (from earlier tests), and a fork of it that runs Python before exec broke grpc's epoll in the
    # child now and then ("epoll_wait error: Bad file descriptor", and the server never started)
    launcher = "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (600, 600)); " + (
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    )
    argv = [sys.executable, "-c", launcher, "-m", "seawall", f"--model-repository={EXAMPLES}", "--http-port=0"]
    process = subprocess.Popen(
        [*argv, "--grpc-port=0", "--metrics-port=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    server = ServerProcess(process)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            server.lines.append(line)
            if "Seawall ready:" in line:
                server.addresses = dict(item.split("=", 1) for item in line.split("Seawall ready: ")[1].split())
                break
        assert (
            "--http-max-connections=1024 does not fit the open-file limit 600 over 2 HTTP listener(s): using 172"
            in (server.log())
        )
        held = _hold(server, "127.0.0.1", 129)
        try:
            with _connect(server, "127.0.0.1") as extra:
                assert _refused(extra) == (503, "too many connections from this address (limit 129); retry later", "1")
            assert _health_from(server, "127.0.0.2") == 200
        finally:
            for sock in held:
                sock.close()
    finally:
        process.terminate()
        process.wait(20)
        if process.stdout is not None:
            process.stdout.close()
