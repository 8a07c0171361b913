"""Starts a real `seawall` (or Triton) process on ephemeral loopback ports for end-to-end tests.

Seawall binds port 0 itself and logs the bound addresses in one line ("Seawall ready: http=... grpc=..."),
so there is no probe-then-bind race.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "models"
TEST_MODELS = Path(__file__).resolve().parent / "models"
TRITON = Path(os.environ.get("SEAWALL_TRITON", ROOT.parent / "shared" / "tools" / "tritonserver"))

_READY = re.compile(r"Seawall ready: (.*)$")
T = TypeVar("T")


@dataclass
class ServerProcess:
    """A running server process with its bound addresses and captured log lines."""

    process: subprocess.Popen[str]
    addresses: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @property
    def http(self) -> str:
        return self.addresses["http"]

    @property
    def grpc(self) -> str:
        return self.addresses["grpc"]

    @property
    def metrics(self) -> str:
        return self.addresses["metrics"]

    def log(self) -> str:
        return "\n".join(self.lines)

    @property
    def is_triton(self) -> bool:
        """Whether this is the reference Triton (else Seawall)."""
        program = self.process.args[0] if isinstance(self.process.args, list) else self.process.args
        return Path(str(program)).name == "tritonserver"

    def describe(self, lines: int = 20) -> str:
        """Which server this is, whether it still runs, and the end of its log (for a failure's message)."""
        name = "triton" if self.is_triton else "seawall"
        code = self.process.poll()
        state = "running" if code is None else f"exited with {code}"
        tail = "\n".join(self.lines[-lines:])
        return f"{name} (pid {self.process.pid}, {state}); its last log lines:\n{tail}"

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 30) -> None:
        """Wait until `text` is in the log `count` times: a line reaches the test through a pipe and a reader
        thread, so it may arrive after the reply that followed it."""
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            assert time.monotonic() < deadline, f"{text!r} not {count} time(s) in the server log"
            time.sleep(0.05)

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http}/v2/health/ready", timeout=5) as reply:
                return bool(reply.status == 200)
        except Exception:
            return False

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def children(pid: int) -> list[int]:
    """The child processes of `pid` (none once it has exited)."""
    found = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass  # exited meanwhile
    return found


def descendants(pid: int) -> list[int]:
    """Children, and theirs: forked stubs are children of the stub template, itself a child of the server."""
    found = children(pid)
    return found + [grandchild for child in found for grandchild in descendants(child)]


def stub_pid(server: ServerProcess, model: str) -> int:
    """The stub process of `model`'s (first) instance: its command line names it (`model=<name>`)."""
    for pid in descendants(server.process.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"model=" + model.encode() in argv:
            return pid
    raise AssertionError(f"no stub process of model '{model}'")


def _drain(server: ServerProcess, ready: threading.Event) -> None:
    assert server.process.stdout is not None
    for raw in server.process.stdout:
        line = raw.rstrip("\n")
        server.lines.append(line)
        match = _READY.search(line)
        if match and not ready.is_set():
            for item in match.group(1).split():
                key, _, value = item.partition("=")
                server.addresses[key] = value
            ready.set()
    ready.set()


def start_seawall(
    *args: str,
    repository: Path | str | None = EXAMPLES,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    new_session: bool = False,
) -> ServerProcess:
    """Start `python -m seawall` with ports 0 and `args`; return once every listener is bound. `new_session`: in a
    process group of its own (its pid is the group's id), for tests that signal the whole group.

    Raises RuntimeError (with the server's output) if it exits or does not become ready in time.
    """
    argv = [sys.executable, "-m", "seawall"]
    if repository is not None:
        argv.append(f"--model-repository={repository}")
    defaults = {"--http-port": "0", "--grpc-port": "0", "--metrics-port": "0"}
    for flag, value in defaults.items():
        if not any(a.startswith(flag) for a in args):
            argv.append(f"{flag}={value}")
    argv.extend(args)
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        start_new_session=new_session,
    )
    server = ServerProcess(process)
    ready = threading.Event()
    server._reader = threading.Thread(target=_drain, args=(server, ready), daemon=True)
    server._reader.start()
    ready.wait(timeout)
    if not server.addresses:
        server.stop()
        raise RuntimeError(f"seawall did not start (exit {process.returncode}):\n{server.log()}")
    return server


def http_call(
    address: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request to `address` (for malformed input and exact statuses): status, lower-case headers,
    body."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        reply = connection.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
    finally:
        connection.close()


def http_request(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """`http_call` to the server's HTTP listener; a broken connection names the server that broke it."""
    try:
        return http_call(server.http, method, path, body, headers, timeout)
    except ConnectionError as error:
        raise ConnectionError(f"{method} {path}: {error}; the server is {server.describe()}") from error


def run_seawall(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m seawall args` to completion (for start-up failures and CLI errors)."""
    return subprocess.run(
        [sys.executable, "-m", "seawall", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def free_port() -> int:
    """A free loopback port, only for Triton, which cannot bind port 0 and report it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_triton(repository: Path | str, *args: str, timeout: float = 120) -> ServerProcess:
    """Start the real Triton on free loopback ports and wait until it is ready."""
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    argv = [
        str(TRITON),
        f"--model-repository={repository}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        f"--http-port={ports['http']}",
        f"--grpc-port={ports['grpc']}",
        f"--metrics-port={ports['metrics']}",
        *args,
    ]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = ServerProcess(process, {k: f"127.0.0.1:{v}" for k, v in ports.items()})
    server._reader = threading.Thread(target=_drain, args=(server, threading.Event()), daemon=True)
    server._reader.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tritonserver exited {process.returncode}:\n{server.log()}")
        if server.is_ready():
            return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"tritonserver not ready in {timeout}s:\n{server.log()}")


@contextlib.contextmanager
def triton_and_seawall(root: Path, *models: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """The reference Triton and Seawall serving one repository, `root`, made of copies of `models`; skips the
    test when the reference binary is absent. Both are stopped on exit."""
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    for model in models:
        shutil.copytree(model, root / model.name)
    triton = start_triton(root)
    try:
        seawall = start_seawall(repository=root)
    except BaseException:
        triton.stop()
        raise
    try:
        yield triton, seawall
    finally:
        seawall.stop()
        triton.stop()


def settled(read: Callable[[], T], done: Callable[[T], bool], seconds: float = 15) -> T:
    """`read()` again until `done` holds for its value or `seconds` pass, then that last value. Triton (and a
    server in general) may record a request's statistics after the reply has gone out, so a read right after the
    last reply can race the record on a loaded machine; the caller asserts the returned value exactly."""
    deadline = time.monotonic() + seconds
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value
