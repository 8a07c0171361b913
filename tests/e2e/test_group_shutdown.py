"""SIGTERM to the whole process group (issue 14 item 1), as `timeout`, Ctrl-C and systemd's default
KillMode=control-group send it: every process of the group gets the signal, the server's workers included. The
server runs in a session of its own (its pid is the group's id) and the test signals the group while a request
executes. The shutdown must be as clean as SIGTERM to the server alone, for Python stubs started both ways
(--python-stub-start=fork and spawn) and for the onnxruntime and pytorch worker processes:
- the request in flight is answered, and the server exits 0;
- every instance is finalized exactly once (the python model's own finalize() logs a line; for every instance the
  host logs "finalized" at --log-verbose=1 once the stub answered its Finalize);
- nothing is started again: no "starting its stub process again", no stub that died, and no worker pid that was not
  there before the signal ever appears.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import onnx_models as m
from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, start_seawall
from tests.harness import http_request as request

#: a worker imports its runtime (onnxruntime, torch) at start: slow on a busy machine
STARTUP_S = 240
SLEEP_MS = 1500
#: the instances each repository has, as the host names them in its log
INSTANCES = {
    "python": ("add_sub_0_0", "slow_0"),
    "onnxruntime": ("ort_add_sub_0", "slow_0"),
    "pytorch": ("pt_add_sub_0", "slow_0"),
}


def _repository(root: Path, backend: str) -> Path:
    """The slow python model (it keeps a request in flight through the signal) and an add_sub of `backend`."""
    shutil.copytree(TEST_MODELS / "slow", root / "slow")
    if backend == "python":
        shutil.copytree(EXAMPLES / "add_sub", root / "add_sub")
    elif backend == "onnxruntime":
        m.write(root, "ort_add_sub", m.add_sub(["n"]), m.ADD_SUB_CONFIG.format(name="ort_add_sub", extra=""))
    else:
        tm = pytest.importorskip("tests.torch_models")
        var = "TYPE_FP32 -1"
        config = tm.config("pt_add_sub", [("INPUT0", var), ("INPUT1", var)], [("OUTPUT0", var), ("OUTPUT1", var)])
        tm.write(root, "pt_add_sub", tm.scripted(tm.AddSub()), config)
    return root


def _children(pid: int) -> set[int]:
    """Every descendant of `pid` (forked stubs are the stub template's children)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(b")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found | {grandchild for child in found for grandchild in _children(child)}


def _slow_request(server: ServerProcess) -> tuple[int, dict[str, str], bytes]:
    document = {
        "parameters": {"sleep_ms": SLEEP_MS, "log": "slow: executing"},
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [7]}],
        "outputs": [{"name": "OUTPUT0"}],
    }
    return request(server, "POST", "/v2/models/slow/infer", json.dumps(document).encode())


@pytest.mark.parametrize(
    ("backend", "start"),
    [("python", "fork"), ("python", "spawn"), ("onnxruntime", "fork"), ("pytorch", "fork"), ("pytorch", "spawn")],
)
def test_sigterm_to_the_group_finalizes_every_instance_once_and_restarts_nothing(
    tmp_path: Path, backend: str, start: str, figure: Callable[[str], None]
) -> None:
    root = _repository(tmp_path, backend)
    server = start_seawall(
        f"--python-stub-start={start}", "--log-verbose=1", repository=root, new_session=True, timeout=STARTUP_S
    )
    try:
        assert server.is_ready(), server.log()
        workers = _children(server.process.pid)
        assert len(workers) >= len(INSTANCES[backend]), workers
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(_slow_request, server)
            server.wait_for_log("slow: executing")  # the request is inside the model
            started = time.monotonic()
            os.killpg(server.process.pid, signal.SIGTERM)
            seen: set[int] = set()
            deadline = started + 60
            while server.process.poll() is None and time.monotonic() < deadline:
                seen |= _children(server.process.pid)
                time.sleep(0.02)
            took = time.monotonic() - started
            status, _, body = busy.result(timeout=30)
        assert server.process.wait(5) == 0, server.log()
    finally:
        server.stop()
    figure(f"group SIGTERM ({backend}, {start}): exit {took:.1f}s, request answered {status}")
    log = server.log()
    assert status == 200 and json.loads(body)["outputs"][0]["data"] == [7], body
    assert seen <= workers, (sorted(seen - workers), log)  # nothing started during the shutdown
    for instance in INSTANCES[backend]:
        assert log.count(f"model instance '{instance}': finalized") == 1, log
    if backend == "python":
        assert log.count("add_sub: finalize") == 1, log
    for trouble in ("starting its stub process again", "stub process died", "finalize did not complete", "crashed"):
        assert trouble not in log, log
    assert log.index("Shutting down") < log.index(f"model instance '{INSTANCES[backend][0]}': finalized")
