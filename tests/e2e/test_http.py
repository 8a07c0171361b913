"""End-to-end HTTP happy paths: a real `seawall` process driven by tritonclient.http (sync and aio)."""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient

from tests.harness import ServerProcess, start_seawall
from tests.harness import http_request as request


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_seawall()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    connection = httpclient.InferenceServerClient(server.http)
    yield connection
    connection.close()


def _add_sub_inputs(binary: bool) -> list[httpclient.InferInput]:
    inputs = []
    for name, values in (
        ("INPUT0", np.arange(4, dtype=np.float32)),
        ("INPUT1", np.ones(4, dtype=np.float32)),
    ):
        tensor = httpclient.InferInput(name, [4], "FP32")
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_health_and_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("add_sub") and client.is_model_ready("add_sub", "1")
    assert not client.is_model_ready("no_such_model")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "triton" and "binary_tensor_data" in metadata["extensions"]
    model = client.get_model_metadata("identity")
    assert model["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, -1]}]
    assert client.get_model_metadata("add_sub", "1")["versions"] == ["1"]
    config = client.get_model_config("add_sub")
    assert config["name"] == "add_sub" and config["input"][0]["dims"] == [4]


def test_health_bodies_are_empty(server: ServerProcess) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/add_sub/ready", "/v2/health/live?x=1"):
        status, _, body = request(server, "GET", path)
        assert (status, body) == (200, b""), path


@pytest.mark.parametrize("binary", [False, True])
def test_add_sub_json_and_binary(client: httpclient.InferenceServerClient, binary: bool) -> None:
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary),
        httpclient.InferRequestedOutput("OUTPUT1"),
    ]
    result = client.infer("add_sub", _add_sub_inputs(binary), outputs=outputs, request_id="req-1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.arange(4) + 1)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.arange(4) - 1)
    response = result.get_response()
    assert response["id"] == "req-1" and response["model_version"] == "1"


def test_unrequested_outputs_are_dropped(client: httpclient.InferenceServerClient) -> None:
    outputs = [httpclient.InferRequestedOutput("OUTPUT1")]
    result = client.infer("add_sub", _add_sub_inputs(False), outputs=outputs, model_version="1")
    assert [o["name"] for o in result.get_response()["outputs"]] == ["OUTPUT1"]


def test_bytes_model(client: httpclient.InferenceServerClient) -> None:
    values = np.array([b"ab", "h\u00e9llo".encode(), b""], dtype=object)
    for binary in (False, True):
        tensor = httpclient.InferInput("INPUT0", [3], "BYTES")
        tensor.set_data_from_numpy(values, binary_data=binary)
        result = client.infer("string_identity", [tensor])
        assert result.as_numpy("OUTPUT0").tolist() == values.tolist()
        assert result.as_numpy("LENGTH").tolist() == [2, 6, 0]


def test_batched_identity_and_compression(client: httpclient.InferenceServerClient) -> None:
    values = np.random.default_rng(1).random((3, 5), dtype=np.float32)
    tensor = httpclient.InferInput("INPUT0", [3, 5], "FP32")
    tensor.set_data_from_numpy(values)
    for algorithm in (None, "gzip", "deflate"):
        result = client.infer("identity", [tensor], request_compression_algorithm=algorithm)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)


def test_fp32_json_output_is_widened_like_triton(server: ServerProcess) -> None:
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [0.1]}]}).encode()
    status, headers, reply = request(server, "POST", "/v2/models/identity/infer", body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert b'"data":[0.10000000149011612]' in reply


def test_request_level_binary_output(server: ServerProcess) -> None:
    document = {
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}],
    }
    status, headers, reply = request(server, "POST", "/v2/models/identity/infer", json.dumps(document).encode())
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    length = int(headers["inference-header-content-length"])
    header = json.loads(reply[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert reply[length:] == struct.pack("<2f", 1, 2)


def test_raw_binary_request(server: ServerProcess) -> None:
    raw = np.array([1, 2, 3], dtype=np.float32).tobytes()
    # header length 0: the whole body is the only input; every output comes back binary (an empty body is a 400:
    # tests/e2e/test_input_edges.py)
    headers = {"Inference-Header-Content-Length": "0"}
    status, reply_headers, reply = request(server, "POST", "/v2/models/identity/infer", raw, headers)
    assert status == 200, reply
    length = int(reply_headers["inference-header-content-length"])
    header = json.loads(reply[:length])
    assert header["outputs"][0]["shape"] == [1, 3]
    assert reply[length:] == raw


def test_gzip_request_body(server: ServerProcess) -> None:
    document = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    body = gzip.compress(json.dumps(document).encode())
    status, _, reply = request(server, "POST", "/v2/models/identity/infer", body, {"Content-Encoding": "gzip"})
    assert status == 200 and json.loads(reply)["outputs"][0]["data"] == [1.0, 2.0]


def test_statistics(client: httpclient.InferenceServerClient) -> None:
    client.infer("add_sub", _add_sub_inputs(True))
    stats = client.get_inference_statistics("add_sub")["model_stats"]
    assert stats[0]["name"] == "add_sub" and stats[0]["inference_stats"]["success"]["count"] >= 1
    everything = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} == {"add_sub", "identity", "string_identity"}


def test_keep_alive_and_pipelining(server: ServerProcess) -> None:
    import socket

    host, port = server.http.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        one = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(one * 3 + b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 4
    assert data.rstrip().endswith(b"}") and b'"name":"triton"' in data


async def test_aio_client(server: ServerProcess) -> None:
    client = aioclient.InferenceServerClient(server.http)
    try:
        assert await client.is_server_ready()
        result = await client.infer("add_sub", _add_sub_inputs(True))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.arange(4) + 1)
        assert (await client.get_model_metadata("add_sub"))["name"] == "add_sub"
    finally:
        await client.close()


def test_restricted_api(server: ServerProcess) -> None:
    restricted = start_seawall("--http-restricted-api=inference,model-config:admin-key=s3cret")
    try:
        client = httpclient.InferenceServerClient(restricted.http)
        with pytest.raises(Exception, match="This API is restricted, expecting header 'admin-key'"):
            client.infer("add_sub", _add_sub_inputs(False))
        result = client.infer("add_sub", _add_sub_inputs(False), headers={"admin-key": "s3cret"})
        assert result.as_numpy("OUTPUT0") is not None
        status, _, body = request(restricted, "DELETE", "/v2/models/add_sub/config")
        assert (status, json.loads(body)) == (
            403,
            {"error": "This API is restricted, expecting header 'admin-key'"},
        )
        assert client.is_server_ready()
        client.close()
    finally:
        restricted.stop()
