"""Property tests of the codecs (issue 14 item 5): for any input, a parser decodes it or refuses it with a
`SeawallError` (never another exception: that would be a 500 for the client's input); where an encoder exists,
decoding what it wrote gives back the same tensors.

`make test` runs these with the `ci` profile (few examples, derandomized); `make fuzz` with many (conftest.py).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import assume, given
from hypothesis import strategies as st
from tritonclient.grpc import model_config_pb2, service_pb2

from seawall.core import raw
from seawall.core.types import ELEMENT_SIZES, InferResponse, Tensor
from seawall.frontends.grpc import codec as grpc_codec
from seawall.frontends.grpc import wire
from seawall.frontends.http import codec as http_codec
from tests.fuzz import targets
from tests.fuzz.targets import DATATYPES, LIMITS, MODEL

FIXED = sorted(ELEMENT_SIZES)
JSON_TYPES = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP32", "FP64"]

# ------------------------------------------------------------------------------------------------ strategies

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=30,
)
dims = st.integers(-3, 6) | st.sampled_from([0, 2**31, 2**62, 2**63, 2**64, -(2**63)]) | json_scalars
shapes = st.lists(dims, max_size=5) | json_values
parameters = st.dictionaries(
    st.sampled_from(["binary_data_size", "binary_data", "shared_memory_region", "classification", "x", "triton_x"])
    | st.text(max_size=4),
    json_values,
    max_size=3,
)


@st.composite
def infer_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Infer bodies near the valid ones: right keys, values of any type and size."""
    entry = st.fixed_dictionaries(
        {"name": st.text(max_size=4) | json_values, "datatype": st.sampled_from(DATATYPES) | json_scalars},
        optional={"shape": shapes, "data": json_values, "parameters": parameters},
    )
    document: dict[str, Any] = {"inputs": draw(st.lists(entry, max_size=4) | json_values)}
    if draw(st.booleans()):
        document["outputs"] = draw(
            st.lists(
                st.fixed_dictionaries({"name": st.text(max_size=3)}, optional={"parameters": parameters}), max_size=3
            )
        )
    if draw(st.booleans()):
        document["parameters"] = draw(parameters)
    if draw(st.booleans()):
        document["id"] = draw(json_scalars)
    return document


