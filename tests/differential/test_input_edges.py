"""Input edges against the reference Triton 2.51 (issue 14 item 3): inference on a model that was unloaded, gRPC
shapes whose element count disagrees with the data however large the shape, and empty bodies (a deliberate
difference: docs/differences.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.harness import EXAMPLES, TRITON, ServerProcess, http_call, start_seawall, start_triton

FP32 = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}).encode()
EXPLICIT = ("--model-control-mode=explicit", "--load-model=*")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Triton and Seawall in explicit mode on one copy of the examples (clients may unload)."""
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    root = tmp_path_factory.mktemp("edges")
    for name in ("identity", "string_identity"):
        (root / name).mkdir()
        for item in (EXAMPLES / name).rglob("*"):
            target = root / name / item.relative_to(EXAMPLES / name)
            if item.is_dir():
                target.mkdir(exist_ok=True)
            elif item.suffix in (".py", ".pbtxt"):
                target.write_bytes(item.read_bytes())
    triton = start_triton(root, *EXPLICIT)
    try:
        seawall = start_seawall(*EXPLICIT, "--allow-unrestricted-model-repository=true", repository=root)
    except BaseException:
        triton.stop()
        raise
    try:
        yield triton, seawall
    finally:
        seawall.stop()
        triton.stop()


def _wait_ready(server: ServerProcess, model: str, ready: bool, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (http_call(server.http, "GET", f"/v2/models/{model}/ready")[0] == 200) == ready:
            return
        time.sleep(0.1)
    raise AssertionError(f"{model} not {'ready' if ready else 'unloaded'} on {server.addresses} in {timeout}s")


def _grpc(server: ServerProcess, method: str, request: Any) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(server.grpc) as channel:
        call = getattr(pb_grpc.GRPCInferenceServiceStub(channel), method)
        try:
            call(request, timeout=60)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def _answers(server: ServerProcess) -> list[Any]:
    http = [
        http_call(server.http, method, path, body)[::2]
        for method, path, body in (
            ("POST", "/v2/models/identity/infer", FP32),
            ("POST", "/v2/models/identity/versions/1/infer", FP32),
            ("POST", "/v2/models/identity/versions/7/infer", FP32),
            ("POST", "/v2/models/identity/generate", b'{"INPUT0": [1.0]}'),
            ("POST", "/v2/models/identity/generate_stream", b'{"INPUT0": [1.0]}'),
            ("GET", "/v2/models/identity", None),
            ("GET", "/v2/models/identity/versions/1", None),
            ("GET", "/v2/models/identity/config", None),
            ("GET", "/v2/models/identity/ready", None),
        )
    ]
    request = pb.ModelInferRequest(model_name="identity")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 1])
    request.raw_input_contents.append(bytes(4))
    versioned = pb.ModelInferRequest()
    versioned.CopyFrom(request)
    versioned.model_version = "1"
    rpcs = [
        _grpc(server, "ModelInfer", request),
        _grpc(server, "ModelInfer", versioned),
        _grpc(server, "ModelMetadata", pb.ModelMetadataRequest(name="identity")),
        _grpc(server, "ModelMetadata", pb.ModelMetadataRequest(name="identity", version="1")),
        _grpc(server, "ModelConfig", pb.ModelConfigRequest(name="identity")),
    ]
    return http + rpcs


