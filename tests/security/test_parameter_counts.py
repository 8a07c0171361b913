"""The per-request bound on parameters (--max-parameters, default 256) against a real Seawall: the request's own,
each input's and each output's, over HTTP JSON, the HTTP binary extension's JSON header, gRPC ModelInfer and
ModelStreamInfer. At the limit a request is served, one over is refused with the exact message, and the server
stays healthy; the flag raises and lowers the limit; a gRPC message with a million parameters is refused.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.harness import ServerProcess, http_request, start_seawall

DEFAULT_LIMIT = 256
LEVELS = ["request", "input", "output"]
FRONTENDS = ["http_json", "http_binary", "grpc", "grpc_stream"]
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", 1 << 26), ("grpc.max_receive_message_length", 1 << 26)]
_VALUES = [1.0, 2.0, 3.0, 4.0]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_seawall()
    yield process
    process.stop()


def _healthy(server: ServerProcess) -> None:
    assert http_request(server, "GET", "/v2/health/ready")[0] == 200
    assert server.process.poll() is None


def _expected(level: str, count: int, limit: int) -> str:
    owner = {"request": "request", "input": "input 'INPUT0'", "output": "output 'OUTPUT0'"}[level]
    return f"{owner} has {count} parameters, more than the limit of {limit}"


def _params(count: int) -> dict[str, Any]:
    # a mix of the value types every protocol carries; none of Triton's reserved keys
    return {f"p{i}": [i, f"v{i}", i % 2 == 0][i % 3] for i in range(count)}


def _http(server: ServerProcess, level: str, count: int, binary: bool) -> tuple[int, str, list[float]]:
    """POST add_sub with `count` parameters at `level`; (status, error or "", OUTPUT0 as JSON data). In binary
    form `binary_data_size` is one of INPUT0's parameters."""
    params = _params(count - 1 if binary and level == "input" else count)
    inputs: list[dict[str, Any]] = [{"name": name, "datatype": "FP32", "shape": [4]} for name in ("INPUT0", "INPUT1")]
    tail = b""
    for entry in inputs:
        if binary:
            entry["parameters"] = {"binary_data_size": 16}
            tail += struct.pack("<4f", *_VALUES)
        else:
            entry["data"] = _VALUES
    document: dict[str, Any] = {"inputs": inputs, "outputs": [{"name": "OUTPUT0"}]}
    if level == "request":
        document["parameters"] = params
    elif level == "input":
        inputs[0].setdefault("parameters", {}).update(params)
    else:
        document["outputs"][0]["parameters"] = params
    header = json.dumps(document).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))} if binary else {}
    status, _, reply = http_request(server, "POST", "/v2/models/add_sub/infer", header + tail, headers)
    answer = json.loads(reply)
    if status != 200:
        return status, answer["error"], []
    return status, "", answer["outputs"][0]["data"]


def _set(target: Any, params: dict[str, Any]) -> None:
    for key, value in params.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            target[key].int64_param = value
        else:
            target[key].string_param = value


def _grpc_request(level: str, count: int) -> Any:
    request = pb.ModelInferRequest(model_name="add_sub", id="params")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[4])
        request.raw_input_contents.append(struct.pack("<4f", *_VALUES))
    output = request.outputs.add(name="OUTPUT0")
    target = {"request": request.parameters, "input": request.inputs[0].parameters, "output": output.parameters}
    _set(target[level], _params(count))
    return request


def _grpc(address: str, level: str, count: int, stream: bool) -> tuple[grpc.StatusCode, str, list[float]]:
    """ModelInfer (or one ModelStreamInfer message) with `count` parameters at `level`; (code, error, OUTPUT0)."""
    with grpc.insecure_channel(address, options=_CHANNEL_OPTIONS) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = _grpc_request(level, count)
        if stream:
            (reply,) = list(stub.ModelStreamInfer(iter([request]), timeout=60))
            if reply.error_message:
                return grpc.StatusCode.INVALID_ARGUMENT, reply.error_message, []
            answer = reply.infer_response
        else:
            try:
                answer = stub.ModelInfer(request, timeout=60)
            except grpc.RpcError as exc:
                return exc.code(), exc.details(), []
        return grpc.StatusCode.OK, "", list(struct.unpack("<4f", answer.raw_output_contents[0]))