def tensors(datatypes: list[str]) -> st.SearchStrategy[tuple[str, tuple[int, ...], bytes]]:
    """(datatype, shape, raw bytes) of one valid tensor."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, tuple[int, ...], bytes]:
        datatype = draw(st.sampled_from(datatypes))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        count = int(np.prod(shape, dtype=np.int64))
        if datatype == "BYTES":
            items = draw(st.lists(st.binary(max_size=6), min_size=count, max_size=count))
            return datatype, shape, b"".join(struct.pack("<I", len(i)) + i for i in items)
        size = count * ELEMENT_SIZES[datatype]
        return datatype, shape, draw(st.binary(min_size=size, max_size=size))

    return build()


def _same(tensor: Tensor, datatype: str, shape: tuple[int, ...], data: bytes) -> None:
    assert (tensor.datatype, tuple(tensor.shape), tuple(tensor.data.shape)) == (datatype, shape, shape)
    assert bytes(raw.encode(tensor)) == data


# --------------------------------------------------------------------------------------- no foreign exception


@given(st.binary(max_size=300))
@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_every_parser_refuses_bytes_only_with_seawall_errors(name: str, data: bytes) -> None:
    targets.refused(targets.TARGETS[name], data)


@given(infer_documents())
def test_infer_json_refuses_only_with_seawall_errors(document: dict[str, Any]) -> None:
    targets.refused(targets.http_infer_json, json.dumps(document).encode())


@given(infer_documents(), st.binary(max_size=64))
def test_infer_binary_refuses_only_with_seawall_errors(document: dict[str, Any], blob: bytes) -> None:
    header = json.dumps(document).encode()
    targets.refused(lambda body: http_codec.decode_infer_request(body, len(header), MODEL, "", LIMITS), header + blob)


@given(json_values, st.sampled_from(DATATYPES), st.lists(st.integers(0, 5), max_size=3))
def test_json_data_of_any_shape_refuses_only_with_seawall_errors(data: Any, datatype: str, shape: list[int]) -> None:
    document = {"inputs": [{"name": "I", "datatype": datatype, "shape": shape, "data": data}]}
    targets.refused(targets.http_infer_json, json.dumps(document).encode())


@given(
    st.lists(
        st.tuples(
            st.sampled_from(DATATYPES) | st.text(max_size=3),
            st.lists(dims.filter(lambda d: type(d) is int and -(2**63) <= d < 2**63), max_size=4),
            st.binary(max_size=40),
            st.booleans(),
        ),
        max_size=3,
    ),
    st.integers(0, 3),
)
def test_grpc_messages_refuse_only_with_seawall_errors(
    inputs: list[tuple[str, list[int], bytes, bool]], extra: int
) -> None:
    message = service_pb2.ModelInferRequest(model_name=MODEL)
    for index, (datatype, shape, data, typed) in enumerate(inputs):
        tensor = message.inputs.add(name=f"I{index}", datatype=datatype, shape=shape)
        if typed:
            tensor.contents.int_contents.extend(range(len(data) % 7))
            tensor.contents.bytes_contents.extend([data] * (len(data) % 3))
        else:
            message.raw_input_contents.append(data)
    message.raw_input_contents.extend([b"\0"] * extra)
    serialized = message.SerializeToString()
    targets.refused(targets.grpc_infer, serialized)
    targets.refused(targets.grpc_infer_split, serialized)


# ------------------------------------------------------------------------------------------------ round trips


@given(st.lists(tensors(DATATYPES), min_size=1, max_size=4))
def test_binary_extension_round_trip(items: list[tuple[str, tuple[int, ...], bytes]]) -> None:
    inputs = [
        {"name": f"I{i}", "datatype": t, "shape": list(s), "parameters": {"binary_data_size": len(d)}}
        for i, (t, s, d) in enumerate(items)
    ]
    header = json.dumps({"inputs": inputs}).encode()
    decoded = http_codec.decode_infer_request(header + b"".join(d for _, _, d in items), len(header), MODEL, "", LIMITS)
    for tensor, (datatype, shape, data) in zip(decoded.request.inputs, items, strict=True):
        _same(tensor, datatype, shape, data)


@given(st.lists(tensors(DATATYPES), min_size=1, max_size=4), st.booleans())
def test_grpc_raw_round_trip(items: list[tuple[str, tuple[int, ...], bytes]], large: bool) -> None:
    message = service_pb2.ModelInferRequest(model_name=MODEL, id="r")
    for i, (datatype, shape, data) in enumerate(items):
        message.inputs.add(name=f"I{i}", datatype=datatype, shape=shape)
        message.raw_input_contents.append(data)
    if large:  # a parameter big enough that `wire` splits the request instead of parsing it whole
        message.parameters["pad"].string_param = "x" * wire.SPLIT_MIN_BYTES
    parsed, contents = wire.parse_infer_request(message.SerializeToString(), LIMITS)
    request = grpc_codec.infer_request_from_proto(parsed, LIMITS, contents)
    assert request.id == "r"
    for tensor, (datatype, shape, data) in zip(request.inputs, items, strict=True):
        _same(tensor, datatype, shape, data)


@given(tensors(JSON_TYPES + ["BYTES"]))
def test_json_response_then_request_round_trip(item: tuple[str, tuple[int, ...], bytes]) -> None:
    """An output written as JSON by the response encoder, sent back as a JSON input, decodes to the same tensor."""
    datatype, shape, data = item
    count = int(np.prod(shape, dtype=np.int64))
    array = raw.decode(memoryview(data), datatype, shape, count, "O", MODEL)
    if datatype == "BYTES":
        assume(all(_is_utf8(b) for b in array.reshape(-1)))
    elif datatype in ("FP32", "FP64"):
        assume(bool(np.isfinite(array).all()))
    parts, header_length = http_codec.encode_infer_response(
        InferResponse(MODEL, "1", [Tensor("O", datatype, shape, array)]), "", False, {}
    )
    assert header_length is None
    output = json.loads(b"".join(bytes(p) for p in parts))["outputs"][0]
    document = {"inputs": [{"name": "O", "datatype": datatype, "shape": output["shape"], "data": output["data"]}]}
    tensor = http_codec.decode_infer_request(json.dumps(document).encode(), None, MODEL, "", LIMITS).request.inputs[0]
    if datatype == "BOOL":
        data = np.frombuffer(data, np.uint8).astype(bool).astype(np.uint8).tobytes()  # any non-zero byte is true
    _same(tensor, datatype, shape, data)


def _is_utf8(item: bytes) -> bool:
    try:
        item.decode()
    except UnicodeDecodeError:
        return False
    return True


@given(st.lists(st.binary(max_size=20), max_size=20))
def test_bytes_elements_round_trip(items: list[bytes]) -> None:
    encoded = raw.encode_bytes(raw.object_array(items))
    assert raw.split_bytes(encoded, len(items)) == items
    if items:
        with pytest.raises(raw.BytesFormatError):
            raw.split_bytes(encoded, len(items) + 1)
        with pytest.raises(raw.BytesFormatError):
            raw.split_bytes(encoded[:-1], len(items))


# ------------------------------------------------------------------------------------------------ config.pbtxt

TYPES = [v for k, v in model_config_pb2.DataType.items() if k != "TYPE_INVALID"]


@st.composite
def model_configs(draw: st.DrawFn) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig(
        name=MODEL,
        backend=draw(st.sampled_from(["python", "onnxruntime", ""])),
        max_batch_size=draw(st.integers(-1, 9)),
    )
    for kind in ("input", "output"):
        for index in range(draw(st.integers(0, 3))):
            tensor = getattr(config, kind).add(name=f"{kind}{index}", data_type=draw(st.sampled_from(TYPES)))
            tensor.dims.extend(draw(st.lists(st.integers(-2, 2**40), max_size=4)))
            if draw(st.booleans()):
                tensor.reshape.shape.extend(draw(st.lists(st.integers(-2, 8), max_size=3)))
    if draw(st.booleans()):
        config.dynamic_batching.max_queue_delay_microseconds = draw(st.integers(0, 2**40))
        config.dynamic_batching.preferred_batch_size.extend(draw(st.lists(st.integers(-1, 9), max_size=3)))
    if draw(st.booleans()):
        config.instance_group.add(count=draw(st.integers(-1, 4)), kind=draw(st.sampled_from([0, 1, 2, 3])))
    return config


@given(model_configs())
def test_config_pbtxt_round_trip_and_checks(config: model_config_pb2.ModelConfig) -> None:
    text = text_format.MessageToString(config).encode()
    from seawall.core import model_config

    with open(f"{targets._CONFIG_DIR}/config.pbtxt", "wb") as file:
        file.write(text)
    assert model_config.read_config(targets._CONFIG_DIR) == config
    targets.refused(targets.config_pbtxt, text)


@given(model_configs(), st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_mutated_config_pbtxt_refuses_only_with_seawall_errors(
    config: model_config_pb2.ModelConfig, at: int, junk: bytes
) -> None:
    text = text_format.MessageToString(config).encode()
    at %= len(text) + 1
    targets.refused(targets.config_pbtxt, text[:at] + junk + text[at:])
