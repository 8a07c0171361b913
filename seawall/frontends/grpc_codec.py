"""Pure conversions between Triton's gRPC protobuf messages and Seawall's core types (no IO, no grpc).

Imports `core.types`, `errors`, `options` and tritonclient's generated modules. Hostile sizes and shapes
are checked against `Limits` here, before numpy allocates anything.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from seawall.core.types import (
    ELEMENT_SIZES,
    NUMPY_DTYPES,
    Duration,
    InferRequest,
    InferResponse,
    ModelIndexEntry,
    ModelMetadata,
    ModelStatistics,
    ParamValue,
    RequestedOutput,
    ServerMetadata,
    Tensor,
    TensorMetadata,
)
from seawall.errors import InvalidArgumentError, ResourceExhaustedError, UnsupportedError
from seawall.options import Limits

_EMPTY_FINAL = "triton_enable_empty_final_response"
_LENGTH = struct.Struct("<I")  # the 4-byte little-endian length before each BYTES element
_MAX_DIMS = 64  # numpy's limit on the number of dimensions
#: extra BYTES elements counted for an exact error message before giving up (bounds the work)
_MAX_EXTRA_COUNTED = 4096

#: InferTensorContents fields in proto order, with the datatype Triton names when one is unexpected
_CONTENTS_FIELDS = (
    ("bool_contents", "BOOL", np.dtype(np.bool_)),
    ("int_contents", "INT32", np.dtype(np.int32)),
    ("int64_contents", "INT64", np.dtype(np.int64)),
    ("uint_contents", "UINT32", np.dtype(np.uint32)),
    ("uint64_contents", "UINT64", np.dtype(np.uint64)),
    ("fp32_contents", "FP32", np.dtype(np.float32)),
    ("fp64_contents", "FP64", np.dtype(np.float64)),
    ("bytes_contents", "BYTES", np.dtype(np.object_)),
)
_FIELD_DTYPES = {field: dtype for field, _, dtype in _CONTENTS_FIELDS}
#: the typed field that carries each datatype (FP16 and BF16 have none: raw only)
_FIELD_FOR = {
    **dict.fromkeys(("INT8", "INT16", "INT32"), "int_contents"),
    **dict.fromkeys(("UINT8", "UINT16", "UINT32"), "uint_contents"),
    **{label: field for field, label, _ in _CONTENTS_FIELDS if label not in ("INT32", "UINT32")},
}


def request_tag(request_id: str) -> str:
    """Triton's prefix of core validation messages: `[request id: <id>] `."""
    return f"[request id: {request_id or '<id_unknown>'}] "


def param_value(name: str, param: Any) -> ParamValue:
    """The plain value of an InferParameter (bool, int64, string or double; uint64 only where allowed).

    Raises:
        InvalidArgumentError: the oneof is unset or holds uint64 for a custom key.
    """
    kind = param.WhichOneof("parameter_choice")
    if kind in ("bool_param", "int64_param", "string_param", "double_param"):
        value: ParamValue = getattr(param, kind)
        return value
    raise InvalidArgumentError(
        f"invalid value type for '{name}' parameter, expected int64_param, bool_param, or string_param."
    )


def _typed_param(name: str, param: Any, kinds: tuple[str, ...], end: str = ".") -> ParamValue:
    kind = param.WhichOneof("parameter_choice")
    if kind not in kinds:
        expected = " or ".join(kinds)
        raise InvalidArgumentError(f"invalid value type for '{name}' parameter, expected {expected}{end}")
    value: ParamValue = getattr(param, kind)
    return value


def request_parameters(params: Mapping[str, Any]) -> dict[str, ParamValue]:
    """Request-level parameters, checked the way Triton checks the keys it gives a meaning to.

    Raises:
        InvalidArgumentError: a reserved `triton_*` key, or a value of the wrong type for its key.
    """
    converted: dict[str, ParamValue] = {}
    for name, param in params.items():
        if name == "sequence_id":
            converted[name] = _typed_param(name, param, ("int64_param", "string_param"))
        elif name in ("sequence_start", "sequence_end", _EMPTY_FINAL):
            converted[name] = _typed_param(name, param, ("bool_param",))
        elif name == "priority":
            value = _typed_param(name, param, ("int64_param", "uint64_param"))
            if isinstance(value, int) and value < 0:
                raise InvalidArgumentError("invalid value for 'priority', expected value >= 0.")
            converted[name] = value
        elif name == "timeout":
            converted[name] = _typed_param(name, param, ("int64_param",))
        elif name.startswith("triton_"):
            raise InvalidArgumentError(
                "parameter keys starting with 'triton_' are reserved for Triton usage. Only the following "
                f"keys starting with 'triton_' are allowed: {_EMPTY_FINAL}"
            )
        else:
            converted[name] = param_value(name, param)
    return converted


