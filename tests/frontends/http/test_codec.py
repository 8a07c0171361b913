"""Unit tests of the HTTP infer codec's pure functions: decoding limits and types, encoding formats."""

from __future__ import annotations

import random
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from seawall.core.types import InferResponse, Tensor
from seawall.errors import InvalidArgumentError
from seawall.frontends.http import codec as http_codec
from seawall.frontends.http import json_body
from seawall.frontends.http.routes import ROUTES
from seawall.options import API_CATEGORIES, Limits

LIMITS = Limits()


def _decode(document: Any, binary: bytes = b"", limits: Limits = LIMITS) -> http_codec.DecodedInfer:
    header = orjson.dumps(document)
    length = len(header) if binary else None
    return http_codec.decode_infer_request(header + binary, length, "m", "", limits)


def _input(name: str = "IN", datatype: str = "FP32", shape: list[int] | None = None, **extra: Any) -> Any:
    return {"name": name, "datatype": datatype, "shape": [4] if shape is None else shape, **extra}


def _error(document: Any, binary: bytes = b"", limits: Limits = LIMITS) -> str:
    with pytest.raises(InvalidArgumentError) as info:
        _decode(document, binary, limits)
    return info.value.message


def test_every_route_has_a_known_category() -> None:
    assert ROUTES
    for route in ROUTES:
        assert route.category in API_CATEGORIES, route
        assert route.methods <= {"GET", "POST"}
        assert route.handler or route.feature


def test_json_inputs_decode_with_types() -> None:
    decoded = _decode({"id": "7", "inputs": [_input(data=[1, 2.5, 3, 4])]})
    tensor = decoded.request.inputs[0]
    assert decoded.request.id == "7"
    assert tensor.data.dtype == np.float32 and tensor.shape == (4,)
    assert tensor.data.tolist() == [1.0, 2.5, 3.0, 4.0]


def test_nested_data_is_flattened_row_major() -> None:
    decoded = _decode({"inputs": [_input(datatype="INT32", shape=[2, 2], data=[[1, 2], [3, 4]])]})
    assert decoded.request.inputs[0].data.tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize(
    ("datatype", "data", "fragment"),
    [
        ("UINT8", [300, 0, 0, 0], "value 300 is out of range for datatype UINT8"),
        ("INT8", [-129, 0, 0, 0], "value -129 is out of range for datatype INT8"),
        ("UINT32", [-1, 0, 0, 0], "value -1 is out of range for datatype UINT32"),
        ("BOOL", [1, 0, 1, 0], "BOOL elements must be true or false"),
        ("INT32", [1.5, 0, 0, 0], "INT32 elements must be integers"),
        ("INT32", [True, 0, 0, 0], "INT32 elements must be integers"),
        ("FP32", ["a", 0, 0, 0], "FP32 elements must be numbers"),
        ("BYTES", [1, 2, 3, 4], "BYTES elements must be strings"),
        ("FP16", [1, 2, 3, 4], "datatype FP16 of input 'IN' cannot be sent as JSON"),
    ],
)
def test_json_values_of_the_wrong_type_or_range_are_refused(datatype: str, data: list[Any], fragment: str) -> None:
    assert fragment in _error({"inputs": [_input(datatype=datatype, data=data)]})


def test_huge_shape_with_tiny_data_is_refused_before_allocating() -> None:
    message = _error({"inputs": [_input(shape=[1099511627776], data=[1])]})
    assert message == "input 'IN' for model 'm' has more than 2147483648 elements (--max-tensor-elements)"
    message = _error({"inputs": [_input(shape=[4], data=[1])]})
    assert message == "Unable to parse 'data': Shape does not match true shape of 'data' field"


def test_shape_over_the_element_limit_is_refused() -> None:
    message = _error({"inputs": [_input(shape=[4294967296, 4294967296], data=[1])]})
    assert message == "input 'IN' for model 'm' has more than 2147483648 elements (--max-tensor-elements)"


@pytest.mark.parametrize("shape", [[1.5], ["4"], [True], "4", {"a": 1}, [[1]]])
def test_bad_shapes_are_refused(shape: Any) -> None:
    message = "Unable to parse 'shape' of input 'IN': expected an array of integers"
    assert _error({"inputs": [_input(shape=shape, data=[1])]}) == message


def test_negative_dimensions_are_refused() -> None:
    message = "invalid shape [-1] for input 'IN' for model 'm', dimensions must be >= 0"
    assert _error({"inputs": [_input(shape=[-1], data=[1])]}) == message


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"id": 5, "inputs": []}, "Unable to parse 'id'"),
        ({}, "attempt to access non-existing object member 'inputs'"),
        ([1], "expected a JSON object"),
        ({"inputs": [_input(data=[1, 2, 3, 4])], "parameters": {"triton_x": 1}}, "reserved for Triton usage"),
        ({"inputs": [], "parameters": {"k": {"a": 1}}}, "parameter 'k' has invalid type"),
        ({"inputs": [], "parameters": {"sequence_start": "true"}}, "Unable to parse 'sequence_start'"),
        ({"inputs": [], "parameters": {"priority": -1}}, "Unable to parse 'priority'"),
        ({"inputs": [_input(name="A\x00B", data=[1, 2, 3, 4])]}, "input name contains a NUL character"),
        ({"inputs": [_input(datatype="STRING", data=["a"])]}, "invalid datatype for input IN"),
        ({"inputs": [_input()]}, "But no field is set"),
        (
            {"inputs": [_input(data=[1], parameters={"binary_data_size": 4})]},
            "But set 'data' 'binary_data_size'",
        ),
        ({"inputs": [], "outputs": [{"name": "O"}, {"name": "O"}]}, "output 'O' is requested more than once"),
        ({"inputs": [], "outputs": [{"name": "O", "parameters": {"binary_data": 1}}]}, "'binary_data'"),
    ],
)
def test_malformed_requests_are_refused(document: Any, fragment: str) -> None:
    assert fragment in _error(document)


