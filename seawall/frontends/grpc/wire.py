"""The protobuf wire format of the ModelInfer hot path: a serialized ModelInferRequest split into its header and
views of its `raw_input_contents`, and a serialized ModelInferResponse whose raw outputs are written once.

Imports `core.types`, `core.raw`, `errors`, `grpc.parameters` and tritonclient's generated modules;
pure functions, no IO, no grpc. The generated (upb) classes parse and write everything but the tensor bytes,
which never pass through a message object: each would be copied into it and again out of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from seawall.core.raw import encode as encode_raw
from seawall.core.types import InferResponse, ParamValue
from seawall.errors import InvalidArgumentError
from seawall.frontends.grpc.parameters import SHM_REGION, set_parameters

#: below this many bytes a request is parsed whole: copying small tensors costs less than splitting them out
SPLIT_MIN_BYTES = 32 * 1024
_RAW_INPUT_FIELD = 7  # ModelInferRequest.raw_input_contents
_LENGTH_DELIMITED = 2
_RAW_OUTPUT_TAG = b"\x32"  # ModelInferResponse.raw_output_contents: field 6, length-delimited
_STREAM_INFER_RESPONSE_TAG = b"\x12"  # ModelStreamInferResponse.infer_response: field 2, length-delimited
_FIXED_SIZES = {1: 8, 5: 4}  # wire types fixed64 and fixed32
_PARSE_ERROR = "Unable to parse request"  # Triton's text (its code is INTERNAL)


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    """The base-128 varint at `pos` and the position after it.

    Raises:
        InvalidArgumentError: the varint is truncated or longer than 10 bytes.
    """
    value, shift, end = 0, 0, len(data)
    while pos < end and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise InvalidArgumentError(_PARSE_ERROR)


def encode_varint(value: int) -> bytes:
    """`value` (>= 0) as a base-128 varint."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def split_raw_inputs(data: bytes) -> tuple[bytes, list[memoryview]]:
    """The request without its `raw_input_contents` fields, and those contents as read-only views of `data`.

    Raises:
        InvalidArgumentError: a truncated field or an unknown wire type (groups are not valid here).
    """
    view = memoryview(data).toreadonly()
    kept: list[memoryview] = []
    raw: list[memoryview] = []
    pos, end = 0, len(view)
    while pos < end:
        start = pos
        key, pos = _varint(view, pos)
        wire = key & 7
        if wire == _LENGTH_DELIMITED:
            length, pos = _varint(view, pos)
            if length > end - pos:
                raise InvalidArgumentError(_PARSE_ERROR)
            if key >> 3 == _RAW_INPUT_FIELD:
                raw.append(view[pos : pos + length])
            else:
                kept.append(view[start : pos + length])
            pos += length
            continue
        if wire == 0:
            _, pos = _varint(view, pos)
        elif wire in _FIXED_SIZES and pos + _FIXED_SIZES[wire] <= end:
            pos += _FIXED_SIZES[wire]
        else:
            raise InvalidArgumentError(_PARSE_ERROR)
        kept.append(view[start:pos])
    return b"".join(kept), raw


def parse_infer_request(data: bytes) -> tuple[Any, Sequence[bytes | memoryview]]:
    """A serialized ModelInferRequest as (message, raw input contents); large contents stay views of `data`.

    Raises:
        InvalidArgumentError: the bytes are not a ModelInferRequest.
    """
    try:
        if len(data) < SPLIT_MIN_BYTES:
            message = service_pb2.ModelInferRequest.FromString(data)
            return message, message.raw_input_contents
        header, raw = split_raw_inputs(data)
        return service_pb2.ModelInferRequest.FromString(header), raw
    except DecodeError:
        raise InvalidArgumentError(_PARSE_ERROR) from None


def _response_parts(response: InferResponse, parameters: Mapping[str, ParamValue]) -> list[bytes | memoryview]:
    head = service_pb2.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    if parameters:
        set_parameters(head.parameters, parameters)
    contents: list[bytes | memoryview] = []
    for tensor in response.outputs:
        out = head.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if SHM_REGION in tensor.parameters:
            contents.append(b"")  # written to the region; the empty entry keeps raw indexes aligned (Triton)
            continue
        if tensor.parameters:
            set_parameters(out.parameters, tensor.parameters)
        contents.append(encode_raw(tensor))
    # fields 1-5 from the message, then field 6 (raw_output_contents) appended: still in field order
    parts: list[bytes | memoryview] = [head.SerializeToString()]
    for content in contents:
        parts.append(_RAW_OUTPUT_TAG + encode_varint(len(content)))
        parts.append(content)
    return parts


def infer_response_bytes(response: InferResponse, parameters: Mapping[str, ParamValue] | None = None) -> bytes:
    """A serialized ModelInferResponse equal to `codec.infer_response_to_proto(response)`'s: every output in
    `raw_output_contents` (empty for one written to shared memory), its bytes copied once, into the result.
    `parameters`, when given, replace the response's own (the response itself is never changed: it may be cached).
    """
    return b"".join(_response_parts(response, response.parameters if parameters is None else parameters))


def stream_response_bytes(response: InferResponse, parameters: Mapping[str, ParamValue]) -> bytes:
    """A serialized ModelStreamInferResponse holding `response` with `parameters`, its tensor bytes copied once."""
    parts = _response_parts(response, parameters)
    size = sum(len(part) for part in parts)
    return b"".join([_STREAM_INFER_RESPONSE_TAG, encode_varint(size), *parts])
