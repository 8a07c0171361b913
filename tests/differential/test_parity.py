"""Differential tests: the same requests to Seawall and to the real Triton 2.51, on the same repository.

Equal status codes, metadata, configurations and output tensors are asserted; where Seawall deliberately
differs (docs/differences.md), the test asserts the difference.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.harness import ServerProcess, http_request


def _request(server: ServerProcess, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    status, _, reply = http_request(server, method, path, body)
    return status, reply


def _json(body: bytes) -> Any:
    return json.loads(body) if body else None


GET_PATHS = [
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/add_sub",
    "/v2/models/add_sub/versions/1",
    "/v2/models/identity",
    "/v2/models/string_identity",
    "/v2/models/add_sub/ready",
    "/v2/models/add_sub/versions/1/ready",
    "/v2/models/add_sub/versions/3/ready",
    "/v2/models/nope/ready",
    "/v2/models/add_sub/config",
    "/v2/models/identity/config",
    "/v2/models/string_identity/config",
    "/v2/models/add_sub/versions/1/config",
    "/v2/models/nope",
    "/v2/models/nope/config",
    "/v2/models/add_sub/versions/3",
    "/v2/models/add_sub/versions/3/config",
    "/v2/models/add_sub/versions/abc",
    "/v2/nothing",
    "/v2/health/live/",
]


@pytest.mark.parametrize("path", GET_PATHS)
def test_get_routes_match(triton: ServerProcess, seawall_server: ServerProcess, path: str) -> None:
    expected_status, expected_body = _request(triton, "GET", path)
    status, body = _request(seawall_server, "GET", path)
    assert status == expected_status
    assert _json(body) == _json(expected_body)


def test_server_metadata_lists_only_implemented_extensions(
    triton: ServerProcess, seawall_server: ServerProcess
) -> None:
    expected = _json(_request(triton, "GET", "/v2")[1])
    ours = _json(_request(seawall_server, "GET", "/v2")[1])
    assert (ours["name"], ours["version"]) == (expected["name"], expected["version"])
    assert set(ours["extensions"]) <= set(expected["extensions"])
    order = [e for e in expected["extensions"] if e in ours["extensions"]]
    assert ours["extensions"] == order


def _infer_body(*inputs: tuple[str, list[int], str, list[Any]], **extra: Any) -> bytes:
    tensors = [{"name": n, "shape": s, "datatype": d, "data": v} for n, s, d, v in inputs]
    return json.dumps({"inputs": tensors, **extra}).encode()


GOOD = ("INPUT0", [4], "FP32", [1, 2, 3, 4])
GOOD1 = ("INPUT1", [4], "FP32", [1, 1, 1, 1])
INFER_CASES = {
    "add_sub": ("add_sub", _infer_body(GOOD, GOOD1, id="7")),
    "requested output": ("add_sub", _infer_body(GOOD, GOOD1, outputs=[{"name": "OUTPUT1"}])),
    "identity batch": ("identity", _infer_body(("INPUT0", [2, 3], "FP32", [1.5, 2, 3, 4, 5, 6]))),
    "strings": ("string_identity", _infer_body(("INPUT0", [2], "BYTES", ["a", "héllo"]))),
    "missing input": ("add_sub", _infer_body(GOOD)),
    "unknown input": ("add_sub", _infer_body(GOOD, ("INPUTX", [4], "FP32", [1, 2, 3, 4]))),
    "wrong shape": ("add_sub", _infer_body(("INPUT0", [2, 2], "FP32", [1, 2, 3, 4]), GOOD1, id="x")),
    "wrong datatype": ("add_sub", _infer_body(("INPUT0", [4], "INT32", [1, 2, 3, 4]), GOOD1)),
    "no batch dim": ("identity", _infer_body(("INPUT0", [3], "FP32", [1, 2, 3]))),
    "batch too large": ("identity", _infer_body(("INPUT0", [9, 1], "FP32", [1] * 9))),
    "duplicate input": (
        "identity",
        _infer_body(("INPUT0", [1, 1], "FP32", [1]), ("INPUT0", [1, 1], "FP32", [1])),
    ),
    "unknown output": ("add_sub", _infer_body(GOOD, GOOD1, outputs=[{"name": "OUT"}])),
    "unknown model": ("nope", _infer_body(GOOD, GOOD1)),
    "unknown version": ("add_sub/versions/2", _infer_body(GOOD, GOOD1)),
}


@pytest.mark.parametrize("case", sorted(INFER_CASES))
def test_infer_matches(triton: ServerProcess, seawall_server: ServerProcess, case: str) -> None:
    model, body = INFER_CASES[case]
    path = f"/v2/models/{model}/infer"
    expected_status, expected_body = _request(triton, "POST", path, body)
    status, reply = _request(seawall_server, "POST", path, body)
    assert (status, _json(reply)) == (expected_status, _json(expected_body))


# Triton answers these client mistakes with 500 (its JSON layer's INTERNAL); Seawall with 400.
CLIENT_MISTAKES = {
    "malformed json": b'{"inputs": [',
    "data count disagrees with shape": _infer_body(("INPUT0", [4], "FP32", [1, 2, 3]), GOOD1),
    "id is a number": b'{"id": 5, "inputs": []}',
    "string in FP32 data": _infer_body(("INPUT0", [4], "FP32", ["a", 2, 3, 4]), GOOD1),
}


@pytest.mark.parametrize("case", sorted(CLIENT_MISTAKES))
def test_client_mistakes_are_400_where_triton_says_500(
    triton: ServerProcess, seawall_server: ServerProcess, case: str
) -> None:
    body = CLIENT_MISTAKES[case]
    assert _request(triton, "POST", "/v2/models/add_sub/infer", body)[0] == 500
    status, reply = _request(seawall_server, "POST", "/v2/models/add_sub/infer", body)
    assert status == 400
    assert set(_json(reply)) == {"error"}
    assert seawall_server.is_ready()


def test_http_binary_bytes_outputs_match(triton: ServerProcess, seawall_server: ServerProcess) -> None:
    # non-UTF-8 BYTES only travel in binary: Triton writes them raw into JSON (invalid UTF-8)
    binary, results = True, []
    for server in (triton, seawall_server):
        client = httpclient.InferenceServerClient(server.http)
        inputs = [httpclient.InferInput("INPUT0", [2], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([b"abc", b"\x00\xff"], dtype=object), binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "LENGTH")]
        result = client.infer("string_identity", inputs, outputs=outputs)
        results.append((result.as_numpy("OUTPUT0").tolist(), result.as_numpy("LENGTH").tolist()))
        client.close()
    assert results[0] == results[1]


def test_grpc_metadata_config_and_outputs_match(triton: ServerProcess, seawall_server: ServerProcess) -> None:
    seen = []
    for server in (triton, seawall_server):
        client = grpcclient.InferenceServerClient(server.grpc)
        inputs = [grpcclient.InferInput("INPUT0", [4], "FP32"), grpcclient.InferInput("INPUT1", [4], "FP32")]
        inputs[0].set_data_from_numpy(np.array([1, 2, 3, 4], dtype=np.float32))
        inputs[1].set_data_from_numpy(np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32))
        result = client.infer("add_sub", inputs, request_id="9")
        seen.append(
            (
                client.get_model_metadata("identity", as_json=True),
                client.get_model_config("add_sub", as_json=True),
                client.is_model_ready("nope"),
                result.get_response(as_json=True)["id"],
                result.as_numpy("OUTPUT0").tolist(),
                result.as_numpy("OUTPUT1").tolist(),
            )
        )
        client.close()
    assert seen[0] == seen[1]
