"""Operability of stub processes: each names its model, version and instance in its command line (as `ps` and
/proc/<pid>/cmdline show it, like Triton's stubs), and nothing else a client or operator gave the server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.harness import EXAMPLES, start_seawall


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _command_lines(pid: int) -> list[list[str]]:
    lines = []
    for child in _children(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                argv = [arg.decode() for arg in cmdline.read().split(b"\0") if arg]
        except OSError:
            continue
        if any(arg.endswith("bootstrap.py") for arg in argv):
            lines.append(argv)
    return lines


def test_each_stub_names_its_model_version_and_instance(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "add_sub", tmp_path / "add_sub")
    config = tmp_path / "add_sub" / "config.pbtxt"
    config.write_text(
        config.read_text().replace("instance_group [ { kind: KIND_CPU } ]", "")
        + ('instance_group [ { kind: KIND_CPU count: 2 }, { name: "extra" kind: KIND_CPU } ]\n')
    )
    secret = "s3cr3t-value-of-the-restricted-api"
    server = start_seawall(f"--http-restricted-api=model-repository:key={secret}", repository=tmp_path)
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
