"""Operability of stub processes: each names its model, version and instance in its command line (as `ps` and
/proc/<pid>/cmdline show it, like Triton's stubs), and nothing else a client or operator gave the server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.harness import EXAMPLES, children, descendants, http_call, start_seawall
from tests.test_cli import REPO, error_of, parse


def _command_lines(pid: int) -> list[list[str]]:
    """The command lines of the stubs (not of the stub template, whose first argument after the script is
    `template`)."""
    lines = []
    for child in descendants(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                argv = [arg.decode() for arg in cmdline.read().split(b"\0") if arg]
        except OSError:
            continue
        scripts = [i for i, arg in enumerate(argv) if arg.endswith("bootstrap.py")]
        if scripts and argv[scripts[0] + 1 : scripts[0] + 2] != ["template"]:
            lines.append(argv)
    return lines


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_each_stub_names_its_model_version_and_instance(tmp_path: Path, start: str) -> None:
    shutil.copytree(EXAMPLES / "add_sub", tmp_path / "add_sub")
    config = tmp_path / "add_sub" / "config.pbtxt"
    config.write_text(
        config.read_text().replace("instance_group [ { kind: KIND_CPU } ]", "")
        + ('instance_group [ { kind: KIND_CPU count: 2 }, { name: "extra" kind: KIND_CPU } ]\n')
    )
    secret = "s3cr3t-value-of-the-restricted-api"
    server = start_seawall(
        f"--http-restricted-api=model-repository:key={secret}", f"--python-stub-start={start}", repository=tmp_path
    )
    try:
        stubs = _command_lines(server.process.pid)
        names = sorted(tuple(argv[-3:]) for argv in stubs)
        assert names == [
            ("model=add_sub", "version=1", "instance=add_sub_0_0"),
            ("model=add_sub", "version=1", "instance=add_sub_0_1"),
            ("model=add_sub", "version=1", "instance=extra_0"),
        ]
        for argv in stubs:
            assert not any(secret in arg or str(tmp_path) in arg for arg in argv), argv
    finally:
        server.stop()


def _infer(address: str) -> int:
    body = json.dumps(
        {
            "inputs": [
                {"name": "INPUT0", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
                {"name": "INPUT1", "shape": [4], "datatype": "FP32", "data": [1, 1, 1, 1]},
            ]
        }
    ).encode()
    status, _, _ = http_call(address, "POST", "/v2/models/add_sub/infer", body)
    return status


def _templates(server_pid: int) -> list[int]:
    """The stub template processes of a server (one; none while a dead one is replaced)."""
    found = []
    for child in children(server_pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                if b"\0template\0" in cmdline.read():
                    found.append(child)
        except OSError:
            continue  # exited meanwhile
    return found


def _template(server_pid: int) -> int:
    [template] = _templates(server_pid)
    return template


def test_a_dead_template_takes_its_stubs_and_both_come_back(tmp_path: Path) -> None:
    """Killing the stub template kills the stubs it forked (parent-death signal); each instance restarts its stub
    (its crash budget counts one crash) from a new template, and the model serves again."""
    shutil.copytree(EXAMPLES / "add_sub", tmp_path / "add_sub")
    server = start_seawall(repository=tmp_path)
    try:
        address = server.http
        assert _infer(address) == 200
        template = _template(server.process.pid)
        stubs = children(template)
        assert len(stubs) == 1
        os.kill(template, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (_infer(address) == 200 and _templates(server.process.pid) not in ([], [template])):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        assert stubs[0] not in descendants(server.process.pid)
        server.wait_for_log("the stub template stopped")
        server.wait_for_log("stub process died")
    finally:
        server.stop()


RANDOM_MODEL = """
import json
import os
import random

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.draws = [int(np.random.randint(2**62)), random.getrandbits(62)]

    def execute(self, requests):
        report = json.dumps({"pid": os.getpid(), "draws": self.draws})
        out = np.array([report.encode()], dtype=np.object_)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("REPORT", out)]) for _ in requests]
"""

RANDOM_CONFIG = """
name: "draws"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "REPORT" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 3 } ]
"""


def test_forked_stubs_do_not_share_random_state(tmp_path: Path) -> None:
    """Stubs forked from one template draw different numbers (numpy's and Python's generators are seeded per
    stub, not inherited from the template)."""
    (tmp_path / "draws" / "1").mkdir(parents=True)
    (tmp_path / "draws" / "1" / "model.py").write_text(RANDOM_MODEL)
    (tmp_path / "draws" / "config.pbtxt").write_text(RANDOM_CONFIG)
    server = start_seawall(repository=tmp_path)
    try:
        body = json.dumps({"inputs": [{"name": "X", "shape": [1], "datatype": "INT32", "data": [1]}]}).encode()
        draws: dict[int, list[int]] = {}
        deadline = time.monotonic() + 30
        while len(draws) < 3:
            assert time.monotonic() < deadline, draws
            status, _, reply = http_call(server.http, "POST", "/v2/models/draws/infer", body)
            assert status == 200, reply
            report = json.loads(json.loads(reply)["outputs"][0]["data"][0])
            draws[report["pid"]] = report["draws"]
        numpy_draws = {values[0] for values in draws.values()}
        python_draws = {values[1] for values in draws.values()}
        assert len(numpy_draws) == 3 and len(python_draws) == 3, draws
        template = _template(server.process.pid)
        assert sorted(draws) == sorted(children(template))  # they were forked by the template
    finally:
        server.stop()


def test_the_stub_start_flag_takes_fork_or_spawn_only() -> None:
    assert parse().backends.python_stub_start == "fork"
    assert parse("--python-stub-start=spawn").backends.python_stub_start == "spawn"
    assert error_of(REPO, "--python-stub-start=clone") == (
        'Bad option: "--python-stub-start".\ninvalid argument for --python-stub-start'
    )
