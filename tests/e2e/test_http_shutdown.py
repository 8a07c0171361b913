"""Graceful shutdown over HTTP: SIGTERM while slow requests run; each accepted request is answered, readiness
drops at once, new inference is refused, the process exits 0 after every model's finalize ran."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.harness import EXAMPLES, TEST_MODELS, start_seawall
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
    return found


def _running(pid: int) -> bool:
    """Not exited (a zombie waiting for whoever adopted it counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_stubs_end_when_the_server_is_killed(tmp_path: Path) -> None:
    """Stubs ignore SIGTERM, so nothing but their channel ends them when the server dies without a shutdown."""
    shutil.copytree(EXAMPLES / "add_sub", tmp_path / "add_sub")
    server = start_seawall(repository=tmp_path)
    stubs = _children(server.process.pid)
    try:
        assert stubs, "the model's stub process runs"
        server.process.kill()
        deadline = time.monotonic() + 20
        while any(_running(pid) for pid in stubs) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in stubs if _running(pid)]
    finally:
        server.stop()