def _tensor_parameters(name: str, params: Mapping[str, Any]) -> dict[str, ParamValue]:
    if "shared_memory_region" in params:
        raise UnsupportedError(f"shared memory is not supported yet (tensor '{name}')")
    return {key: param_value(key, param) for key, param in params.items()}


def _output_parameters(name: str, params: Mapping[str, Any]) -> dict[str, ParamValue]:
    if "classification" in params:
        # Triton's text says ">= 0" but it refuses 0 as well
        value = _typed_param("classification", params["classification"], ("int64_param",), end="")
        if isinstance(value, int) and value <= 0:
            raise InvalidArgumentError("invalid value for 'classification' parameter, expected >= 0")
    return _tensor_parameters(name, params)


def checked_element_count(shape: Sequence[int], name: str, model: str, tag: str, limits: Limits) -> int:
    """The element count of `shape`, refusing negative dims and counts over the limit without big products.

    Raises:
        InvalidArgumentError: a negative dimension, or more dimensions than numpy can hold.
        ResourceExhaustedError: more elements than `limits.max_tensor_elements`.
    """
    if len(shape) > _MAX_DIMS:
        raise InvalidArgumentError(
            f"{tag}input '{name}' for model '{model}' has {len(shape)} dimensions, more than {_MAX_DIMS}"
        )
    if shape and min(shape) < 0:
        dims = ",".join(str(d) for d in shape)
        raise InvalidArgumentError(
            f"{tag}invalid shape [{dims}] for input '{name}' for model '{model}', dimensions must be >= 0"
        )
    count = 1
    for dim in shape:
        # the non-zero dims are bounded too: numpy refuses a shape whose product overflows, even with a 0 dim
        count *= dim or 1
        if count > limits.max_tensor_elements:
            raise ResourceExhaustedError(
                f"{tag}input '{name}' for model '{model}' has more than {limits.max_tensor_elements} elements"
            )
    return 0 if 0 in shape else count


def _check_bytes(nbytes: int, name: str, model: str, tag: str, limits: Limits) -> None:
    if nbytes > limits.max_tensor_bytes:
        raise ResourceExhaustedError(
            f"{tag}input '{name}' for model '{model}' is larger than {limits.max_tensor_bytes} bytes"
        )


def tensor_from_contents(contents: Any, datatype: str, count: int, name: str, model: str, tag: str) -> np.ndarray:
    """A flat array from typed `contents`; only the field matching `datatype` may hold values.

    Integers narrower than the field wrap like a C cast (Triton keeps the low bytes).

    Raises:
        InvalidArgumentError: another field holds values, or the element count differs from the shape's.
    """
    field = _FIELD_FOR.get(datatype)
    for other, label, _ in _CONTENTS_FIELDS:
        if other != field and len(getattr(contents, other)):
            raise InvalidArgumentError(
                f"unexpected explicit tensor data for input tensor '{name}' for model '{model}' "
                f"of type '{label}', expected datatype '{datatype}'"
            )
    values = getattr(contents, field) if field is not None else ()
    if datatype == "BYTES":
        if len(values) != count:
            raise InvalidArgumentError(
                f"{tag}expected {count} string elements for inference input '{name}' for model '{model}', "
                f"got {len(values)}"
            )
        strings = np.empty(count, dtype=np.object_)
        strings[:] = list(values)
        return strings
    size = ELEMENT_SIZES[datatype]
    if len(values) != count:
        raise InvalidArgumentError(
            f"{tag}input byte size mismatch for input '{name}' for model '{model}'. "
            f"Expected {count * size}, got {len(values) * size}"
        )
    if field is None:
        return np.empty(0, dtype=NUMPY_DTYPES[datatype])
    wide = np.fromiter(values, dtype=_FIELD_DTYPES[field], count=count)
    return wide.astype(NUMPY_DTYPES[datatype], copy=False)


