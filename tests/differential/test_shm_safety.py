"""Triton 2.51 and Seawall side by side on client shared memory a client abuses (issue 9, findings 3 and 10):
Triton registers another user's 0600 object and dies with SIGBUS on a truncated region; Seawall refuses the
first and answers the second with 400, and stays up (docs/differences.md, "Extensions")."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import EXAMPLES, TRITON, ServerProcess, http_request, start_seawall, start_triton


@pytest.fixture
def keys() -> Iterator[dict[str, str]]:
    names = {kind: f"sw-diff-{kind}-{uuid.uuid4().hex}" for kind in ("foreign", "truncated")}
    fd = os.open(f"/dev/shm/{names['foreign']}", os.O_CREAT | os.O_RDWR, 0o600)
    os.write(fd, b"another user's secret\n" * 100)
    os.fchown(fd, 65534, 65534)
    os.close(fd)
    with open(f"/dev/shm/{names['truncated']}", "wb") as file:
        file.write(bytes(4096))
    yield names
    for name in names.values():
        os.unlink(f"/dev/shm/{name}")


def _call(server: ServerProcess, method: str, path: str, document: Any = None) -> tuple[int, Any]:
    body = None if document is None else json.dumps(document).encode()
    status, _, data = http_request(server, method, path, body)
    return status, json.loads(data) if data else None


def _abuse(server: ServerProcess, keys: dict[str, str]) -> tuple[tuple[int, Any], tuple[int, Any] | str]:
    """Register the foreign object, then infer from a region whose object was truncated to 0 bytes."""
    foreign = _call(
        server, "POST", "/v2/systemsharedmemory/region/f/register", {"key": keys["foreign"], "byte_size": 64}
    )
    assert (
        _call(server, "POST", "/v2/systemsharedmemory/region/t/register", {"key": keys["truncated"], "byte_size": 64})[
            0
        ]
        == 200
    )
    os.truncate(f"/dev/shm/{keys['truncated']}", 0)
    parameters = [
        {"shared_memory_region": "t", "shared_memory_offset": o, "shared_memory_byte_size": 16} for o in (0, 16)
    ]
    document = {
        "inputs": [
            {"name": name, "datatype": "FP32", "shape": [4], "parameters": p}
            for name, p in zip(("INPUT0", "INPUT1"), parameters, strict=True)
        ]
    }
    try:
        return foreign, _call(server, "POST", "/v2/models/add_sub/infer", document)
    except ConnectionError:
        return foreign, f"died with signal {-(server.process.wait(timeout=20))}"


def test_foreign_and_truncated_shared_memory(keys: dict[str, str]) -> None:
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    triton = start_triton(EXAMPLES)
    try:
        assert _abuse(triton, keys) == ((200, None), "died with signal 7")  # SIGBUS
    finally:
        triton.stop()
    with open(f"/dev/shm/{keys['truncated']}", "wb") as file:
        file.write(bytes(4096))
    seawall = start_seawall("--allow-client-shm=true")
    try:
        assert _abuse(seawall, keys) == (
            (400, {"error": "Unable to open shared memory region: 'f'"}),
            (
                400,
                {
                    "error": "shared memory region 't' is smaller than the range it was registered with "
                    "(the object was truncated); register it again"
                },
            ),
        )
        assert http_request(seawall, "GET", "/v2/health/ready")[0] == 200
    finally:
        seawall.stop()
