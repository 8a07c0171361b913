"""Differential tests of decoupled python models against the real Triton 2.51: the exact messages of
ModelStreamInfer (responses, `triton_final_response`, the empty final response, error messages), the unary
errors over HTTP and gRPC, and the statistics counts, on the same repository (square_int32, decoupled_modes).

The one deliberate difference: the error of an execute() that raised carries no "At:" traceback with the
model's path in Seawall (docs/differences.md).
"""

from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.harness import TEST_MODELS, TRITON, ServerProcess, settled, start_seawall, start_triton

pytestmark = pytest.mark.differential


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    repo = tmp_path_factory.mktemp("repo")
    for model in ("square_int32", "decoupled_modes"):
        shutil.copytree(TEST_MODELS / model, repo / model, ignore=shutil.ignore_patterns("__pycache__"))
    triton = start_triton(repo)
    try:
        seawall = start_seawall(repository=repo)
    except BaseException:
        triton.stop()
        raise
    yield {"triton": triton, "seawall": seawall}
    for server in (triton, seawall):
        server.stop()


def _request(model: str, value: int, request_id: str, **parameters: Any) -> Any:
    request = pb.ModelInferRequest(
        model_name=model,
        id=request_id,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="IN", datatype="INT32", shape=[1])],
        raw_input_contents=[np.array([value], dtype=np.int32).tobytes()],
    )
    for key, item in parameters.items():
        if isinstance(item, bool):
            request.parameters[key].bool_param = item
        else:
            request.parameters[key].string_param = item
    return request


def _stream(server: ServerProcess, requests: list[Any]) -> list[dict[str, Any]]:
    with grpc.insecure_channel(server.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return [json_format.MessageToDict(a) for a in stub.ModelStreamInfer(iter(requests), timeout=60)]


EMPTY_FINAL = {"triton_enable_empty_final_response": True}
CASES = {
    "three responses": [_request("square_int32", 3, "a")],
    "empty final response": [_request("square_int32", 2, "b", **EMPTY_FINAL)],
    "only the empty final response": [_request("square_int32", 0, "c", **EMPTY_FINAL)],
    "no response at all": [_request("square_int32", 0, "d")],
    "an error response": [_request("square_int32", -1, "neg")],
    "final flag with the last response": [_request("decoupled_modes", 2, "inline", mode="inline", **EMPTY_FINAL)],
    "error response with the final flag": [_request("decoupled_modes", 1, "err", mode="error")],
    "send after final": [_request("decoupled_modes", 1, "af", mode="after_final")],
    "final twice": [_request("decoupled_modes", 1, "ft", mode="final_twice", **EMPTY_FINAL)],
    "execute returns a list": [_request("decoupled_modes", 1, "rl", mode="return_list", **EMPTY_FINAL)],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stream_messages(servers: dict[str, ServerProcess], case: str) -> None:
    triton, seawall = (_stream(servers[name], CASES[case]) for name in ("triton", "seawall"))
    assert seawall == triton


def test_requests_interleaved_on_one_stream(servers: dict[str, ServerProcess]) -> None:
    requests = [_request("square_int32", n, f"r{n}", **EMPTY_FINAL) for n in (4, 1, 3)]
    answers = {name: _stream(servers[name], requests) for name in ("triton", "seawall")}
    for name, messages in answers.items():  # the order across requests depends on timing: compare per request
        answers[name] = sorted(messages, key=lambda m: m["inferResponse"]["id"])  # type: ignore[assignment]
        assert len(messages) == 4 + 1 + 3 + 3, name
    assert answers["seawall"] == answers["triton"]


def test_execute_raising(servers: dict[str, ServerProcess]) -> None:
    request = [_request("decoupled_modes", 1, "raise", mode="raise")]
    (triton,), (seawall,) = (_stream(servers[name], request) for name in ("triton", "seawall"))
    assert seawall["inferResponse"] == triton["inferResponse"]
    expected = "Failed to process the request(s) for model 'decoupled_modes_0_0', message: ValueError: the model raised"
    assert seawall["errorMessage"] == expected + " on purpose"
    assert triton["errorMessage"].startswith(seawall["errorMessage"] + "\n\nAt:\n")  # Triton shows the model's path


def test_unary_infer_is_refused(servers: dict[str, ServerProcess]) -> None:
    answers = {}
    for name, server in servers.items():
        with grpc.insecure_channel(server.grpc) as channel:
            with pytest.raises(grpc.RpcError) as error:
                service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_request("square_int32", 1, "u"))
        host, port = server.http.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        body = {"inputs": [{"name": "IN", "datatype": "INT32", "shape": [1], "data": [1]}]}
        connection.request("POST", "/v2/models/square_int32/infer", body=json.dumps(body))
        reply = connection.getresponse()
        answers[name] = (error.value.code(), error.value.details(), reply.status, json.loads(reply.read()))
        connection.close()
    assert answers["seawall"] == answers["triton"]


def _execution_counts(server: ServerProcess, model: str) -> tuple[int, int, int]:
    host, port = server.http.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", f"/v2/models/{model}/stats")
    (stats,) = json.loads(connection.getresponse().read())["model_stats"]
    connection.close()
    inference = stats["inference_stats"]
    return stats["execution_count"], inference["success"]["count"], inference["fail"]["count"]


def test_statistics_count_executions(servers: dict[str, ServerProcess]) -> None:
    for server in servers.values():
        _stream(server, [_request("square_int32", 2, "s1"), _request("square_int32", 1, "s2")])

    def read() -> dict[str, tuple[int, int, int]]:
        return {name: _execution_counts(server, "square_int32") for name, server in servers.items()}

    counts = settled(read, lambda c: c["seawall"] == c["triton"])
    assert counts["seawall"] == counts["triton"]
