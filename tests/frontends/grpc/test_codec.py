"""Pure tests of the gRPC codec and admin conversions: protobuf messages ↔ core types, with Triton's messages for
bad input."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from seawall.core.types import (
    Duration,
    InferResponse,
    ModelIndexEntry,
    ModelMetadata,
    ModelStatistics,
    ServerMetadata,
    SharedMemoryRegionStatus,
    Tensor,
    TensorMetadata,
)
from seawall.errors import InvalidArgumentError, ResourceExhaustedError, SeawallError
from seawall.frontends.grpc import admin, codec
from seawall.options import Limits

LIMITS = Limits()
FOUR = np.arange(4, dtype=np.float32).tobytes()


def _input(name: str, datatype: str = "FP32", shape: tuple[int, ...] = (4,), **kw: Any) -> Any:
    return pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape, **kw)


def _request(inputs: list[Any], raw: list[bytes] | None = None, **kw: Any) -> Any:
    return pb.ModelInferRequest(model_name="add_sub", inputs=inputs, raw_input_contents=raw or [], **kw)


def _strings(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


def _error(message: Any, limits: Limits = LIMITS) -> SeawallError:
    with pytest.raises(SeawallError) as info:
        codec.infer_request_from_proto(message, limits)
    return info.value


def test_raw_inputs_are_views_on_the_message_bytes() -> None:
    message = _request([_input("INPUT0"), _input("INPUT1", "INT32", (2, 2))], [FOUR, FOUR], id="7")
    request = codec.infer_request_from_proto(message, LIMITS)
    assert (request.model_name, request.model_version, request.id) == ("add_sub", "", "7")
    first, second = request.inputs
    assert first.datatype == "FP32" and first.shape == (4,) and first.data.tolist() == [0, 1, 2, 3]
    assert second.shape == (2, 2) and second.data.dtype == np.int32 and second.data.shape == (2, 2)
    assert not first.data.flags.owndata and not first.data.flags.writeable  # no copy


def test_typed_contents_of_every_datatype() -> None:
    cases: list[tuple[str, dict[str, list[Any]], list[Any]]] = [
        ("BOOL", {"bool_contents": [True, False]}, [True, False]),
        ("INT8", {"int_contents": [-1, 200]}, [-1, -56]),  # wraps like a C cast, as Triton does
        ("UINT8", {"uint_contents": [1, 300]}, [1, 44]),
        ("INT64", {"int64_contents": [-(2**40), 3]}, [-(2**40), 3]),
        ("UINT64", {"uint64_contents": [2**63, 1]}, [2**63, 1]),
        ("FP64", {"fp64_contents": [0.5, -1.0]}, [0.5, -1.0]),
        ("BYTES", {"bytes_contents": [b"ab", b""]}, [b"ab", b""]),
    ]
    for datatype, contents, expected in cases:
        message = _request([_input("X", datatype, (2,), contents=pb.InferTensorContents(**contents))])
        tensor = codec.infer_request_from_proto(message, LIMITS).inputs[0]
        assert tensor.data.tolist() == expected, datatype


def test_raw_bytes_elements_are_split() -> None:
    message = _request([_input("S", "BYTES", (3,))], [_strings(b"ab", b"", b"xyz")])
    tensor = codec.infer_request_from_proto(message, LIMITS).inputs[0]
    assert tensor.data.dtype == object and tensor.data.tolist() == [b"ab", b"", b"xyz"]


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (
            _request(
                [_input("INPUT0", contents=pb.InferTensorContents(fp32_contents=[1] * 4)), _input("INPUT1")],
                [FOUR],
            ),
            "contents field must not be specified when using raw_input_contents for 'INPUT0' for model 'add_sub'",
        ),
        (
            _request([_input("INPUT0"), _input("INPUT1")], [FOUR]),
            "unable to find data for input tensor 'INPUT1' for model 'add_sub' in request.",
        ),
        (
            _request([_input("INPUT0"), _input("INPUT1")], [FOUR, FOUR, FOUR]),
            "unexpected additional input data for model 'add_sub'",
        ),
        (
            _request([_input("INPUT0", contents=pb.InferTensorContents(int_contents=[1] * 4))]),
            "unexpected explicit tensor data for input tensor 'INPUT0' for model 'add_sub' of type 'INT32', "
            "expected datatype 'FP32'",
        ),
        (
            _request([_input("INPUT0", "INT64", contents=pb.InferTensorContents(uint64_contents=[1] * 4))]),
            "unexpected explicit tensor data for input tensor 'INPUT0' for model 'add_sub' of type 'UINT64', "
            "expected datatype 'INT64'",
        ),
        (
            _request([_input("INPUT0", "FP16", contents=pb.InferTensorContents(fp32_contents=[1] * 4))]),
            "unexpected explicit tensor data for input tensor 'INPUT0' for model 'add_sub' of type 'FP32', "
            "expected datatype 'FP16'",
        ),
        (
            _request([_input("INPUT0", contents=pb.InferTensorContents(fp32_contents=[1] * 3))]),
            "[request id: <id_unknown>] input byte size mismatch for input 'INPUT0' for model 'add_sub'. "
            "Expected 16, got 12",
        ),
        (
            _request([_input("INPUT0"), _input("INPUT1")], [FOUR, FOUR[:7]], id="r9"),
            "[request id: r9] input byte size mismatch for input 'INPUT1' for model 'add_sub'. Expected 16, got 7",
        ),
        (
            _request([_input("INPUT0", "FOO")], [FOUR]),
            "invalid datatype for input INPUT0",
        ),
        (
            _request([_input("INPUT0", shape=(-4,))], [FOUR]),
            "[request id: <id_unknown>] invalid shape [-4] for input 'INPUT0' for model 'add_sub', "
            "dimensions must be >= 0",
        ),
        (
            _request([_input("S", "BYTES", (3,), contents=pb.InferTensorContents(bytes_contents=[b"a"]))]),
            "[request id: <id_unknown>] expected 3 string elements for inference input 'S' for model 'add_sub', got 1",
        ),
        (
            _request([_input("S", "BYTES", (3,))], [_strings(b"ab", b"", b"xyz")[:-1]]),
            "incomplete string data for inference input 'S', expecting string of length 3 but only 2 bytes available",
        ),
        (
            _request([_input("S", "BYTES", (3,))], [_strings(b"ab", b"", b"xyz") + b"\x00"]),
            "[request id: <id_unknown>] incomplete string length indicator for inference input 'S' for model "
            "'add_sub', expecting 4 bytes but only 1 bytes available. Please make sure the string length "
            "indicator is in one buffer.",
        ),
        (
            _request([_input("S", "BYTES", (2,))], [_strings(b"ab", b"", b"xyz")]),
            "[request id: <id_unknown>] unexpected number of string elements 3 for inference input 'S' "
            "for model 'add_sub', expecting 2",
        ),
        (
            _request([_input("S", "BYTES", (4,))], [_strings(b"ab", b"", b"xyz")]),
            "[request id: <id_unknown>] unexpected number of string elements 3 for inference input 'S' "
            "for model 'add_sub', expecting 4",
        ),
    ],
)
def test_invalid_inputs_get_tritons_message(message: Any, text: str) -> None:
    error = _error(message)
    assert isinstance(error, InvalidArgumentError)
    assert error.message == text


def test_surplus_bytes_elements_are_counted_with_bounded_work() -> None:
    message = _request([_input("S", "BYTES", (1,))], [_strings(b"a") + b"\x00" * 4 * 100_000])
    assert "unexpected number of string elements more than 4097 " in _error(message).message


def test_limits_are_checked_before_allocating() -> None:
    small = Limits(max_tensor_elements=100, max_tensor_bytes=64)
    huge = _error(_request([_input("INPUT0", shape=(1 << 62, 1 << 62, 1 << 62))], [FOUR]), small)
    assert isinstance(huge, InvalidArgumentError)
    assert huge.message == (
        "[request id: <id_unknown>] input 'INPUT0' for model 'add_sub' has more than 100 elements "
        "(--max-tensor-elements)"
    )
    too_big = _error(_request([_input("INPUT0", "FP64", (10,))], [b"\x00" * 80]), small)
    assert isinstance(too_big, ResourceExhaustedError)  # the data itself is over the limit
    assert too_big.message == (
        "[request id: <id_unknown>] input 'INPUT0' for model 'add_sub' carries 80 bytes of data, more than 64 "
        "(--max-tensor-bytes)"
    )
    declared = _error(_request([_input("INPUT0", "FP64", (10,))], [b"\x00" * 8]), small)
    assert isinstance(declared, InvalidArgumentError)  # only the shape is: a mismatch, INVALID_ARGUMENT
    typed_data = _request([_input("INPUT0", "FP64", (10,), contents=pb.InferTensorContents(fp64_contents=[1] * 10))])
    assert isinstance(_error(typed_data, small), ResourceExhaustedError)
    typed = _request([_input("INPUT0", shape=(1 << 40,), contents=pb.InferTensorContents(fp32_contents=[1]))])
    assert isinstance(_error(typed, small), InvalidArgumentError)
    many = _request([_input(f"I{i}") for i in range(3)], [FOUR] * 3)
    assert isinstance(_error(many, Limits(max_inputs=2)), ResourceExhaustedError)


def test_too_many_dimensions() -> None:
    error = _error(_request([_input("INPUT0", shape=(1,) * 33)], [FOUR]))
    assert isinstance(error, InvalidArgumentError)
    assert (
        error.message == "[request id: <id_unknown>] input 'INPUT0' for model 'add_sub' has 33 dimensions, more than 32"
    )


def test_zero_sized_dimensions() -> None:
    message = _request([_input("INPUT0", shape=(3, 0))], [b""])
    assert codec.infer_request_from_proto(message, LIMITS).inputs[0].data.shape == (3, 0)
    # numpy cannot even describe this empty shape: the other dims stay bounded
    huge = _request([_input("INPUT0", shape=(1 << 62, 1 << 62, 0))], [b""])
    assert isinstance(_error(huge), InvalidArgumentError)


def _with_param(key: str, field: str, value: object) -> Any:
    message = _request([_input("INPUT0")], [FOUR])
    setattr(message.parameters[key], field, value)
    return message


@pytest.mark.parametrize(
    ("key", "field", "value", "text"),
    [
        (
            "triton_x",
            "bool_param",
            True,
            "parameter keys starting with 'triton_' are reserved for Triton usage. Only the following keys "
            "starting with 'triton_' are allowed: triton_enable_empty_final_response",
        ),
        (
            "custom",
            "uint64_param",
            3,
            "invalid value type for 'custom' parameter, expected int64_param, bool_param, or string_param.",
        ),
        (
            "sequence_id",
            "double_param",
            1.5,
            "invalid value type for 'sequence_id' parameter, expected int64_param or string_param.",
        ),
        ("priority", "int64_param", -1, "invalid value for 'priority', expected value >= 0."),
        (
            "priority",
            "string_param",
            "x",
            "invalid value type for 'priority' parameter, expected int64_param or uint64_param.",
        ),
        (
            "sequence_start",
            "int64_param",
            1,
            "invalid value type for 'sequence_start' parameter, expected bool_param.",
        ),
        ("timeout", "uint64_param", 5, "invalid value type for 'timeout' parameter, expected int64_param."),
        (
            "triton_enable_empty_final_response",
            "int64_param",
            1,
            "invalid value type for 'triton_enable_empty_final_response' parameter, expected bool_param.",
        ),
    ],
)
def test_invalid_request_parameters(key: str, field: str, value: object, text: str) -> None:
    error = _error(_with_param(key, field, value))
    assert isinstance(error, InvalidArgumentError) and error.message == text


def test_request_parameters_become_plain_values() -> None:
    message = _request([_input("INPUT0")], [FOUR])
    message.parameters["sequence_id"].string_param = "s1"
    message.parameters["priority"].uint64_param = 3
    message.parameters["triton_enable_empty_final_response"].bool_param = True
    message.parameters["custom"].double_param = 0.25
    message.inputs[0].parameters["note"].string_param = "n"
    request = codec.infer_request_from_proto(message, LIMITS)
    assert request.parameters == {
        "sequence_id": "s1",
        "priority": 3,
        "triton_enable_empty_final_response": True,
        "custom": 0.25,
    }
    assert request.inputs[0].parameters == {"note": "n"}


def test_requested_outputs_carry_their_parameters() -> None:
    message = _request([_input("INPUT0")], [FOUR])
    out = message.outputs.add(name="OUTPUT0")
    out.parameters["classification"].int64_param = 2
    out.parameters["binary_data"].bool_param = True
    message.outputs.add(name="OUTPUT1")
    outputs = codec.infer_request_from_proto(message, LIMITS).outputs
    assert [(o.name, o.parameters) for o in outputs] == [
        ("OUTPUT0", {"classification": 2, "binary_data": True}),
        ("OUTPUT1", {}),
    ]


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("int64_param", 0, "invalid value for 'classification' parameter, expected >= 0"),
        ("int64_param", -2, "invalid value for 'classification' parameter, expected >= 0"),
        ("uint64_param", 2, "invalid value type for 'classification' parameter, expected int64_param"),
    ],
)
def test_invalid_classification(field: str, value: int, text: str) -> None:
    message = _request([_input("INPUT0")], [FOUR])
    setattr(message.outputs.add(name="OUTPUT0").parameters["classification"], field, value)
    assert _error(message).message == text


def _shm(tensor: Any, region: str = "r", offset: int | None = 0, size: int | None = 16) -> Any:
    tensor.parameters["shared_memory_region"].string_param = region
    if offset is not None:
        tensor.parameters["shared_memory_offset"].int64_param = offset
    if size is not None:
        tensor.parameters["shared_memory_byte_size"].int64_param = size
    return tensor


def test_shared_memory_inputs_are_placeholders_that_read_no_raw_entry() -> None:
    message = _request([_shm(_input("INPUT0"), offset=-1), _input("INPUT1")], [FOUR])
    output = message.outputs.add(name="OUTPUT0")
    _shm(output, "out", 4, 16)
    request = codec.infer_request_from_proto(message, LIMITS)
    placeholder, raw = request.inputs
    assert placeholder.data.size == 0 and placeholder.data.dtype == np.float32 and placeholder.shape == (4,)
    # a negative int64 is read as unsigned, as Triton does; the core's bounds check refuses it
    assert placeholder.parameters == {
        "shared_memory_region": "r",
        "shared_memory_offset": 2**64 - 1,
        "shared_memory_byte_size": 16,
    }
    assert raw.data.tobytes() == FOUR
    assert request.outputs[0].parameters == {
        "shared_memory_region": "out",
        "shared_memory_offset": 4,
        "shared_memory_byte_size": 16,
    }


@pytest.mark.parametrize(
    ("key", "field", "value", "text"),
    [
        (
            "shared_memory_region",
            "int64_param",
            3,
            "'shared_memory_region' parameter for tensor 'INPUT0', expected string_param.",
        ),
        (
            "shared_memory_offset",
            "string_param",
            "0",
            "'shared_memory_offset' parameter for tensor 'INPUT0', expected int64_param.",
        ),
        (
            "shared_memory_byte_size",
            "uint64_param",
            16,
            "'shared_memory_byte_size' parameter for tensor 'INPUT0', expected int64_param.",
        ),
    ],
)
def test_shared_memory_parameter_types(key: str, field: str, value: object, text: str) -> None:
    message = _request([_shm(_input("INPUT0"))])
    setattr(message.inputs[0].parameters[key], field, value)
    assert _error(message).message == f"invalid value type for {text}"


def test_shared_memory_parameters_come_together() -> None:
    no_size = _request([_shm(_input("INPUT0"), size=None)])
    assert _error(no_size).message == (
        "'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter for tensor 'INPUT0'"
    )
    no_region = _request([_input("INPUT0")], [FOUR])
    no_region.inputs[0].parameters["shared_memory_offset"].int64_param = 0
    assert _error(no_region).message == (
        "'shared_memory_offset' can not be specified without 'shared_memory_region' parameter for tensor 'INPUT0'"
    )
    with_contents = _request([_shm(_input("INPUT0", contents=pb.InferTensorContents(fp32_contents=[1, 2, 3, 4])))])
    assert _error(with_contents).message == (
        "unexpected 'content' provided when using shared memory for input tensor 'INPUT0' for model 'add_sub'"
    )
    with_raw = _request([_shm(_input("INPUT0"))], [FOUR])
    assert _error(with_raw).message == "unexpected additional input data for model 'add_sub'"


def test_shared_memory_outputs_get_an_empty_raw_entry() -> None:
    response = InferResponse(
        "m",
        "1",
        [
            Tensor("A", "FP32", (4,), np.zeros(4, dtype=np.float32), {"shared_memory_region": "out"}),
            Tensor("B", "FP32", (1,), np.ones(1, dtype=np.float32)),
        ],
    )
    message = codec.infer_response_to_proto(response)
    assert [(o.name, list(o.shape), dict(o.parameters)) for o in message.outputs] == [("A", [4], {}), ("B", [1], {})]
    assert list(message.raw_output_contents) == [b"", np.ones(1, dtype=np.float32).tobytes()]


def test_response_outputs_are_always_raw() -> None:
    strings = np.array([b"ab", "é", b""], dtype=object)
    response = InferResponse(
        "string_identity",
        "1",
        [
            Tensor("OUTPUT0", "BYTES", (3,), strings),
            Tensor("LENGTH", "INT32", (3,), np.array([2, 2, 0], dtype=">i4")),  # big-endian is swapped
            Tensor("T", "FP32", (2, 2), np.arange(4, dtype=np.float32).reshape(2, 2).T, {"p": 1}),
        ],
        id="x",
        parameters={"flag": True, "n": 2**63, "f": 0.5, "s": "v"},
    )
    message = codec.infer_response_to_proto(response)
    assert (message.model_name, message.model_version, message.id) == ("string_identity", "1", "x")
    assert [(o.name, o.datatype, list(o.shape)) for o in message.outputs] == [
        ("OUTPUT0", "BYTES", [3]),
        ("LENGTH", "INT32", [3]),
        ("T", "FP32", [2, 2]),
    ]
    assert not any(o.HasField("contents") for o in message.outputs)
    assert message.raw_output_contents[0] == _strings(b"ab", "é".encode(), b"")
    assert message.raw_output_contents[1] == struct.pack("<3i", 2, 2, 0)
    assert message.raw_output_contents[2] == np.array([[0, 2], [1, 3]], dtype="<f4").tobytes()
    assert message.outputs[2].parameters["p"].int64_param == 1
    params = message.parameters
    assert params["flag"].bool_param is True and params["n"].uint64_param == 2**63
    assert params["f"].double_param == 0.5 and params["s"].string_param == "v"


def test_metadata_statistics_and_index_messages() -> None:
    server = codec.server_metadata_to_proto(ServerMetadata("triton", "2.51.0", ("a", "b")))
    assert (server.name, server.version, list(server.extensions)) == ("triton", "2.51.0", ["a", "b"])
    model = codec.model_metadata_to_proto(
        ModelMetadata(
            "m",
            ("1",),
            "python",
            (TensorMetadata("I", "FP32", (-1, 4)),),
            (TensorMetadata("O", "BYTES", (1,)),),
        )
    )
    assert list(model.versions) == ["1"] and model.platform == "python"
    assert (model.inputs[0].name, list(model.inputs[0].shape), model.outputs[0].datatype) == (
        "I",
        [-1, 4],
        "BYTES",
    )
    stats = admin.statistics_to_proto([ModelStatistics("m", "1", 5, 2, 1, success=Duration(2, 30))])
    entry = stats.model_stats[0]
    assert (entry.name, entry.version, entry.last_inference, entry.inference_count) == ("m", "1", 5, 2)
    assert (entry.inference_stats.success.count, entry.inference_stats.success.ns) == (2, 30)
    index = admin.repository_index_to_proto([ModelIndexEntry("a", "1", "READY"), ModelIndexEntry("b")])
    assert [(m.name, m.version, m.state, m.reason) for m in index.models] == [
        ("a", "1", "READY", ""),
        ("b", "", "", ""),
    ]


def _load(**params: tuple[str, object]) -> tuple[str | None, dict[str, bytes] | None]:
    message = pb.RepositoryModelLoadRequest(model_name="m")
    for key, (field, value) in params.items():
        setattr(message.parameters[key.replace("__", ":").replace("_SLASH_", "/")], field, value)
    return admin.load_parameters(message.parameters, LIMITS)


def test_load_parameters() -> None:
    assert _load() == (None, None)
    assert _load(config=("string_param", "{}")) == ("{}", None)
    files = _load(config=("string_param", "{}"), file__1_SLASH_model=("bytes_param", b"x"))
    assert files == ("{}", {"1/model": b"x"})


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"config": ("bytes_param", b"{}")}, "invalid value type for load parameter 'config', expected string_param."),
        ({"file__1": ("string_param", "x")}, "invalid value type for load parameter 'file:1', expected bytes_param."),
        ({"foo": ("bool_param", True)}, "unrecognized load parameter 'foo'."),
    ],
)
def test_bad_load_parameters(params: dict[str, tuple[str, object]], text: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        _load(**params)
    assert info.value.message == text


def test_oversized_load_parameters() -> None:
    message = pb.RepositoryModelLoadRequest(model_name="m")
    message.parameters["config"].string_param = "{}"
    message.parameters["file:1/a"].bytes_param = bytes(10)
    with pytest.raises(ResourceExhaustedError):
        admin.load_parameters(message.parameters, Limits(max_request_bytes=11))


def test_unload_dependents() -> None:
    message = pb.RepositoryModelUnloadRequest(model_name="m")
    assert admin.unload_dependents(message.parameters) is False
    message.parameters["unload_dependents"].bool_param = True
    assert admin.unload_dependents(message.parameters) is True
    message.parameters["unload_dependents"].string_param = "true"
    with pytest.raises(InvalidArgumentError):
        admin.unload_dependents(message.parameters)


def test_log_and_trace_settings() -> None:
    request = pb.LogSettingsRequest()
    request.settings["log_info"].uint32_param = 1  # stays an int: the core refuses it for a boolean
    request.settings["log_format"].string_param = "ISO8601"
    request.settings["other"]  # an unknown key without a value is ignored
    assert admin.log_changes(request.settings) == {"log_info": 1, "log_format": "ISO8601"}
    unset = pb.LogSettingsRequest()
    unset.settings["log_verbose_level"]
    with pytest.raises(InvalidArgumentError, match="expect int32 for 'log_verbose_level'"):
        admin.log_changes(unset.settings)
    reply = admin.log_settings_to_proto({"log_info": True, "log_verbose_level": 2, "log_file": ""})
    assert [
        reply.settings[k].WhichOneof("parameter_choice") for k in ("log_info", "log_verbose_level", "log_file")
    ] == [
        "bool_param",
        "uint32_param",
        "string_param",
    ]
    trace = pb.TraceSettingRequest()
    trace.settings["trace_rate"].value.append("5")
    trace.settings["trace_count"]  # no values: clear
    assert admin.trace_changes(trace.settings) == {"trace_rate": ["5"], "trace_count": None}
    assert admin.trace_settings_to_proto({"trace_level": ["OFF"]}).settings["trace_level"].value == ["OFF"]


def test_shared_memory_status_messages() -> None:
    regions = [SharedMemoryRegionStatus("r", "/k", 8, 16)]
    system = admin.system_shm_status_to_proto(regions).regions["r"]
    assert (system.name, system.key, system.offset, system.byte_size) == ("r", "/k", 8, 16)
    cuda = admin.cuda_shm_status_to_proto(regions).regions["r"]
    assert (cuda.name, cuda.device_id, cuda.byte_size) == ("r", 0, 16)


def test_bytes_elements_are_capped_per_request_over_all_inputs() -> None:
    limits = Limits(max_bytes_elements=5)
    strings = _strings(b"a", b"b", b"c")
    message = _request([_input("A", "BYTES", (3,)), _input("B", "BYTES", (3,))], [strings, strings])
    error = _error(message, limits)
    assert isinstance(error, InvalidArgumentError)
    assert error.message == (
        "[request id: <id_unknown>] input 'B' for model 'add_sub' brings the request to 6 BYTES elements, "
        "more than 5 (--max-bytes-elements)"
    )