def bytes_from_raw(raw: bytes, count: int, name: str, model: str, tag: str) -> np.ndarray:
    """Split length-prefixed BYTES elements into a flat object array of `count` bytes objects.

    Surplus elements are only counted (for the message), at most `_MAX_EXTRA_COUNTED` of them.

    Raises:
        InvalidArgumentError: a truncated length or element, or a number of elements other than `count`.
    """
    items: list[bytes] = []
    found, offset, end = 0, 0, len(raw)
    unpack = _LENGTH.unpack_from
    while offset < end and found <= count + _MAX_EXTRA_COUNTED:
        if end - offset < 4:
            raise InvalidArgumentError(
                f"{tag}incomplete string length indicator for inference input '{name}' for model '{model}', "
                f"expecting 4 bytes but only {end - offset} bytes available. "
                "Please make sure the string length indicator is in one buffer."
            )
        length = unpack(raw, offset)[0]
        offset += 4
        if end - offset < length:
            raise InvalidArgumentError(
                f"incomplete string data for inference input '{name}', expecting string of length {length} "
                f"but only {end - offset} bytes available"
            )
        if found < count:
            items.append(raw[offset : offset + length])
        found += 1
        offset += length
    if found != count:
        number = str(found) if offset == end else f"more than {count + _MAX_EXTRA_COUNTED}"
        raise InvalidArgumentError(
            f"{tag}unexpected number of string elements {number} for inference input '{name}' "
            f"for model '{model}', expecting {count}"
        )
    strings = np.empty(count, dtype=np.object_)
    strings[:] = items
    return strings


def serialize_bytes(data: np.ndarray) -> bytes:
    """BYTES elements as concatenated (4-byte little-endian length, bytes) pairs; str elements as UTF-8."""
    parts: list[bytes] = []
    pack = _LENGTH.pack
    for item in data.reshape(-1):
        if not isinstance(item, bytes):
            item = item.encode() if isinstance(item, str) else str(item).encode()
        parts.append(pack(len(item)))
        parts.append(item)
    return b"".join(parts)


def _tensor_from_raw(inp: Any, raw: bytes, model: str, tag: str, limits: Limits) -> Tensor:
    name: str = inp.name
    datatype: str = inp.datatype
    shape = tuple(inp.shape)
    count = checked_element_count(shape, name, model, tag, limits)
    if datatype == "BYTES":
        _check_bytes(len(raw), name, model, tag, limits)
        data = bytes_from_raw(raw, count, name, model, tag).reshape(shape)
        return Tensor(name, datatype, shape, data)
    size = ELEMENT_SIZES.get(datatype)
    if size is None:
        raise InvalidArgumentError(f"invalid datatype for input {name}")
    expected = count * size
    _check_bytes(expected, name, model, tag, limits)
    if len(raw) != expected:
        raise InvalidArgumentError(
            f"{tag}input byte size mismatch for input '{name}' for model '{model}'. Expected {expected}, got {len(raw)}"
        )
    # a read-only view on the message's bytes: no copy
    data = np.frombuffer(raw, dtype=NUMPY_DTYPES[datatype].newbyteorder("<"), count=count).reshape(shape)
    return Tensor(name, datatype, shape, data)


def _tensor_from_typed(inp: Any, model: str, tag: str, limits: Limits) -> Tensor:
    name: str = inp.name
    datatype: str = inp.datatype
    if datatype not in NUMPY_DTYPES:
        raise InvalidArgumentError(f"invalid datatype for input {name}")
    shape = tuple(inp.shape)
    count = checked_element_count(shape, name, model, tag, limits)
    _check_bytes(count * ELEMENT_SIZES.get(datatype, 0), name, model, tag, limits)
    data = tensor_from_contents(inp.contents, datatype, count, name, model, tag)
    return Tensor(name, datatype, shape, data.reshape(shape))


