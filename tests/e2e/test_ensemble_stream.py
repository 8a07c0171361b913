"""Ensembles with a decoupled step stream (as Triton 2.51): each response of the decoupled step runs the later
steps and makes one response of the ensemble, over gRPC ModelStreamInfer and HTTP generate_stream; the final
flag and the errors of the steps come through, unary inference is refused as for any decoupled model, and an
ensemble whose outputs stem from different decoupled origins fails to load with Triton's reason."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.ensembles import STREAM_BAD, fp32_input, int32_input, make_stream_repository, stream
from tests.harness import ServerProcess, http_request, start_seawall

BODY = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = make_stream_repository(tmp_path_factory.mktemp("stream") / "models")
    process = start_seawall("--exit-on-error=false", repository=repository)
    yield process
    process.stop()


def _live(server: ServerProcess) -> None:
    assert http_request(server, "GET", "/v2/health/live")[0] == 200
    assert stream(server.grpc, "es_single", fp32_input([1, 2, 3, 4]))[-1][1] is True


def test_each_response_of_the_decoupled_step_is_a_response_of_the_ensemble(server: ServerProcess) -> None:
    assert stream(server.grpc, "es_single", fp32_input([1, 2, 3, 4])) == [
        ({"OUTPUT": [1.0, 2.0, 3.0, 4.0]}, False),
        ({"OUTPUT": [2.0, 4.0, 6.0, 8.0]}, True),
    ]
    # each response feeds the step after the decoupled one
    assert stream(server.grpc, "es_chain", fp32_input([1, 2, 3, 4])) == [
        ({"OUTPUT": [2.0, 3.0, 4.0, 5.0]}, False),
        ({"OUTPUT": [3.0, 5.0, 7.0, 9.0]}, True),
    ]


def test_the_final_flag_comes_as_the_step_sent_it(server: ServerProcess) -> None:
    with_last = stream(server.grpc, "es_modes", int32_input(3), {"mode": "inline"})
    assert with_last == [({"OUT": [0]}, False), ({"OUT": [1]}, False), ({"OUT": [2]}, True)]
    alone = stream(server.grpc, "es_modes", int32_input(2), {"mode": "thread"})
    assert alone == [({"OUT": [0]}, False), ({"OUT": [1]}, False), ({}, True)]
    assert stream(server.grpc, "es_modes", int32_input(0), {"mode": "inline"}) == [({}, True)]


def test_the_ensemble_is_decoupled_by_its_steps(server: ServerProcess) -> None:
    for name, decoupled in (("es_single", True), ("es_chain", True), ("es_declared", False)):
        status, _, reply = http_request(server, "GET", f"/v2/models/{name}/config")
        assert status == 200
        assert json.loads(reply)["model_transaction_policy"] == {"decoupled": decoupled}


@pytest.mark.parametrize(
    ("model", "inputs", "parameters", "error"),
    [
        ("es_chain", fp32_input([-1, 2, 3, 4]), None, "in ensemble 'es_chain', negative input"),
        ("es_modes", int32_input(1), {"mode": "error"}, "in ensemble 'es_modes', a bad request, says the model"),
        (
            "es_modes",
            int32_input(1),
            {"mode": "raise"},
            "in ensemble 'es_modes', Failed to process the request(s) for model 'decoupled_modes_0_0', message: "
            "ValueError: the model raised on purpose",
        ),
    ],
)
def test_a_steps_error_ends_the_stream(
    server: ServerProcess, model: str, inputs: list[grpcclient.InferInput], parameters: dict[str, str], error: str
) -> None:
    got = stream(server.grpc, model, inputs, parameters)
    assert got[-1] == ("error", error)
    _live(server)


def test_unary_inference_is_refused(server: ServerProcess) -> None:
    status, _, reply = http_request(server, "POST", "/v2/models/es_chain/infer", BODY)
    assert status == 501
    assert json.loads(reply) == {"error": "HTTP end point doesn't support models with decoupled transaction policy"}
    client = grpcclient.InferenceServerClient(server.grpc)
    with pytest.raises(InferenceServerException) as info:
        client.infer("es_single", fp32_input([1, 2, 3, 4]))
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"
    assert info.value.message() == "ModelInfer RPC doesn't support models with decoupled transaction policy"
    # an ensemble that says it is decoupled without a decoupled step answers unary requests
    status, _, reply = http_request(server, "POST", "/v2/models/es_declared/infer", BODY)
    assert status == 200 and json.loads(reply)["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]
    _live(server)


def test_generate_stream_streams_the_ensemble(server: ServerProcess) -> None:
    body = json.dumps({"INPUT": [1, 2, 3, 4]}).encode()
    status, _, reply = http_request(server, "POST", "/v2/models/es_chain/generate_stream", body)
    assert status == 200
    events = [json.loads(line[len(b"data: ") :]) for line in reply.splitlines() if line.startswith(b"data: ")]
    assert [e["OUTPUT"] for e in events] == [[2.0, 3.0, 4.0, 5.0], [3.0, 5.0, 7.0, 9.0]]


def test_outputs_from_different_decoupled_origins_fail_to_load(server: ServerProcess) -> None:
    status, _, reply = http_request(server, "POST", "/v2/repository/index", b"{}")
    index = {m["name"]: m for m in json.loads(reply)}
    assert index["es_two"]["state"] == "UNAVAILABLE"
    assert index["es_two"]["reason"] == STREAM_BAD["es_two"][1]
    _live(server)


def test_closing_the_stream_cancels_the_decoupled_step(server: ServerProcess) -> None:
    seen = "wait_cancel: sender.is_cancelled()=True request.is_cancelled()=True"
    done = server.log().count(seen)
    with grpcclient.InferenceServerClient(server.grpc) as client:
        client.start_stream(callback=lambda result, error: None)
        client.async_stream_infer("es_modes", int32_input(1), parameters={"mode": "wait_cancel"})
        time.sleep(0.5)  # the step's model is waiting (as tests/e2e/test_decoupled.py)
        client.stop_stream(cancel_requests=True)
    deadline = time.monotonic() + 30
    while server.log().count(seen) <= done:
        assert time.monotonic() < deadline, "the decoupled step never saw the cancellation"
        time.sleep(0.1)
    _live(server)
