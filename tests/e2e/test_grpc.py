"""End-to-end tests of the gRPC frontend: a real `seawall` process driven by tritonclient (sync and aio)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.harness import ServerProcess, start_seawall


@pytest.fixture(scope="module")
def seawall() -> Iterator[ServerProcess]:
    server = start_seawall()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(seawall: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(seawall.grpc) as sync_client:
        yield sync_client


@pytest.fixture(scope="module")
def stub(seawall: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(seawall.grpc) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _add_sub_inputs(a: np.ndarray, b: np.ndarray) -> list[grpcclient.InferInput]:
    inputs = [grpcclient.InferInput("INPUT0", [4], "FP32"), grpcclient.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


def test_health(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("add_sub")
    assert client.is_model_ready("add_sub", "1")
    assert not client.is_model_ready("no_such_model")  # OK with ready=false, not an error
    assert not client.is_model_ready("add_sub", "7")


def test_standard_health_check(seawall: ServerProcess) -> None:
    with grpc.insecure_channel(seawall.grpc) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        # HealthCheckResponse{status: SERVING}; the service name in the request is ignored
        assert check(b"") == b"\x08\x01"
        assert check(b"\x0a\x03foo") == b"\x08\x01"


def test_server_metadata(client: grpcclient.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata.name == "triton"
    assert metadata.version == "2.51.0"
    assert "model_configuration" in metadata.extensions


def test_model_metadata(client: grpcclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("add_sub")
    assert (metadata.name, list(metadata.versions), metadata.platform) == ("add_sub", ["1"], "python")
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("INPUT0", "FP32", [4]),
        ("INPUT1", "FP32", [4]),
    ]
    identity = client.get_model_metadata("identity", "1")
    assert [(t.name, t.datatype, list(t.shape)) for t in identity.outputs] == [("OUTPUT0", "FP32", [-1, -1])]
    strings = client.get_model_metadata("string_identity", as_json=True)
    assert strings["inputs"] == [{"name": "INPUT0", "datatype": "BYTES", "shape": ["-1"]}]


def test_model_config(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("identity").config
    assert (config.name, config.backend, config.max_batch_size) == ("identity", "python", 8)
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("INPUT0", 11, [-1])]  # TYPE_FP32


def test_infer_add_sub(client: grpcclient.InferenceServerClient) -> None:
    a = np.array([1, 2, 3, 4], dtype=np.float32)
    b = np.array([0.5, 0.5, 10, -4], dtype=np.float32)
    result = client.infer("add_sub", _add_sub_inputs(a, b), request_id="req-1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("add_sub", "1", "req-1")


def test_infer_requested_outputs_and_version(client: grpcclient.InferenceServerClient) -> None:
    a = np.ones(4, dtype=np.float32)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT1")]
    result = client.infer("add_sub", _add_sub_inputs(a, a), model_version="1", outputs=outputs)
    assert [o.name for o in result.get_response().outputs] == ["OUTPUT1"]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros(4, dtype=np.float32))
    assert result.as_numpy("OUTPUT0") is None


def test_infer_batching_model(client: grpcclient.InferenceServerClient) -> None:
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    inp = grpcclient.InferInput("INPUT0", [2, 3], "FP32")
    inp.set_data_from_numpy(data)
    result = client.infer("identity", [inp])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


def test_infer_bytes(client: grpcclient.InferenceServerClient) -> None:
    data = np.array([b"ab", b"", b"\x00\xffz", "é".encode()], dtype=object)
    inp = grpcclient.InferInput("INPUT0", [4], "BYTES")
    inp.set_data_from_numpy(data)
    result = client.infer("string_identity", [inp])
    assert result.as_numpy("OUTPUT0").tolist() == data.tolist()
    np.testing.assert_array_equal(result.as_numpy("LENGTH"), np.array([2, 0, 3, 2], dtype=np.int32))


def test_typed_contents_come_back_raw(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    contents = pb.InferTensorContents(fp32_contents=[1, 2, 3, 4])
    request = pb.ModelInferRequest(
        model_name="add_sub",
        id="typed",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name=n, datatype="FP32", shape=[4], contents=contents)
            for n in ("INPUT0", "INPUT1")
        ],
    )
    response = stub.ModelInfer(request)
    assert (response.model_name, response.model_version, response.id) == ("add_sub", "1", "typed")
    assert not any(o.HasField("contents") for o in response.outputs)
    assert response.raw_output_contents[0] == struct.pack("<4f", 2, 4, 6, 8)
    assert response.raw_output_contents[1] == bytes(16)


def test_typed_bytes_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    contents = pb.InferTensorContents(bytes_contents=[b"ab", b"", b"xyz"])
    tensor = pb.ModelInferRequest.InferInputTensor(name="INPUT0", datatype="BYTES", shape=[3], contents=contents)
    response = stub.ModelInfer(pb.ModelInferRequest(model_name="string_identity", inputs=[tensor]))
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("OUTPUT0", "BYTES", [3]),
        ("LENGTH", "INT32", [3]),
    ]
    assert response.raw_output_contents[0] == b"\x02\x00\x00\x00ab\x00\x00\x00\x00\x03\x00\x00\x00xyz"
    assert response.raw_output_contents[1] == struct.pack("<3i", 2, 0, 3)


def test_request_parameters_are_accepted(client: grpcclient.InferenceServerClient) -> None:
    a = np.ones(4, dtype=np.float32)
    result = client.infer("add_sub", _add_sub_inputs(a, a), parameters={"custom": "x", "n": 3, "flag": True})
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)


def test_statistics(client: grpcclient.InferenceServerClient) -> None:
    a = np.ones(4, dtype=np.float32)
    client.infer("add_sub", _add_sub_inputs(a, a))
    stats = client.get_inference_statistics("add_sub").model_stats
    assert [(s.name, s.version) for s in stats] == [("add_sub", "1")]
    assert stats[0].inference_count >= 1 and stats[0].inference_stats.success.count >= 1
    everything = client.get_inference_statistics().model_stats
    assert {s.name for s in everything} == {"add_sub", "identity", "string_identity"}


def test_repository_index(client: grpcclient.InferenceServerClient) -> None:
    index = client.get_model_repository_index().models
    assert [(m.name, m.version, m.state) for m in index] == [
        ("add_sub", "1", "READY"),
        ("identity", "1", "READY"),
        ("string_identity", "1", "READY"),
    ]


def test_client_shared_memory_is_off_by_default(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.get_system_shared_memory_status()
    assert info.value.status() == "StatusCode.UNIMPLEMENTED"
    assert "--allow-client-shm" in info.value.message()
    assert client.is_server_ready()


async def test_aio_client(seawall: ServerProcess) -> None:
    async with aioclient.InferenceServerClient(seawall.grpc) as aio:
        assert await aio.is_server_live()
        assert await aio.is_server_ready()
        assert await aio.is_model_ready("add_sub")
        assert (await aio.get_server_metadata()).name == "triton"
        assert (await aio.get_model_config("add_sub")).config.name == "add_sub"
        a = np.arange(4, dtype=np.float32)
        inputs = [aioclient.InferInput("INPUT0", [4], "FP32"), aioclient.InferInput("INPUT1", [4], "FP32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(a * 2)
        result = await aio.infer("add_sub", inputs, request_id="aio")
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 3)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), -a)


def test_large_tensors_round_trip(client: grpcclient.InferenceServerClient) -> None:
    # above the size where ModelInfer splits tensor bytes out of the message instead of parsing them into it
    data = np.arange(2 * 40_000, dtype=np.float32).reshape(2, 40_000)
    inp = grpcclient.InferInput("INPUT0", [2, 40_000], "FP32")
    inp.set_data_from_numpy(data)
    np.testing.assert_array_equal(client.infer("identity", [inp]).as_numpy("OUTPUT0"), data)
    strings = np.array([b"x" * 50_000, b"", "é".encode()], dtype=object)
    inp = grpcclient.InferInput("INPUT0", [3], "BYTES")
    inp.set_data_from_numpy(strings)
    assert client.infer("string_identity", [inp]).as_numpy("OUTPUT0").tolist() == strings.tolist()


@pytest.mark.parametrize("body", [b"\xff\xff", b"\x3a\xff\xff\xff\x07" + b"\x00" * 40_000])
def test_unparseable_request_is_invalid_argument(seawall: ServerProcess, body: bytes) -> None:
    with grpc.insecure_channel(seawall.grpc) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(body)
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unable to parse request",
        )
        assert service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest()).ready
