"""Differential gRPC tests: the error table of test_grpc_errors is Triton 2.51's own answer, and both servers
return the same bytes for the same requests. Where Seawall deliberately differs, the difference is asserted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.e2e.test_grpc_errors import CASES
from tests.harness import EXAMPLES, TRITON, start_seawall, start_triton

pytestmark = pytest.mark.differential

#: Seawall's deliberate differences from Triton 2.51 (see the codec): name → what Triton does instead.
DIFFERENT = {
    "surplus-raw": "Triton ignores raw_input_contents entries that no input reads",
    "negative-dimension": "Triton's message compares with the config shape ('unexpected shape ...')",
    "huge-shape": "Triton reports a shape mismatch; Seawall checks the element limit first",
    "trace-count": "Triton's gRPC text has a space after 'got:' (its HTTP text does not; the core uses the HTTP one)",
    "shared-memory-disabled": "client shared memory is off by default (Triton 2.68's default; 2.51 has it on)",
}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    triton = start_triton(EXAMPLES)
    try:
        seawall = start_seawall()
    except BaseException:
        triton.stop()
        raise
    channels = {name: grpc.insecure_channel(s.grpc) for name, s in (("triton", triton), ("seawall", seawall))}
    yield {name: service_pb2_grpc.GRPCInferenceServiceStub(channel) for name, channel in channels.items()}
    for channel in channels.values():
        channel.close()
    seawall.stop()
    triton.stop()


def _answer(stub: Any, call: tuple[str, Any]) -> tuple[grpc.StatusCode, str]:
    rpc, request = call
    try:
        getattr(stub, rpc)(request)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize(("name", "call", "code", "message"), CASES, ids=[c[0] for c in CASES])
def test_error_matches_triton(
    servers: dict[str, Any], name: str, call: tuple[str, Any], code: grpc.StatusCode, message: str
) -> None:
    triton = _answer(servers["triton"], call)
    if name in DIFFERENT:
        assert triton != (code, message), DIFFERENT[name]
    else:
        assert triton == (code, message)
    assert _answer(servers["seawall"], call) == (code, message)


def _infer(stub: Any, model: str, *inputs: Any, raw: tuple[bytes, ...] = ()) -> Any:
    return stub.ModelInfer(pb.ModelInferRequest(model_name=model, id="d", inputs=inputs, raw_input_contents=raw))


def _tensor(name: str, datatype: str, shape: tuple[int, ...], **kw: Any) -> Any:
    return pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape, **kw)


def test_same_responses(servers: dict[str, Any]) -> None:
    a = np.array([1.5, -2, 3, 4], dtype=np.float32).tobytes()
    typed = pb.InferTensorContents(fp32_contents=[1, 2, 3, 4])
    strings = pb.InferTensorContents(bytes_contents=[b"ab", b"", b"\xff"])
    requests = [
        ("add_sub", (_tensor("INPUT0", "FP32", (4,)), _tensor("INPUT1", "FP32", (4,))), (a, a)),
        (
            "add_sub",
            (
                _tensor("INPUT0", "FP32", (4,), contents=typed),
                _tensor("INPUT1", "FP32", (4,), contents=typed),
            ),
            (),
        ),
        ("identity", (_tensor("INPUT0", "FP32", (1, 4)),), (a,)),
        ("string_identity", (_tensor("INPUT0", "BYTES", (3,), contents=strings),), ()),
    ]
    for model, inputs, raw in requests:
        answers = [_infer(servers[name], model, *inputs, raw=raw) for name in ("triton", "seawall")]
        assert answers[0] == answers[1], model


def test_same_metadata(servers: dict[str, Any]) -> None:
    for model in ("add_sub", "identity", "string_identity"):
        request = pb.ModelMetadataRequest(name=model)
        assert servers["triton"].ModelMetadata(request) == servers["seawall"].ModelMetadata(request)
        ready = pb.ModelReadyRequest(name=model)
        assert servers["triton"].ModelReady(ready) == servers["seawall"].ModelReady(ready)
    health = pb.ServerReadyRequest()
    assert servers["triton"].ServerReady(health) == servers["seawall"].ServerReady(health)
