"""Memory comes back on unload: after each unload the model's processes are gone, and over many load/unload
cycles the server's proportional set size (its process tree) returns to where it was (issue: Triton users
report memory that never returns, server#6836, #7020)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import tritonclient.http as httpclient

from tests.harness import EXAMPLES, descendants, start_seawall

CYCLES = int(os.environ.get("SEAWALL_LOAD_CYCLES", "15"))  # make reliability: 50


def _stubs(pid: int) -> list[int]:
    """The stub processes (not the stub template, which stays for the server's life once started)."""
    found = []
    for member in descendants(pid):
        try:
            if b"\0template\0" not in Path(f"/proc/{member}/cmdline").read_bytes():
                found.append(member)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def _pss_bytes(pid: int) -> int:
    total = 0
    for member in [pid, *descendants(pid)]:
        try:
            rollup = Path(f"/proc/{member}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += next(int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:"))
    return total


def test_pss_returns_after_many_load_unload_cycles(tmp_path: Path, figure: Callable[[str], None]) -> None:
    (tmp_path / "add_sub").symlink_to(EXAMPLES / "add_sub", target_is_directory=True)
    server = start_seawall(
        "--model-control-mode=explicit", "--allow-unrestricted-model-repository=true", repository=tmp_path
    )
    try:
        pid = server.process.pid
        client = httpclient.InferenceServerClient(server.http, network_timeout=60)

        def cycle() -> None:
            client.load_model("add_sub")
            assert len(_stubs(pid)) == 1  # its stub
            client.unload_model("add_sub")
            deadline = time.monotonic() + 10
            while _stubs(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert _stubs(pid) == []  # the model's process is gone

        for _ in range(3):  # the first loads import and allocate what every later one reuses
            cycle()
        before = _pss_bytes(pid)
        started = time.monotonic()
        for _ in range(CYCLES):
            cycle()
        took = time.monotonic() - started
        after = _pss_bytes(pid)
    finally:
        server.stop()
    grown = (after - before) / 2**20
    figure(
        f"{CYCLES} load/unload cycles in {took:.1f}s: PSS {before / 2**20:.1f} MiB before, "
        f"{after / 2**20:.1f} MiB after ({grown:+.2f} MiB)"
    )
    assert grown < 5, f"PSS grew {grown:+.2f} MiB over {CYCLES} cycles"
