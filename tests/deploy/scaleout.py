"""The scale-out rehearsal: nginx (deploy/nginx/seawall.conf.template) in front of three Seawall processes on
loopback, readiness-gated, under steady HTTP and gRPC load; one process is SIGKILLed (and started again), another
is rolled (taken out of the gateway, SIGTERM, drained, started again, put back). Clients must see no failure.

`make scaleout-demo` runs it for longer and prints its figures; tests/deploy/test_scaleout.py runs it briefly.
Needs nginx (Debian's nginx-light; .ci/run installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from tests.harness import ServerProcess, free_port, start_seawall

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "seawall.conf.template"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
_BODY = json.dumps(
    {
        "inputs": [
            {"name": "INPUT0", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
            {"name": "INPUT1", "shape": [4], "datatype": "FP32", "data": [1, 1, 1, 1]},
        ]
    }
).encode()


@dataclass
class Backend:
    """One Seawall process of the pool, on fixed ports so that it can be started again at the same address."""

    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    process: ServerProcess | None = None
    held_out: bool = False  # taken out of the gateway by the operator (a roll), whatever its readiness
    started: list[ServerProcess] = field(default_factory=list)  # every process it ran, for their logs

    def start(self) -> None:
        """Start a process on the backend's ports. The first start takes other free ports when one was taken
        meanwhile (`free_port` only found it free; nothing has the address yet); a restart keeps them."""
        attempts = 1 if self.started else 3
        for attempt in range(attempts):
            try:
                self.process = start_seawall(
                    f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}", "--allow-metrics=false"
                )
                break
            except RuntimeError as exc:
                if "address already in use" not in str(exc) or attempt == attempts - 1:
                    raise
                self.http_port, self.grpc_port = free_port(), free_port()
        self.started.append(self.process)

    def ready(self) -> bool:
        return self.process is not None and self.process.process.poll() is None and self.process.is_ready()


class Gateway:
    """nginx with the pool as upstreams; `refresh` writes `down` after the servers that are not ready or are held
    out, and reloads nginx gracefully when that changes, waiting until the old worker has exited."""

    def __init__(self, backends: list[Backend]) -> None:
        assert NGINX is not None
        self.backends = backends
        self.prefix = Path(tempfile.mkdtemp(prefix="seawall-nginx-"))
        self.prefix.chmod(0o755)  # nginx's worker (an unprivileged user when started as root) reads under it
        self.http_port, self.grpc_port = free_port(), free_port()
        self.up: tuple[bool, ...] = ()
        self.reloads = 0
        self.log = ""  # nginx's error log (info level), read when it stops
        self._lock = threading.Lock()  # the watcher and a roll both refresh
        self._write(tuple(True for _ in backends))
        self.process = subprocess.Popen([NGINX, "-p", str(self.prefix), "-c", "nginx.conf", "-g", "daemon off;"])
        _wait(lambda: self._workers() != set(), 10, "nginx did not start")

    def _write(self, up: tuple[bool, ...]) -> None:
        def servers(port: str) -> str:
            return "\n".join(
                f"        server 127.0.0.1:{getattr(b, port)} max_fails=0{'' if on else ' down'};"
                for b, on in zip(self.backends, up, strict=True)
            )

        text = TEMPLATE.read_text()
        for key, value in {
            "prefix": str(self.prefix),
            "log_level": "info",  # what nginx says when it resets or retries a call
            "address": "127.0.0.1",
            "http_port": str(self.http_port),
            "grpc_port": str(self.grpc_port),
            "http_servers": servers("http_port"),
            "grpc_servers": servers("grpc_port"),
        }.items():
            text = text.replace("{{" + key + "}}", value)
        (self.prefix / "nginx.conf").write_text(text)
        self.up = up

    def _workers(self) -> set[int]:
        found = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True)
        return {int(pid) for pid in found.stdout.split()}

    def refresh(self) -> None:
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        up = tuple(b.ready() and not b.held_out for b in self.backends)
        if up == self.up or not any(up):
            return  # nginx needs one server up; with none, connection errors are the truth anyway
        old = self._workers()
        self._write(up)
        os.kill(self.process.pid, signal.SIGHUP)
        self.reloads += 1
        _wait(lambda: not (old & self._workers()), 20, "nginx's old worker did not exit after a reload")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        with contextlib.suppress(OSError):
            self.log = (self.prefix / "error.log").read_text(errors="replace")
        shutil.rmtree(self.prefix, ignore_errors=True)


def _wait(condition: object, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise RuntimeError(message)


@dataclass
class Tally:
    ok: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    reconnects: int = 0  # a kept-alive connection to nginx found closed before the request was sent
    lock: threading.Lock = field(default_factory=threading.Lock)


def _http_client(port: int, stop: threading.Event, tally: Tally) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        while not stop.is_set():
            _http_call(connection, tally)
    finally:
        connection.close()


def _http_call(connection: http.client.HTTPConnection, tally: Tally) -> None:
    try:
        connection.request("POST", "/v2/models/add_sub/infer", _BODY, {"Content-Type": "application/json"})
        reply = connection.getresponse()
        body = reply.read()
    except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
        # nginx closes idle kept-alive client connections when a reload retires its worker; the request reached
        # no server, and every HTTP client retries it on a new connection (as urllib3 does)
        connection.close()
        with tally.lock:
            tally.reconnects += 1
        return
    with tally.lock:
        if reply.status == 200 and json.loads(body)["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]:
            tally.ok["http"] += 1
        else:
            tally.failures.append(f"http {reply.status}: {body[:200]!r}")


#: gRPC's own client retry policy on UNAVAILABLE: nginx streams a gRPC request body to the upstream instead of
#: buffering it, so it cannot replay a call whose server died mid-call (it answers 502 → UNAVAILABLE); a gRPC
#: client behind a gateway retries those, as gRPC's retry design intends
_GRPC_RETRIES = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "inference.GRPCInferenceService"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def _grpc_client(port: int, stop: threading.Event, tally: Tally) -> None:
    inputs = [grpcclient.InferInput("INPUT0", [4], "FP32"), grpcclient.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(np.array([1, 2, 3, 4], dtype=np.float32))
    inputs[1].set_data_from_numpy(np.ones(4, dtype=np.float32))
    channel_args = [("grpc.enable_retries", 1), ("grpc.service_config", _GRPC_RETRIES)]
    with grpcclient.InferenceServerClient(f"127.0.0.1:{port}", channel_args=channel_args) as client:
        while not stop.is_set():
            try:
                result = client.infer("add_sub", inputs, client_timeout=30).as_numpy("OUTPUT0")
            except Exception as exc:
                with tally.lock:
                    tally.failures.append(f"grpc: {exc}")
                continue
            with tally.lock:
                if result is not None and result.tolist() == [2.0, 3.0, 4.0, 5.0]:
                    tally.ok["grpc"] += 1
                else:
                    tally.failures.append(f"grpc: wrong answer {result!r}")


@dataclass
class Rehearsal:
    seconds: float
    requests: Counter[str]
    failures: list[str]
    reconnects: int
    reloads: int
    kill_to_ready_s: float
    roll_s: float
    evidence: str = ""  # on failure: nginx's error log and every Seawall process's log

    def line(self) -> str:
        total = sum(self.requests.values())
        return (
            f"scale-out: {total} requests in {self.seconds:.1f}s ({total / self.seconds:.0f}/s; "
            f"http {self.requests['http']}, grpc {self.requests['grpc']}), {len(self.failures)} failed, "
            f"{self.reconnects} client reconnects, {self.reloads} gateway reloads; SIGKILLed process ready again "
            f"after {self.kill_to_ready_s:.1f}s, roll took {self.roll_s:.1f}s"
        )


def rehearse(steady_s: float = 2.0, http_clients: int = 3, grpc_clients: int = 2) -> Rehearsal:
    """Run the whole rehearsal; `steady_s` of plain load before, between and after the two faults."""
    backends = [Backend() for _ in range(3)]
    gateway: Gateway | None = None
    stop, tally = threading.Event(), Tally()
    threads: list[threading.Thread] = []
    watching = threading.Event()
    try:
        for backend in backends:
            backend.start()
        gateway = Gateway(backends)
        watcher = threading.Thread(target=_watch, args=(gateway, watching), daemon=True)
        watcher.start()
        for target, port, count in ((_http_client, gateway.http_port, http_clients),
                                    (_grpc_client, gateway.grpc_port, grpc_clients)):  # fmt: skip
            threads += [threading.Thread(target=target, args=(port, stop, tally)) for _ in range(count)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(steady_s)
        victim = backends[0]  # crash: SIGKILL, no warning to anyone; the gateway finds out by itself
        assert victim.process is not None
        victim.process.process.kill()
        victim.process.stop()
        killed = time.monotonic()
        time.sleep(steady_s)
        victim.start()
        kill_to_ready = time.monotonic() - killed
        time.sleep(steady_s)
        rolled = backends[1]  # roll: out of the gateway, SIGTERM, drain, start again, back in
        roll_started = time.monotonic()
        rolled.held_out = True
        gateway.refresh()
        assert rolled.process is not None
        assert rolled.process.stop() == 0
        rolled.start()
        rolled.held_out = False
        gateway.refresh()
        roll = time.monotonic() - roll_started
        time.sleep(steady_s)
        stop.set()
        for thread in threads:
            thread.join(60)
        elapsed = time.monotonic() - started
        result = Rehearsal(elapsed, tally.ok, tally.failures, tally.reconnects, gateway.reloads, kill_to_ready, roll)
    finally:
        stop.set()
        watching.set()
        for thread in threads:
            thread.join(60)
        if gateway is not None:
            gateway.stop()
        for backend in backends:
            if backend.process is not None:
                backend.process.stop()
    if result.failures:
        result.evidence = _evidence(gateway, backends)
    return result


def _evidence(gateway: Gateway, backends: list[Backend]) -> str:
    """What nginx logged (but its routine notices) and what each Seawall process logged, to read a failure by."""
    parts = ["nginx error log:", *(line for line in gateway.log.splitlines() if "[notice]" not in line)]
    for number, backend in enumerate(backends):
        for run, process in enumerate(backend.started):
            parts += [f"seawall {number} (grpc port {backend.grpc_port}), run {run + 1}:", process.log()]
    return "\n".join(parts)


def _watch(gateway: Gateway, done: threading.Event) -> None:
    """The readiness gate: poll every process's readiness and keep nginx's upstream list true to it."""
    while not done.wait(0.05):
        try:
            gateway.refresh()
        except RuntimeError as exc:
            print(f"scale-out: gateway refresh failed: {exc}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steady-seconds", type=float, default=5.0)
    args = parser.parse_args()
    if NGINX is None:
        sys.exit("make scaleout-demo: nginx is not installed (apt-get install nginx-light)")
    result = rehearse(args.steady_seconds)
    print(result.line())
    for failure in result.failures[:20]:
        print(f"  failed: {failure}")
    if result.evidence:
        print(result.evidence)
    sys.exit(1 if result.failures else 0)


if __name__ == "__main__":
    main()