def test_shared_memory_tensors_become_placeholders_with_their_parameters() -> None:
    shm = {"shared_memory_region": "r", "shared_memory_offset": 16, "shared_memory_byte_size": 16}
    decoded = _decode({"inputs": [_input(parameters=shm)], "outputs": [{"name": "O", "parameters": shm}]})
    tensor = decoded.request.inputs[0]
    assert tensor.parameters == shm and tensor.data.size == 0 and tensor.data.dtype == np.float32
    assert decoded.request.outputs[0].parameters == shm


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"classification": 2}, "Output can't set both 'shared_memory_region' and 'classification'"),
        ({"binary_data": True}, "Output can't set both 'shared_memory_region' and 'binary_data'"),
        ({"shared_memory_offset": -1}, "Unable to parse 'shared_memory_offset' of output 'O'"),
        ({"shared_memory_region": 5}, "Unable to parse 'shared_memory_region' of output 'O': expected a string"),
    ],
)
def test_shared_memory_output_conflicts(parameters: dict[str, Any], message: str) -> None:
    outputs = [{"name": "O", "parameters": {"shared_memory_region": "r", **parameters}}]
    assert message in _error({"inputs": [], "outputs": outputs})


def test_shared_memory_outputs_are_sent_without_data() -> None:
    tensor = Tensor("O", "FP32", (4,), np.zeros(4, np.float32), {"shared_memory_region": "r"})
    parts, length = http_codec.encode_infer_response(InferResponse("m", "1", [tensor]), "", True, {})
    assert length is None
    assert orjson.loads(parts[0])["outputs"] == [{"name": "O", "datatype": "FP32", "shape": [4]}]


def test_malformed_and_deep_json_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="failed to parse the request JSON buffer"):
        json_body.load_json(b"{", 100)
    with pytest.raises(InvalidArgumentError, match="The document is empty"):
        json_body.load_json(b"", 100)
    deep = b'{"inputs":[],"x":' + b"[" * 150 + b"]" * 150 + b"}"
    with pytest.raises(InvalidArgumentError, match="nested deeper than 100"):
        json_body.load_json(deep, 100)
    assert json_body.load_json(b"[" * 50 + b"]" * 50, 100) is not None


def _depth(node: Any) -> int:
    """The nesting depth of a parsed JSON value, by a walk (the reference for the byte-level measure)."""
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        return 1 + max((_depth(child) for child in node), default=0)
    return 0


def _random_json(rng: random.Random, level: int = 0) -> Any:
    """Values whose strings hold brackets, quotes and runs of backslashes, as keys and as values."""
    kind = rng.random()
    if level > 10 or kind < 0.3:
        return "".join(rng.choice(["[", "]", "{", "}", "\\", '"', "x", "\\\\"]) for _ in range(rng.randint(0, 5)))
    if kind < 0.65:
        return [_random_json(rng, level + 1) for _ in range(rng.randint(0, 3))]
    return {_random_json(rng, 99): _random_json(rng, level + 1) for _ in range(rng.randint(0, 3))}


