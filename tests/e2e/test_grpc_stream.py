"""End-to-end tests of ModelStreamInfer: responses in request order, per-request errors that keep the stream
open, the sync and aio clients, and streams cancelled mid-flight that must not hurt the server.
"""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.harness import ServerProcess, start_seawall

FOUR = np.arange(4, dtype=np.float32)


@pytest.fixture(scope="module")
def seawall() -> Iterator[ServerProcess]:
    server = start_seawall()
    yield server
    server.stop()


def _inputs(module: Any, a: np.ndarray) -> list[Any]:
    inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
    for tensor in inputs:
        tensor.set_data_from_numpy(a)
    return inputs


def _request(model: str = "add_sub", request_id: str = "") -> Any:
    tensor = pb.ModelInferRequest.InferInputTensor
    return pb.ModelInferRequest(
        model_name=model,
        id=request_id,
        inputs=[tensor(name=n, datatype="FP32", shape=[4]) for n in ("INPUT0", "INPUT1")],
        raw_input_contents=[FOUR.tobytes(), FOUR.tobytes()],
    )


def test_a_bad_request_answers_with_an_error_and_the_stream_goes_on(seawall: ServerProcess) -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    with grpcclient.InferenceServerClient(seawall.grpc) as client:
        client.start_stream(callback=lambda result, error: results.put((result, error)))
        for index, model in enumerate(("add_sub", "add_sub", "nope", "add_sub", "add_sub")):
            a = FOUR * index
            client.async_stream_infer(model, _inputs(grpcclient, a), request_id=str(index))
        answers = [results.get(timeout=30) for _ in range(5)]
        client.stop_stream()
        assert client.is_server_ready()
    for index, (result, error) in enumerate(answers):
        if index == 2:
            assert result is None and error.message() == "Request for unknown model: 'nope' is not found"
            continue
        assert error is None
        assert result.get_response().id == str(index)  # request order
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), FOUR * index * 2)


def test_raw_stream_responses(seawall: ServerProcess) -> None:
    bad = _request(request_id="bad")
    del bad.raw_input_contents[1:]
    with grpc.insecure_channel(seawall.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = list(stub.ModelStreamInfer(iter([_request(request_id="a"), bad, _request("nope", "n")])))
    assert [a.error_message for a in answers] == [
        "",
        "unable to find data for input tensor 'INPUT1' for model 'add_sub' in request.",
        "Request for unknown model: 'nope' is not found",
    ]
    assert [a.infer_response.id for a in answers] == ["a", "bad", "n"]
    good = answers[0].infer_response
    assert good.parameters["triton_final_response"].bool_param is True  # Triton marks every stream response
    assert good.raw_output_contents[0] == (FOUR * 2).tobytes()
    assert answers[1].infer_response == pb.ModelInferResponse(id="bad")


async def test_aio_stream(seawall: ServerProcess) -> None:
    async with aioclient.InferenceServerClient(seawall.grpc) as client:

        async def requests() -> AsyncIterator[dict[str, Any]]:
            for index in range(20):
                yield {"model_name": "add_sub", "inputs": _inputs(aioclient, FOUR + index), "request_id": str(index)}

        ids = []
        async for result, error in client.stream_infer(requests()):
            assert error is None
            ids.append(result.get_response().id)
        assert ids == [str(i) for i in range(20)]


def test_cancelled_streams_do_not_hurt_the_server(seawall: ServerProcess) -> None:
    with grpc.insecure_channel(seawall.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for round_ in range(50):
            call = stub.ModelStreamInfer(iter([_request(request_id=str(round_))] * (1 + round_ % 4)))
            if round_ % 2:
                next(call)  # cancel after the first answer, with others in flight
            call.cancel()
        assert stub.ServerReady(pb.ServerReadyRequest()).ready
        answers = list(stub.ModelStreamInfer(iter([_request(request_id="after")])))
        assert [a.infer_response.id for a in answers] == ["after"]
    assert "Traceback" not in seawall.log()


def test_large_tensors_and_unparseable_messages_on_a_stream(seawall: ServerProcess) -> None:
    data = np.arange(40_000, dtype=np.float32)  # above the size where tensor bytes are split out of the message
    large = pb.ModelInferRequest(model_name="identity", id="large", raw_input_contents=[data.tobytes()])
    large.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 40_000])
    with grpc.insecure_channel(seawall.grpc) as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        replies = [
            pb.ModelStreamInferResponse.FromString(r) for r in stream(iter([large.SerializeToString(), b"\xff"]))
        ]
    assert [r.error_message for r in replies] == ["", "Unable to parse request"]
    assert replies[0].infer_response.raw_output_contents[0] == data.tobytes()
    assert replies[0].infer_response.parameters["triton_final_response"].bool_param is True
    assert replies[1].infer_response == pb.ModelInferResponse()


def test_messages_larger_than_the_stream_window_arrive(seawall: ServerProcess) -> None:
    # the lean stack's receive window is 4 MiB per stream: a message of 6 MiB used to stall (its window reopened
    # only when a whole message was taken) until the deadline; large and small messages alternate on one stream,
    # and a second stream after them shows the window's accounting did not drift
    def request(elements: int, request_id: str) -> bytes:
        message = pb.ModelInferRequest(model_name="identity", id=request_id)
        message.inputs.add(name="INPUT0", datatype="FP32", shape=[1, elements])
        message.raw_input_contents.append(np.full(elements, elements % 7, dtype=np.float32).tobytes())
        return message.SerializeToString()

    sizes = [(6 << 20) // 4, 4, (9 << 20) // 4, (5 << 20) // 4, 16]
    options = [("grpc.max_send_message_length", 1 << 26), ("grpc.max_receive_message_length", 1 << 26)]
    with grpc.insecure_channel(seawall.grpc, options=options) as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        for _ in range(2):
            messages = [request(elements, str(index)) for index, elements in enumerate(sizes)]
            replies = [pb.ModelStreamInferResponse.FromString(r) for r in stream(iter(messages), timeout=60)]
            assert [r.error_message for r in replies] == [""] * len(sizes)
            assert [r.infer_response.id for r in replies] == [str(index) for index in range(len(sizes))]
            for reply, elements in zip(replies, sizes, strict=True):
                output = np.frombuffer(reply.infer_response.raw_output_contents[0], np.float32)
                assert output.shape == (elements,) and (output == elements % 7).all()
