"""Pure conversions between Triton's gRPC inference and metadata messages and Seawall's core types (no IO, no grpc).

Imports `core.types`, `errors`, `options`, `grpc.parameters` and tritonclient's generated modules.
Hostile sizes and shapes are checked against `Limits` here, before numpy allocates anything.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from seawall.core.raw import BytesFormatError, checked_shape, object_array, split_bytes
from seawall.core.raw import encode as encode_raw
from seawall.core.types import (
    ELEMENT_SIZES,
    NUMPY_DTYPES,
    InferRequest,
    InferResponse,
    ModelMetadata,
    RequestedOutput,
    ServerMetadata,
    Tensor,
    TensorMetadata,
    element_count,
)
from seawall.errors import InvalidArgumentError, ResourceExhaustedError
from seawall.frontends.grpc.parameters import (
    SHM_REGION,
    output_parameters,
    request_parameters,
    set_parameters,
    tensor_parameters,
)
from seawall.options import Limits
from seawall.security.parameters import check_parameter_count

_LENGTH = struct.Struct("<I")  # the 4-byte little-endian length before each BYTES element
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
#: the little-endian numpy dtype of each fixed-size datatype (raw tensor bytes are little-endian)
_RAW_DTYPES = {name: dtype.newbyteorder("<") for name, dtype in NUMPY_DTYPES.items() if name in ELEMENT_SIZES}
#: the typed field that carries each datatype (FP16 and BF16 have none: raw only)
_FIELD_FOR = {
    **dict.fromkeys(("INT8", "INT16", "INT32"), "int_contents"),
    **dict.fromkeys(("UINT8", "UINT16", "UINT32"), "uint_contents"),
    **{label: field for field, label, _ in _CONTENTS_FIELDS if label not in ("INT32", "UINT32")},
}


def request_tag(request_id: str) -> str:
    """Triton's prefix of core validation messages: `[request id: <id>] `."""
    return f"[request id: {request_id or '<id_unknown>'}] "


def too_many_tensors(model: str, request_id: str) -> ResourceExhaustedError:
    """The error of a request with more inputs than `--max-inputs` or outputs than `--max-outputs`."""
    return ResourceExhaustedError(f"{request_tag(request_id)}too many inputs or outputs for model '{model}'")


