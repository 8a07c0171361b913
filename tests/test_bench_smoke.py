"""Smoke test of the benchmark's load generator: ~1 s of add_sub load on a Seawall process, HTTP JSON and gRPC.

The full benchmark (`make bench`) is not part of the test suite; this only checks that the load path works.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.loadgen import run_load
from tests.harness import ROOT, ServerProcess, start_seawall


@pytest.fixture(scope="module")
def seawall() -> Iterator[ServerProcess]:
    server = start_seawall(repository=ROOT / "bench" / "models")
    yield server
    server.stop()


@pytest.mark.parametrize("mode", ["http-json", "grpc"])
def test_loadgen_drives_add_sub_without_errors(seawall: ServerProcess, mode: str) -> None:
    url = seawall.grpc if mode == "grpc" else seawall.http
    result = run_load(url, mode, "add_sub", concurrency=4, seconds=1.0, processes=2, warmup=0.1)
    assert result.errors == 0
    assert result.requests > 10
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms
