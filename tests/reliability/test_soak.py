"""A soak: steady mixed load (HTTP JSON keep-alive, gRPC, SSE streams, and clients that connect, send one request
and leave) on one server; its memory (the server's and its stubs' RSS) and open files must stop growing once warm,
and the files must come back to the baseline when the load ends. SEAWALL_SOAK_SECONDS sets the length (`make
reliability` runs minutes; `make test` a short one)."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, start_seawall

SECONDS = float(os.environ.get("SEAWALL_SOAK_SECONDS", "20"))
_INFER = json.dumps(
    {
        "inputs": [
            {"name": "INPUT0", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
            {"name": "INPUT1", "shape": [4], "datatype": "FP32", "data": [1, 1, 1, 1]},
        ]
    }
).encode()
_GENERATE = json.dumps({"text_input": "soak", "repeat": 5}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("soak")
    for source in (EXAMPLES / "add_sub", TEST_MODELS / "generate_decoupled"):
        (root / source.name).symlink_to(source, target_is_directory=True)
    process = start_seawall(repository=root)
    yield process
    process.stop()


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            children = (task / "children").read_text().split()
            todo.extend(int(child) for child in children)
    return found


def _rss_bytes(pid: int) -> int:
    total = 0
    for member in _tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except FileNotFoundError:
            continue
        total += next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
    return total


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


Client = tuple[Callable[[], None], Callable[[], None]]  # one call, and what closes the client when done


def _loop(stop: threading.Event, errors: list[str], client: Client) -> None:
    call, close = client
    try:
        while not stop.is_set():
            try:
                call()
            except Exception as exc:
                errors.append(repr(exc))
                time.sleep(0.05)
    finally:
        close()


def _keep_alive_http(address: str) -> Client:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)

    def call() -> None:
        connection.request("POST", "/v2/models/add_sub/infer", _INFER, {"Content-Type": "application/json"})
        reply = connection.getresponse()
        assert reply.status == 200 and reply.read()

    return call, connection.close


def _one_shot_http(address: str, path: str, body: bytes) -> Client:
    host, port = address.rsplit(":", 1)

    def call() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            reply = connection.getresponse()
            assert reply.status == 200 and reply.read()
        finally:
            connection.close()

    return call, lambda: None


def _grpc(address: str) -> Client:
    client = grpcclient.InferenceServerClient(address)
    inputs = [grpcclient.InferInput(name, [4], "FP32") for name in ("INPUT0", "INPUT1")]
    for tensor in inputs:
        tensor.set_data_from_numpy(np.ones(4, dtype=np.float32))

    def call() -> None:
        assert client.infer("add_sub", inputs).as_numpy("OUTPUT0") is not None

    return call, client.close


def _clients(server: ServerProcess) -> list[Client]:
    return [
        _keep_alive_http(server.http),
        _keep_alive_http(server.http),
        _grpc(server.grpc),
        _one_shot_http(server.http, "/v2/models/generate_decoupled/generate_stream", _GENERATE),
        _one_shot_http(server.http, "/v2/models/add_sub/infer", _INFER),
    ]


def _load(server: ServerProcess, seconds: float, sample: Callable[[float], None]) -> None:
    """Every client in a thread of its own for `seconds`, `sample(elapsed)` twice a second; then all close."""
    stop, errors = threading.Event(), []
    threads = [threading.Thread(target=_loop, args=(stop, errors, client)) for client in _clients(server)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        while time.monotonic() - started < seconds:
            time.sleep(0.5)
            sample(time.monotonic() - started)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert errors == [], errors[:5]


def _settled_fds(pid: int, target: int) -> int:
    """The server's open files once they stop falling (the clients have closed; the server closes its ends)."""
    deadline = time.monotonic() + 10
    while _fds(pid) > target and time.monotonic() < deadline:
        time.sleep(0.1)
    return _fds(pid)


def test_memory_and_files_stop_growing_under_steady_load(server: ServerProcess, figure: Callable[[str], None]) -> None:
    pid = server.process.pid
    # a short burst of the same load first: the one-time growth (more shared-memory slots, response regions,
    # executor threads under concurrency) happens there, and the files it leaves open are the baseline
    _load(server, 3, lambda elapsed: None)
    baseline_fds = _settled_fds(pid, 0)
    samples: list[tuple[float, int, int]] = []
    _load(server, SECONDS, lambda elapsed: samples.append((elapsed, _rss_bytes(pid), _fds(pid))))
    after_fds = _settled_fds(pid, baseline_fds)
    warm = [s for s in samples if s[0] >= SECONDS / 3]  # the first third warms allocators and caches
    times = np.array([s[0] for s in warm]) / 60
    rss_slope = float(np.polyfit(times, np.array([s[1] for s in warm]) / 2**20, 1)[0])
    rss_growth = (max(s[1] for s in warm[len(warm) // 2 :]) - max(s[1] for s in warm[: len(warm) // 2])) / 2**20
    figure(
        f"{SECONDS:.0f}s soak: RSS {warm[-1][1] / 2**20:.0f} MiB, slope {rss_slope:+.1f} MiB/min once warm, "
        f"second-half peak {rss_growth:+.1f} MiB over the first; fds {baseline_fds} before, "
        f"{max(s[2] for s in samples)} at most, {after_fds} after"
    )
    assert after_fds <= baseline_fds + 2
    # the second half of the warm window peaks no higher than the first, within allocator noise
    assert rss_growth < 8, f"RSS still growing: {rss_growth:+.1f} MiB"
