"""Invalid model names (issue 9: gRPC unload of `../x` answered OK): every HTTP route and gRPC RPC that takes a
model name answers the same 400 / INVALID_ARGUMENT `invalid model name` for every invalid name, before
anything else about the request is looked at.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.harness import ServerProcess, http_request, start_seawall

MESSAGE = "invalid model name: a model name is 1-128 characters of A-Z a-z 0-9 _ . - (not '.' or '..')"
NAMES = [".", "..", "../x", "..%2fx", "a/b", "/etc", "a\\b", "a\x00b", "x" * 129, "a b", "é", "-x"]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_seawall(
        "--model-control-mode=explicit", "--allow-unrestricted-model-repository=true", "--load-model=add_sub"
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[Any]:
    channel = grpc.insecure_channel(server.grpc)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _healthy(server: ServerProcess) -> None:
    assert http_request(server, "GET", "/v2/health/ready")[0] == 200
    assert http_request(server, "GET", "/v2/models/add_sub/ready")[0] == 200


HTTP_ROUTES = [
    ("POST", "/v2/repository/models/{}/load", b"{}"),
    ("POST", "/v2/repository/models/{}/unload", b"{}"),
    ("GET", "/v2/models/{}", None),
    ("GET", "/v2/models/{}/versions/1", None),
    ("GET", "/v2/models/{}/config", None),
    ("GET", "/v2/models/{}/ready", None),
    ("GET", "/v2/models/{}/stats", None),
    ("POST", "/v2/models/{}/infer", b"{}"),
    ("POST", "/v2/models/{}/versions/1/infer", b"not json"),
    ("GET", "/v2/models/{}/trace/setting", None),
]


@pytest.mark.parametrize("name", NAMES, ids=[repr(n[:10]) for n in NAMES])
@pytest.mark.parametrize(("method", "path", "body"), HTTP_ROUTES, ids=[f"{m} {p}" for m, p, _ in HTTP_ROUTES])
def test_http_routes_refuse_invalid_names(
    server: ServerProcess, name: str, method: str, path: str, body: bytes | None
) -> None:
    status, _, reply = http_request(server, method, path.format(urllib.parse.quote(name, safe="")), body)
    assert (status, reply) == (400, b'{"error":"' + MESSAGE.encode() + b'"}')
    _healthy(server)


def _rpcs(name: str) -> list[tuple[str, Any]]:
    rpcs: list[tuple[str, Any]] = [
        ("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name=name)),
        ("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name=name)),
        ("ModelMetadata", pb.ModelMetadataRequest(name=name)),
        ("ModelConfig", pb.ModelConfigRequest(name=name)),
        ("ModelReady", pb.ModelReadyRequest(name=name)),
        ("ModelInfer", pb.ModelInferRequest(model_name=name)),
    ]
    if name:  # an empty name means "every model" / "the global settings" for these two
        rpcs.append(("ModelStatistics", pb.ModelStatisticsRequest(name=name)))
        rpcs.append(("TraceSetting", pb.TraceSettingRequest(model_name=name)))
    return rpcs


@pytest.mark.parametrize("name", ["", *NAMES], ids=[repr(n[:10]) for n in ["", *NAMES]])
def test_grpc_rpcs_refuse_invalid_names(server: ServerProcess, stub: Any, name: str) -> None:
    for rpc, request in _rpcs(name):
        with pytest.raises(grpc.RpcError) as info:
            getattr(stub, rpc)(request, timeout=30)
        assert (rpc, info.value.code(), info.value.details()) == (rpc, grpc.StatusCode.INVALID_ARGUMENT, MESSAGE)
    _healthy(server)


def test_grpc_unload_of_a_traversal_name_is_refused_not_ok(server: ServerProcess, stub: Any) -> None:
    """The reported instance: `../x` answered OK."""
    with pytest.raises(grpc.RpcError) as info:
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="../x"), timeout=30)
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, MESSAGE)
    # a valid unknown name is still accepted, as Triton does
    stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="never_loaded"), timeout=30)
    _healthy(server)