def infer_request_from_proto(message: Any, limits: Limits) -> InferRequest:
    """Decode a ModelInferRequest; raw entries are consumed in order by inputs without typed `contents`.

    Raises:
        InvalidArgumentError: contents and raw data mixed, data missing or left over, bad sizes or parameters.
        ResourceExhaustedError: a tensor over the element or byte limit, or too many inputs/outputs.
        UnsupportedError: shared-memory tensors.
    """
    model: str = message.model_name
    tag = request_tag(message.id)
    if len(message.inputs) > limits.max_inputs or len(message.outputs) > limits.max_outputs:
        raise ResourceExhaustedError(f"{tag}too many inputs or outputs for model '{model}'")
    raw_contents = message.raw_input_contents
    raw_index = 0
    inputs: list[Tensor] = []
    for inp in message.inputs:
        params = _tensor_parameters(inp.name, inp.parameters) if inp.parameters else {}
        if inp.HasField("contents"):
            if raw_contents:
                raise InvalidArgumentError(
                    f"contents field must not be specified when using raw_input_contents for '{inp.name}' "
                    f"for model '{model}'"
                )
            tensor = _tensor_from_typed(inp, model, tag, limits)
        else:
            if raw_index >= len(raw_contents):
                raise InvalidArgumentError(
                    f"unable to find data for input tensor '{inp.name}' for model '{model}' in request."
                )
            tensor = _tensor_from_raw(inp, raw_contents[raw_index], model, tag, limits)
            raw_index += 1
        tensor.parameters = params
        inputs.append(tensor)
    if raw_index != len(raw_contents):
        # Triton ignores surplus raw entries; Seawall refuses data it would not read
        raise InvalidArgumentError(f"unexpected additional input data for model '{model}'")
    outputs = [
        RequestedOutput(out.name, _output_parameters(out.name, out.parameters) if out.parameters else {})
        for out in message.outputs
    ]
    parameters = request_parameters(message.parameters) if message.parameters else {}
    return InferRequest(model, inputs, message.model_version, message.id, outputs, parameters)


def set_parameters(target: Any, params: Mapping[str, ParamValue]) -> None:
    """Fill a protobuf map<string, InferParameter> from plain values (bool before int: bool is an int)."""
    for key, value in params.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            if value > 0x7FFFFFFFFFFFFFFF:
                param.uint64_param = value
            else:
                param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = str(value)


def output_bytes(tensor: Tensor) -> bytes:
    """The raw little-endian, row-major bytes of an output (BYTES with 4-byte length prefixes)."""
    if tensor.datatype == "BYTES":
        return serialize_bytes(tensor.data)
    data = tensor.data
    if data.dtype.byteorder == ">" or not data.flags.c_contiguous:
        data = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<"))
    return data.tobytes()


def infer_response_to_proto(response: InferResponse) -> Any:
    """Build a ModelInferResponse; every output travels in `raw_output_contents`, never typed contents."""
    message = service_pb2.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    if response.parameters:
        set_parameters(message.parameters, response.parameters)
    raw = message.raw_output_contents
    for tensor in response.outputs:
        out = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if tensor.parameters:
            set_parameters(out.parameters, tensor.parameters)
        raw.append(output_bytes(tensor))
    return message


def _tensor_metadata(items: Iterable[TensorMetadata]) -> list[Any]:
    return [
        service_pb2.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape) for t in items
    ]


def server_metadata_to_proto(meta: ServerMetadata) -> Any:
    return service_pb2.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=meta.extensions)


def model_metadata_to_proto(meta: ModelMetadata) -> Any:
    return service_pb2.ModelMetadataResponse(
        name=meta.name,
        versions=meta.versions,
        platform=meta.platform,
        inputs=_tensor_metadata(meta.inputs),
        outputs=_tensor_metadata(meta.outputs),
    )


def repository_index_to_proto(entries: Iterable[ModelIndexEntry]) -> Any:
    index = service_pb2.RepositoryIndexResponse.ModelIndex
    return service_pb2.RepositoryIndexResponse(
        models=[index(name=e.name, version=e.version, state=e.state, reason=e.reason) for e in entries]
    )


def _duration(value: Duration) -> Any:
    return service_pb2.StatisticDuration(count=value.count, ns=value.ns)


def statistics_to_proto(stats: Iterable[ModelStatistics]) -> Any:
    """A ModelStatisticsResponse (batch, memory and response statistics are not collected yet)."""
    return service_pb2.ModelStatisticsResponse(
        model_stats=[
            service_pb2.ModelStatistics(
                name=s.name,
                version=s.version,
                last_inference=s.last_inference,
                inference_count=s.inference_count,
                execution_count=s.execution_count,
                inference_stats=service_pb2.InferStatistics(
                    success=_duration(s.success),
                    fail=_duration(s.fail),
                    queue=_duration(s.queue),
                    compute_input=_duration(s.compute_input),
                    compute_infer=_duration(s.compute_infer),
                    compute_output=_duration(s.compute_output),
                    cache_hit=_duration(s.cache_hit),
                    cache_miss=_duration(s.cache_miss),
                ),
            )
            for s in stats
        ]
    )