@pytest.mark.parametrize("chunk", [1 << 20, 7, 1])
def test_depth_is_measured_from_the_bytes_as_a_walk_would(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    # strings with brackets, escaped quotes and backslash runs, across chunk boundaries (small chunks)
    monkeypatch.setattr(json_body, "_CHUNK", chunk)
    rng = random.Random(chunk)
    for _ in range(1500 if chunk > 1 else 200):
        raw = orjson.dumps([_random_json(rng)])
        depth = _depth(orjson.loads(raw))
        for limit in (depth - 1, depth):
            assert json_body._is_deeper(raw, limit) == (depth > limit), (raw, limit)


def test_a_flat_document_of_millions_of_objects_is_measured_without_walking_them() -> None:
    # ten million empty objects: 20 MB; a walk of the parsed objects took ~40 s here, the byte measure well under
    # a second (asserted through the answer only: speed is for the benchmarks)
    raw = b'{"inputs":[' + b",".join([b"{}"] * 10_000_000) + b"]}"
    assert json_body._is_deeper(raw, 3) is False  # the body object, the list, the empty objects
    assert json_body._is_deeper(raw, 2) is True


@pytest.mark.parametrize("value", ["abc", "-1", "99999999999999999999", "1e3"])
def test_header_length_must_be_a_number_within_the_body(value: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"inference header size should be in range \(0, 10\)"):
        http_codec.parse_header_length(value, 10)
    assert http_codec.parse_header_length("10", 10) == 10
    assert http_codec.parse_header_length(None, 10) is None


def test_binary_inputs_are_views_of_the_body() -> None:
    raw = np.arange(4, dtype=np.float32).tobytes()
    decoded = _decode({"inputs": [_input(parameters={"binary_data_size": 16})]}, raw)
    data = decoded.request.inputs[0].data
    assert data.tolist() == [0, 1, 2, 3] and not data.flags.owndata
    assert decoded.request.inputs[0].parameters == {}


def test_binary_size_errors_use_tritons_messages() -> None:
    doc = {"inputs": [_input(parameters={"binary_data_size": 16})]}
    assert _error(doc, b"x" * 8) == "unexpected size for input 'IN', expecting 16 additional bytes for model 'm'"
    assert _error(doc, b"x" * 20) == "unexpected additional input data for model 'm'"
    doc = {"inputs": [_input(parameters={"binary_data_size": 12})]}
    assert "input byte size mismatch for input 'IN' for model 'm'. Expected 16, got 12" in _error(doc, b"x" * 12)


def test_binary_bytes_elements() -> None:
    raw = struct.pack("<I", 2) + b"hi" + struct.pack("<I", 0)
    doc = {"inputs": [_input(datatype="BYTES", shape=[2], parameters={"binary_data_size": len(raw)})]}
    assert _decode(doc, raw).request.inputs[0].data.tolist() == [b"hi", b""]
    bad = struct.pack("<I", 100) + b"hi"
    doc = {"inputs": [_input(datatype="BYTES", shape=[1], parameters={"binary_data_size": len(bad)})]}
    assert "longer than the remaining data" in _error(doc, bad)


def test_raw_request_deduces_the_shape() -> None:
    spec = http_codec.RawInputSpec("INPUT0", "FP32", (-1,), 8, 1)
    decoded = http_codec.decode_raw_request(np.ones(3, np.float32).tobytes(), "m", "", spec, LIMITS)
    assert decoded.request.inputs[0].shape == (1, 3) and decoded.binary_default
    two = http_codec.RawInputSpec("INPUT0", "FP32", (4,), 0, 2)
    with pytest.raises(InvalidArgumentError, match="Raw request must only have 1 input"):
        http_codec.decode_raw_request(b"", "m", "", two, LIMITS)


def _response(*tensors: Tensor) -> InferResponse:
    return InferResponse("m", "1", list(tensors))


def test_json_output_widens_fp32_like_triton() -> None:
    tensor = Tensor.from_numpy("OUT", np.array([0.1, 2.0], dtype=np.float32))
    parts, length = http_codec.encode_infer_response(_response(tensor), "42", False, {})
    assert length is None
    assert parts[0] == (
        b'{"id":"42","model_name":"m","model_version":"1","outputs":'
        b'[{"name":"OUT","datatype":"FP32","shape":[2],"data":[0.10000000149011612,2.0]}]}'
    )


def test_binary_outputs_follow_the_json_header() -> None:
    numbers = Tensor.from_numpy("A", np.array([1, 2], dtype=np.int32))
    words = Tensor.from_numpy("B", np.array([b"x", b"yz"], dtype=object))
    parts, length = http_codec.encode_infer_response(_response(numbers, words), "", False, {"A": True})
    header = orjson.loads(parts[0])
    assert length == len(parts[0])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert header["outputs"][1]["data"] == ["x", "yz"]
    assert bytes(parts[1]) == np.array([1, 2], dtype="<i4").tobytes()
    parts, _ = http_codec.encode_infer_response(_response(words), "", True, {})
    assert bytes(parts[1]) == struct.pack("<I", 1) + b"x" + struct.pack("<I", 2) + b"yz"


def test_outputs_json_cannot_carry_are_refused() -> None:
    nan = Tensor.from_numpy("N", np.array([np.nan], dtype=np.float32))
    with pytest.raises(InvalidArgumentError, match="NaN or Infinity"):
        http_codec.encode_infer_response(_response(nan), "", False, {})
    bad = Tensor.from_numpy("B", np.array([b"\xff"], dtype=object))
    with pytest.raises(InvalidArgumentError, match="not valid UTF-8"):
        http_codec.encode_infer_response(_response(bad), "", False, {})


def test_bytes_elements_are_capped_per_request_over_all_inputs() -> None:
    limits = Limits(max_bytes_elements=5)
    three = ["a", "b", "c"]
    ok = _decode(
        {"inputs": [_input("A", "BYTES", [3], data=three), _input("B", "FP32", [4], data=[1, 2, 3, 4])]}, limits=limits
    )
    assert ok.request.inputs[0].data.tolist() == [b"a", b"b", b"c"]
    message = _error(
        {"inputs": [_input("A", "BYTES", [3], data=three), _input("B", "BYTES", [3], data=three)]}, limits=limits
    )
    assert (
        message == "input 'B' for model 'm' brings the request to 6 BYTES elements, more than 5 (--max-bytes-elements)"
    )
