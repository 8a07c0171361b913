"""Audit lines for administrative calls over HTTP and gRPC: who, what, result, and never the secret."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.harness import ServerProcess, http_request, start_seawall

SECRET = "s3cr3t-value-never-logged"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_seawall(
        f"--http-restricted-api=logging:admin-key={SECRET}", f"--grpc-restricted-protocol=logging:admin-key={SECRET}"
    )
    yield process
    process.stop()


def _post(server: ServerProcess, path: str, body: object, headers: dict[str, str]) -> int:
    return http_request(server, "POST", path, json.dumps(body).encode(), headers, timeout=10)[0]


def _audit_lines(server: ServerProcess, count: int) -> list[str]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in server.lines if "action=" in line and "caller=" in line]
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    return [line for line in server.lines if "action=" in line]


def test_http_and_grpc_admin_calls_are_audited_without_the_secret(server: ServerProcess) -> None:
    assert _post(server, "/v2/logging", {"log_verbose_level": 1}, {"admin-key": SECRET}) == 200
    assert _post(server, "/v2/logging", {"log_file": "/root/.bashrc"}, {"admin-key": SECRET}) == 501
    assert (
        _post(server, "/v2/logging", {"log_verbose_level": 0}, {"admin-key": "wrong"}) == 403
    )  # never reaches the core
    client = grpcclient.InferenceServerClient(server.grpc)
    client.update_log_settings({"log_verbose_level": 0}, headers={"triton-grpc-protocol-admin-key": SECRET})
    with pytest.raises(InferenceServerException):
        client.update_log_settings({"log_file": "x"}, headers={"triton-grpc-protocol-admin-key": SECRET})
    client.close()
    lines = _audit_lines(server, 4)
    assert len(lines) == 4, server.log()
    http_ok, http_refused, grpc_ok, grpc_refused = lines
    assert 'caller="peer=127.0.0.1:' in http_ok and 'target="log_verbose_level" result=OK' in http_ok
    assert 'target="log_file" result=UNSUPPORTED' in http_refused
    assert 'caller="peer=ipv4:127.0.0.1:' in grpc_ok and "result=OK" in grpc_ok
    assert "result=UNSUPPORTED" in grpc_refused
    assert SECRET not in server.log()
