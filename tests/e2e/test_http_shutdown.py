"""Graceful shutdown over HTTP: SIGTERM while slow requests run; each accepted request is answered, readiness
drops at once, new inference is refused, the process exits 0 after every model's finalize ran."""

from __future__ import annotations

import json
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