def test_an_unloaded_model_answers_as_triton(servers: tuple[ServerProcess, ServerProcess]) -> None:
    triton, seawall = servers
    for server in servers:
        assert http_call(server.http, "POST", "/v2/repository/models/identity/unload", b"{}")[0] == 200
        _wait_ready(server, "identity", ready=False)
    try:
        expected, answered = _answers(triton), _answers(seawall)
        assert answered == expected
        # the three answers, spelled out (Triton 2.51)
        gone = b'{"error":"Request for unknown model: \'identity\' has no available versions"}'
        assert answered[0] == (404, gone)
        assert answered[1] == (
            503,
            b'{"error":"Request for unknown model: \'identity\' version 1 is not at ready state"}',
        )
        assert answered[2] == (404, b'{"error":"Request for unknown model: \'identity\' version 7 is not found"}')
        assert answered[9] == (
            grpc.StatusCode.NOT_FOUND,
            "Request for unknown model: 'identity' has no available versions",
        )
        assert answered[10][0] == grpc.StatusCode.UNAVAILABLE
    finally:
        for server in servers:
            http_call(server.http, "POST", "/v2/repository/models/identity/load", b"{}")
            _wait_ready(server, "identity", ready=True)
    assert http_call(seawall.http, "POST", "/v2/models/identity/infer", FP32)[0] == 200


#: shapes whose element count disagrees with 8 bytes of FP32 data; the larger ones are over any limit
SHAPES = [[1, 3], [1, 2**31 + 1], [1, 2**40], [2**31, 2**31], [2**62, 2**62]]


@pytest.mark.parametrize("typed", [False, True], ids=["raw", "contents"])
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_a_grpc_shape_that_disagrees_with_the_data_is_invalid_argument(
    servers: tuple[ServerProcess, ServerProcess], shape: list[int], typed: bool
) -> None:
    request = pb.ModelInferRequest(model_name="identity")
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=shape)
    if typed:
        tensor.contents.fp32_contents.extend([1.0, 2.0])
    else:
        request.raw_input_contents.append(bytes(8))
    triton, seawall = servers
    assert _grpc(triton, "ModelInfer", request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    code, message = _grpc(seawall, "ModelInfer", request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, message
    if shape == [1, 3]:  # small enough to compare: Triton's words
        assert (code, message) == _grpc(triton, "ModelInfer", request)
    else:  # Triton allocates for these first (CVE-2025-23331); Seawall names the limit (docs/differences.md)
        assert message.endswith("elements (--max-tensor-elements)"), message
    assert seawall.is_ready()


def test_grpc_data_over_a_limit_is_resource_exhausted() -> None:
    """RESOURCE_EXHAUSTED only when the data itself is over a limit (the message, or one tensor's bytes), whatever
    the shape; a large shape over little data stays INVALID_ARGUMENT."""
    server = start_seawall("--grpc-max-message-size=4096", "--max-tensor-bytes=1024")
    try:
        cases = [
            ([1, 2**40], 8192, grpc.StatusCode.RESOURCE_EXHAUSTED),
            ([1, 500], 2000, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ]
        cases += [
            ([1, 2**40], 8, grpc.StatusCode.INVALID_ARGUMENT),
            ([1, 300], 1200, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ]
        cases += [([1, 256], 8, grpc.StatusCode.INVALID_ARGUMENT), ([1, 2], 8, grpc.StatusCode.OK)]
        for shape, size, expected in cases:
            request = pb.ModelInferRequest(model_name="identity")
            request.inputs.add(name="INPUT0", datatype="FP32", shape=shape)
            request.raw_input_contents.append(bytes(size))
            code, message = _grpc(server, "ModelInfer", request)
            assert code == expected, (shape, size, code, message)
            if (code, size) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 2000):
                assert message == (
                    "[request id: <id_unknown>] input 'INPUT0' for model 'identity' carries 2000 bytes of data, more "
                    "than 1024 (--max-tensor-bytes)"
                )
        assert server.is_ready()
    finally:
        server.stop()


def test_an_empty_infer_body_is_refused_where_triton_answers_200(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """Triton reads an empty body as a raw binary request of 0 bytes and answers 200 with an empty output; Seawall
    refuses it (docs/differences.md): an empty POST is a client bug, not a zero-element tensor."""
    triton, seawall = servers
    assert http_call(triton.http, "POST", "/v2/models/identity/infer", b"")[0] == 200
    status, _, body = http_call(seawall.http, "POST", "/v2/models/identity/infer", b"")
    assert status == 400 and json.loads(body)["error"].startswith("the request body is empty")
    assert seawall.is_ready()