def _call(server: ServerProcess, frontend: str, level: str, count: int) -> tuple[bool, str, list[float]]:
    """(served, error, OUTPUT0) through `frontend`; a refusal must carry the frontend's invalid-argument status
    (HTTP 400, gRPC INVALID_ARGUMENT; a stream answers it as the message's error_message)."""
    if frontend.startswith("http"):
        status, error, data = _http(server, level, count, binary=frontend == "http_binary")
        assert status in (200, 400), (status, error)
        return status == 200, error, data
    code, error, data = _grpc(server.grpc, level, count, stream=frontend == "grpc_stream")
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, error)
    return code == grpc.StatusCode.OK, error, data


@pytest.mark.parametrize("frontend", FRONTENDS)
@pytest.mark.parametrize("level", LEVELS)
def test_parameters_at_the_limit_are_served_and_one_more_is_refused(
    server: ServerProcess, frontend: str, level: str
) -> None:
    served, error, data = _call(server, frontend, level, DEFAULT_LIMIT)
    assert (served, error, data) == (True, "", [2.0, 4.0, 6.0, 8.0])  # add_sub: INPUT0 + INPUT1
    assert _call(server, frontend, level, DEFAULT_LIMIT + 1) == (
        False,
        _expected(level, DEFAULT_LIMIT + 1, DEFAULT_LIMIT),
        [],
    )
    _healthy(server)


def _flood(count: int, level: str) -> bytes:
    """A serialized ModelInferRequest for add_sub with `count` bool parameters at `level`, built on the wire
    (one map entry each: field 4 of the request or of the input, field 2 of the output)."""

    def entries(field: int) -> bytes:
        tag = bytes([field << 3 | 2])
        parts = []
        for i in range(count):
            key = b"p%d" % i
            entry = b"\x0a" + bytes([len(key)]) + key + b"\x12\x02\x08\x01"  # key, InferParameter{bool_param: true}
            parts.append(tag + bytes([len(entry)]) + entry)
        return b"".join(parts)

    request = _grpc_request(level, 0)
    if level == "request":
        return request.SerializeToString() + entries(4)
    blob = entries(4 if level == "input" else 2)
    index = 0 if level == "input" else None
    if index is not None:
        request.inputs[0].MergeFromString(blob)
    else:
        request.outputs[0].MergeFromString(blob)
    return request.SerializeToString()


@pytest.mark.parametrize("level", LEVELS)
def test_a_grpc_message_with_a_million_parameters_is_refused(server: ServerProcess, level: str) -> None:
    data = _flood(1_000_000, level)
    with grpc.insecure_channel(server.grpc, options=_CHANNEL_OPTIONS) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as caught:
            call(data, timeout=120)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == _expected(level, 1_000_000, DEFAULT_LIMIT)
    _healthy(server)


def test_a_key_sent_twice_on_grpc_counts_twice(server: ServerProcess) -> None:
    # the map would keep one entry, but parsing each costs the same: the wire entries are counted
    entry = b"\x0a\x01k\x12\x02\x08\x01"
    data = _grpc_request("request", 0).SerializeToString() + (b"\x22" + bytes([len(entry)]) + entry) * 300
    with grpc.insecure_channel(server.grpc, options=_CHANNEL_OPTIONS) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as caught:
            call(data, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == _expected("request", 300, DEFAULT_LIMIT)
    _healthy(server)


@pytest.mark.parametrize("limit", [3, 300])
def test_the_flag_lowers_and_raises_the_limit(limit: int) -> None:
    process = start_seawall(f"--max-parameters={limit}")
    try:
        for frontend in FRONTENDS:
            for level in LEVELS:
                assert _call(process, frontend, level, limit)[0], (frontend, level)
                assert _call(process, frontend, level, limit + 1) == (
                    False,
                    _expected(level, limit + 1, limit),
                    [],
                ), (frontend, level)
        _healthy(process)
    finally:
        process.stop()
