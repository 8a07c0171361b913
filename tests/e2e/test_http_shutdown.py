"""Graceful shutdown over HTTP: SIGTERM while slow requests run; each accepted request is answered, readiness
drops at once, new inference is refused, the process exits 0 after every model's finalize ran."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from seawall.app import STOP_GRACE_S
from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, start_seawall
from tests.harness import http_request as request

_SLEEP_MS = 300
_BURST = 5


def _slow_body(index: int) -> bytes:
    document = {
        "id": str(index),
        "parameters": {"sleep_ms": _SLEEP_MS},
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [index, index]}],
        "outputs": [{"name": "OUTPUT0"}],
    }
    return json.dumps(document).encode()


def test_sigterm_drains_accepted_requests_then_exits_zero(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "add_sub", tmp_path / "add_sub")
    shutil.copytree(TEST_MODELS / "slow", tmp_path / "slow")
    server = start_seawall(repository=tmp_path)
    try:
        with ThreadPoolExecutor(_BURST) as pool:
            futures = [
                pool.submit(request, server, "POST", "/v2/models/slow/infer", _slow_body(i)) for i in range(_BURST)
            ]
            time.sleep(0.2)  # every request is accepted (the instance runs them one after another)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.1)
            readiness = request(server, "GET", "/v2/health/ready")[0]
            refused, _, refusal = request(server, "POST", "/v2/models/slow/infer", _slow_body(99))
            replies = [future.result(timeout=30) for future in futures]
        assert readiness == 400
        assert (refused, json.loads(refusal)) == (503, {"error": "Server is shutting down"})
        for index, (status, _, body) in enumerate(replies):
            assert status == 200, body
            answer = json.loads(body)
            assert answer["id"] == str(index) and answer["outputs"][0]["data"] == [index, index]
        assert server.process.wait(30) == 0
    finally:
        server.stop()
    log = server.log()
    assert "add_sub: finalize" in log
    assert log.index("Shutting down") < log.index("add_sub: finalize")


def test_sigterm_to_the_whole_process_group_shuts_down_as_cleanly(tmp_path: Path) -> None:
    """systemd's KillMode=control-group, `timeout` and Ctrl-C signal every process of the group, stubs included:
    the stubs must outlive the drain, so each accepted request is answered, each instance's finalize() runs once,
    and nothing is started again during the shutdown."""
    shutil.copytree(EXAMPLES / "add_sub", tmp_path / "add_sub")
    shutil.copytree(TEST_MODELS / "slow", tmp_path / "slow")
    server = start_seawall(repository=tmp_path, new_session=True)
    try:
        with ThreadPoolExecutor(_BURST) as pool:
            futures = [
                pool.submit(request, server, "POST", "/v2/models/slow/infer", _slow_body(i)) for i in range(_BURST)
            ]
            time.sleep(0.2)
            os.killpg(server.process.pid, signal.SIGTERM)
            replies = [future.result(timeout=30) for future in futures]
        assert [status for status, _, _ in replies] == [200] * _BURST, replies
        assert server.process.wait(30) == 0
    finally:
        server.stop()
    log = server.log()
    assert log.count("add_sub: finalize") == 1, log
    assert "starting its stub process again" not in log and "crashed" not in log, log


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        if entry.name.isdigit() and int(stat.rsplit(b")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found + [grandchild for child in found for grandchild in _children(child)]  # forked stubs: the template's


def _running(pid: int) -> bool:
    """Not exited (a zombie waiting for whoever adopted it counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _still_running(pids: list[int], within: float = 20) -> list[int]:
    """`pids` that have not exited after waiting up to `within` seconds."""
    deadline = time.monotonic() + within
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if _running(pid)]


def test_stubs_end_when_the_server_is_killed(tmp_path: Path) -> None:
    """Stubs ignore SIGTERM, so nothing but their channel ends them when the server dies without a shutdown."""
    shutil.copytree(EXAMPLES / "add_sub", tmp_path / "add_sub")
    server = start_seawall(repository=tmp_path)
    stubs = _children(server.process.pid)
    try:
        assert stubs, "the model's stub process runs"
        server.process.kill()
        assert _still_running(stubs) == []
    finally:
        server.stop()


def _busy_server(
    tmp_path: Path, *args: str
) -> tuple[ServerProcess, list[int], Future[tuple[int, dict[str, str], bytes]]]:
    """A server whose only model is busy for 20 s with one request, and the pids of its stubs."""
    shutil.copytree(TEST_MODELS / "slow", tmp_path / "slow")
    server = start_seawall(*args, repository=tmp_path)
    document = {
        "parameters": {"sleep_ms": 20_000},
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1]}],
    }
    pool = ThreadPoolExecutor(1)
    busy = pool.submit(request, server, "POST", "/v2/models/slow/infer", json.dumps(document).encode())
    pool.shutdown(wait=False)
    time.sleep(0.5)  # the request is executing
    return server, _children(server.process.pid), busy


def test_the_exit_timeout_bounds_the_whole_exit(tmp_path: Path, figure: Callable[[str], None]) -> None:
    """--exit-timeout-secs=2 with a model busy for 20 s: the server exits within the timeout and the unload's
    grace (app.STOP_GRACE_S), and its stubs with it."""
    server, stubs, busy = _busy_server(tmp_path, "--exit-timeout-secs=2")
    try:
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(15)
        took = time.monotonic() - started
    finally:
        server.stop()
    figure(f"exit {took:.1f}s after SIGTERM with --exit-timeout-secs=2 and a model busy for 20 s")
    assert 1.5 < took < 2 + STOP_GRACE_S + 3, took
    assert _still_running(stubs, 5) == []
    try:
        status = busy.result(timeout=10)[0]
    except ConnectionError:
        status = 0  # cut without an answer
    assert status != 200
    assert "exit timeout: 1 request(s) still in flight are cancelled" in server.log()


def test_a_second_sigterm_exits_at_once(tmp_path: Path, figure: Callable[[str], None]) -> None:
    server, stubs, _ = _busy_server(tmp_path, "--exit-timeout-secs=60")
    try:
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.process.poll() is None  # draining: waiting for the busy request
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(10)
        took = time.monotonic() - started
    finally:
        server.stop()
    figure(f"exit {took:.2f}s after the second SIGTERM")
    assert took < 3, (took, server.log())
    assert _still_running(stubs, 5) == []
    assert "second signal: the drain is abandoned" in server.log()
