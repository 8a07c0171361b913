"""Pure tests of the ModelInfer wire path: split requests and written responses equal what the generated protobuf
classes read and write."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from seawall.core.types import InferResponse, Tensor
from seawall.errors import InvalidArgumentError
from seawall.frontends.grpc import codec, wire
from seawall.options import Limits

BIG = np.arange(wire.SPLIT_MIN_BYTES, dtype=np.float32)  # 4x the split threshold


def _request(*raw: bytes) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="identity", model_version="1", id="req")
    message.parameters["sequence_id"].int64_param = 7
    for index, content in enumerate(raw):
        message.inputs.add(name=f"INPUT{index}", datatype="UINT8", shape=[len(content)])
        message.raw_input_contents.append(content)
    message.outputs.add(name="OUTPUT0")
    return message


@pytest.mark.parametrize("raw", [(), (b"",), (b"ab", BIG.tobytes(), b"\x00" * 300)])
def test_split_keeps_every_other_field_and_views_the_contents(raw: tuple[bytes, ...]) -> None:
    message = _request(*raw)
    data = message.SerializeToString()
    header, contents = wire.split_raw_inputs(data, Limits())
    assert [bytes(c) for c in contents] == list(raw)
    assert all(isinstance(c, memoryview) and c.readonly for c in contents)
    expected = pb.ModelInferRequest()
    expected.CopyFrom(message)
    expected.ClearField("raw_input_contents")
    assert pb.ModelInferRequest.FromString(header) == expected


def test_split_skips_unknown_fields_of_every_wire_type() -> None:
    data = _request(b"xyz").SerializeToString()
    unknown = bytes((12 << 3 | 0, 0x96, 0x01)) + bytes((13 << 3 | 1,)) + b"\x00" * 8 + bytes((14 << 3 | 5,)) + b"1234"
    header, contents = wire.split_raw_inputs(unknown + data, Limits())
    assert [bytes(c) for c in contents] == [b"xyz"]
    assert header.startswith(unknown)


@pytest.mark.parametrize(
    "data",
    [
        b"\x3a\x05abc",  # raw content shorter than its length
        b"\x0a",  # a length missing
        b"\x80",  # a truncated key
        b"\x0a" + b"\xff" * 11,  # a varint longer than 10 bytes
        b"\x0b",  # a group (wire type 3)
        b"\x79\x00",  # fixed64 cut short
    ],
)
def test_split_refuses_truncated_or_unknown_wire_types(data: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match="^Unable to parse request$"):
        wire.split_raw_inputs(data, Limits())


@pytest.mark.parametrize("size", [16, wire.SPLIT_MIN_BYTES + 1])
def test_parse_small_and_large_requests_alike(size: int) -> None:
    content = bytes(range(256)) * (size // 256 + 1)
    data = _request(content[:size]).SerializeToString()
    message, raw = wire.parse_infer_request(data, Limits())
    assert (message.model_name, message.id, [bytes(r) for r in raw]) == ("identity", "req", [content[:size]])
    request = codec.infer_request_from_proto(message, Limits(), raw)
    assert request.inputs[0].data.tobytes() == content[:size]
    assert not request.inputs[0].data.flags.writeable


@pytest.mark.parametrize("data", [b"\xff\xff", b"\x0a\xff\xff\xff\x7f" + b"\x00" * wire.SPLIT_MIN_BYTES])
def test_parse_refuses_what_is_not_a_request(data: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match="^Unable to parse request$"):
        wire.parse_infer_request(data, Limits())


def test_large_bytes_inputs_become_bytes_elements() -> None:
    items = [b"a" * wire.SPLIT_MIN_BYTES, b"", b"bc"]
    content = b"".join(struct.pack("<I", len(x)) + x for x in items)
    message = pb.ModelInferRequest(model_name="string_identity")
    message.inputs.add(name="INPUT0", datatype="BYTES", shape=[3])
    message.raw_input_contents.append(content)
    parsed, raw = wire.parse_infer_request(message.SerializeToString(), Limits())
    data = codec.infer_request_from_proto(parsed, Limits(), raw).inputs[0].data
    assert data.tolist() == items and all(type(x) is bytes for x in data)


@pytest.mark.parametrize(
    "response",
    [
        InferResponse("m", "1", []),
        InferResponse(
            "string_identity",
            "1",
            [
                Tensor("OUTPUT0", "BYTES", (3,), np.array([b"ab", "é", b""], dtype=object)),
                Tensor("LENGTH", "INT32", (3,), np.array([2, 2, 0], dtype=">i4")),
                Tensor("T", "FP32", (2, 2), np.arange(4, dtype=np.float32).reshape(2, 2).T, {"p": 1}),
                Tensor("S", "FP32", (4,), np.zeros(4, dtype=np.float32), {"shared_memory_region": "out"}),
                Tensor("E", "FP32", (0, 3), np.zeros((0, 3), dtype=np.float32)),
                Tensor("BIG", "FP32", BIG.shape, BIG),
            ],
            id="x",
            parameters={"flag": True, "n": 2**63, "f": 0.5, "s": "v"},
        ),
    ],
)
def test_response_bytes_equal_the_generated_message(response: InferResponse) -> None:
    data = wire.infer_response_bytes(response)
    assert pb.ModelInferResponse.FromString(data) == codec.infer_response_to_proto(response)


@pytest.mark.parametrize("value", [1, 127, 128, 300, 2**32, 2**63 - 1])
def test_varint_matches_protobuf(value: int) -> None:
    tag = b"\x10"  # InferParameter.int64_param: field 2, varint
    assert tag + wire.encode_varint(value) == pb.InferParameter(int64_param=value).SerializeToString()
    assert wire.encode_varint(0) == b"\x00"


def test_stream_response_bytes_equal_the_generated_message() -> None:
    response = InferResponse("identity", "1", [Tensor("OUTPUT0", "FP32", BIG.shape, BIG)], id="s", parameters={"a": 1})
    data = wire.stream_response_bytes(response, {**response.parameters, "triton_final_response": True})
    expected = codec.infer_response_to_proto(response)
    expected.parameters["triton_final_response"].bool_param = True
    assert pb.ModelStreamInferResponse.FromString(data) == pb.ModelStreamInferResponse(infer_response=expected)
    assert response.parameters == {"a": 1}  # the core's response is left as it was (it may be cached)