def _check_data(nbytes: int, name: str, model: str, tag: str, limits: Limits) -> None:
    """Refuse data that is itself over the tensor byte limit: RESOURCE_EXHAUSTED, whatever the shape says (a shape
    that disagrees with its data is INVALID_ARGUMENT however large it is, as in Triton).

    Raises: ResourceExhaustedError.
    """
    if nbytes > limits.max_tensor_bytes:
        raise ResourceExhaustedError(
            f"{tag}input '{name}' for model '{model}' carries {nbytes} bytes of data, more than "
            f"{limits.max_tensor_bytes} (--max-tensor-bytes)"
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
    try:
        return object_array(split_bytes(raw, count, _MAX_EXTRA_COUNTED))
    except BytesFormatError as exc:
        if exc.kind == BytesFormatError.TRUNCATED_LENGTH:
            raise InvalidArgumentError(
                f"{tag}incomplete string length indicator for inference input '{name}' for model '{model}', "
                f"expecting 4 bytes but only {exc.available} bytes available. "
                "Please make sure the string length indicator is in one buffer."
            ) from None
        if exc.kind == BytesFormatError.TRUNCATED_ELEMENT:
            raise InvalidArgumentError(
                f"incomplete string data for inference input '{name}', expecting string of length {exc.length} "
                f"but only {exc.available} bytes available"
            ) from None
        number = (
            str(exc.found) if exc.found <= count + _MAX_EXTRA_COUNTED else f"more than {count + _MAX_EXTRA_COUNTED}"
        )
        raise InvalidArgumentError(
            f"{tag}unexpected number of string elements {number} for inference input '{name}' "
            f"for model '{model}', expecting {count}"
        ) from None


def _tensor_from_raw(inp: Any, raw: bytes | memoryview, model: str, tag: str, limits: Limits, strings: int) -> Tensor:
    name: str = inp.name
    datatype: str = inp.datatype
    if datatype not in NUMPY_DTYPES:
        raise InvalidArgumentError(f"invalid datatype for input {name}")
    _check_data(len(raw), name, model, tag, limits)
    shape, count = checked_shape(list(inp.shape), datatype, name, model, limits, tag, strings)
    if datatype == "BYTES":
        # elements must be bytes objects, not views: slice them from a bytes copy
        data = bytes_from_raw(bytes(raw), count, name, model, tag).reshape(shape)
        return Tensor(name, datatype, shape, data)
    dtype = _RAW_DTYPES.get(datatype)
    if dtype is None:
        raise InvalidArgumentError(f"invalid datatype for input {name}")
    expected = count * dtype.itemsize  # <= max_tensor_bytes: checked_shape bounds the declared bytes
    if len(raw) != expected:
        raise InvalidArgumentError(
            f"{tag}input byte size mismatch for input '{name}' for model '{model}'. Expected {expected}, got {len(raw)}"
        )
    # a read-only view on the message's bytes (or on the request, see `wire`): no copy
    data = np.frombuffer(raw, dtype=dtype, count=count)
    return Tensor(name, datatype, shape, data if len(shape) == 1 else data.reshape(shape))


def _tensor_from_typed(inp: Any, model: str, tag: str, limits: Limits, strings: int) -> Tensor:
    name: str = inp.name
    datatype: str = inp.datatype
    if datatype not in NUMPY_DTYPES:
        raise InvalidArgumentError(f"invalid datatype for input {name}")
    field = _FIELD_FOR.get(datatype)
    if field is not None:  # the data of the datatype's field (values in other fields are refused later)
        values = getattr(inp.contents, field)
        size = sum(map(len, values)) if datatype == "BYTES" else len(values) * ELEMENT_SIZES[datatype]
        _check_data(size, name, model, tag, limits)
    shape, count = checked_shape(list(inp.shape), datatype, name, model, limits, tag, strings)
    data = tensor_from_contents(inp.contents, datatype, count, name, model, tag)
    return Tensor(name, datatype, shape, data.reshape(shape))


def _tensor_from_shm(inp: Any, model: str, tag: str, limits: Limits, strings: int) -> Tensor:
    """A placeholder tensor: the core reads the data from the region named in its parameters."""
    if inp.HasField("contents"):
        raise InvalidArgumentError(
            f"unexpected 'content' provided when using shared memory for input tensor '{inp.name}' for model '{model}'"
        )
    datatype: str = inp.datatype
    dtype = NUMPY_DTYPES.get(datatype)
    if dtype is None:
        raise InvalidArgumentError(f"invalid datatype for input {inp.name}")
    shape, _ = checked_shape(list(inp.shape), datatype, inp.name, model, limits, tag, strings)
    return Tensor(inp.name, datatype, shape, np.empty(0, dtype=dtype))


def infer_request_from_proto(
    message: Any, limits: Limits, raw_contents: Sequence[bytes | memoryview] | None = None
) -> InferRequest:
    """Decode a ModelInferRequest; raw entries are consumed in order by inputs without typed `contents` or a
    shared-memory region (those get an empty placeholder the core fills from the region). `raw_contents`, when
    given, replaces the message's own `raw_input_contents` (views split from the wire by `wire`).

    Raises:
        InvalidArgumentError: contents and raw data mixed, data missing or left over, bad sizes or parameters, a
            shape over the element or byte limits or one that disagrees with its data (however large).
        ResourceExhaustedError: data that is itself over the tensor byte limit, or too many inputs/outputs.
    """
    model: str = message.model_name
    request_id: str = message.id
    tag = request_tag(request_id)
    tensors, requested = message.inputs, message.outputs
    if len(tensors) > limits.max_inputs or len(requested) > limits.max_outputs:
        raise too_many_tensors(model, request_id)
    check_parameter_count(len(message.parameters), limits)
    raw = message.raw_input_contents if raw_contents is None else raw_contents
    raw_count = len(raw)
    raw_index = 0
    inputs: list[Tensor] = []
    strings = 0  # BYTES elements of the inputs so far (bounded per request)
    for inp in tensors:
        check_parameter_count(len(inp.parameters), limits, inp.name, "input")
        params = tensor_parameters(inp.name, inp.parameters) if inp.parameters else {}
        if SHM_REGION in params:
            tensor = _tensor_from_shm(inp, model, tag, limits, strings)
        elif inp.HasField("contents"):
            if raw_count:
                raise InvalidArgumentError(
                    f"contents field must not be specified when using raw_input_contents for '{inp.name}' "
                    f"for model '{model}'"
                )
            tensor = _tensor_from_typed(inp, model, tag, limits, strings)
        else:
            if raw_index >= raw_count:
                raise InvalidArgumentError(
                    f"unable to find data for input tensor '{inp.name}' for model '{model}' in request."
                )
            tensor = _tensor_from_raw(inp, raw[raw_index], model, tag, limits, strings)
            raw_index += 1
        if params:
            tensor.parameters = params
        if tensor.datatype == "BYTES":
            strings += element_count(tensor.shape)
        inputs.append(tensor)
    if raw_index != raw_count:
        # Triton ignores surplus raw entries; Seawall refuses data it would not read
        raise InvalidArgumentError(f"unexpected additional input data for model '{model}'")
    outputs = []
    for out in requested:
        check_parameter_count(len(out.parameters), limits, out.name, "output")
        outputs.append(RequestedOutput(out.name, output_parameters(out.name, out.parameters) if out.parameters else {}))
    parameters = request_parameters(message.parameters) if message.parameters else {}
    return InferRequest(model, inputs, message.model_version, request_id, outputs, parameters)


def infer_response_to_proto(response: InferResponse) -> Any:
    """Build a ModelInferResponse; every output travels in `raw_output_contents`, never typed contents
    (an output written to shared memory has an empty entry there)."""
    message = service_pb2.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    if response.parameters:
        set_parameters(message.parameters, response.parameters)
    raw = message.raw_output_contents
    for tensor in response.outputs:
        out = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if SHM_REGION in tensor.parameters:
            raw.append(b"")  # written to the region; an empty entry keeps raw indexes aligned with outputs (Triton)
            continue
        if tensor.parameters:
            set_parameters(out.parameters, tensor.parameters)
        raw.append(bytes(encode_raw(tensor)))
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
