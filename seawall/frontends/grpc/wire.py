"""The protobuf wire format of the ModelInfer hot path: a serialized ModelInferRequest split into its header and
views of its `raw_input_contents`, and a serialized ModelInferResponse whose raw outputs are written once.

Imports `core.types`, `core.raw`, `errors`, `grpc.parameters` and tritonclient's generated modules;
pure functions, no IO, no grpc. The generated (upb) classes parse and write everything but the tensor bytes,
which never pass through a message object: each would be copied into it and again out of it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from seawall.core.raw import encode as encode_raw
from seawall.core.types import InferResponse, ParamValue
from seawall.errors import InvalidArgumentError
from seawall.frontends.grpc.codec import too_many_tensors
from seawall.frontends.grpc.parameters import SHM_REGION, set_parameters
from seawall.options import Limits
from seawall.security.parameters import check_parameter_count

#: below this many bytes a request is parsed whole: copying small tensors costs less than splitting them out
SPLIT_MIN_BYTES = 32 * 1024
_PARAMETERS_FIELD = 4  # ModelInferRequest.parameters (each map entry is one such field on the wire)
_MODEL_NAME_FIELD = 1  # ModelInferRequest.model_name
#: model_name is looked for among this many first fields of a request (it is the first a client writes)
_NAME_WITHIN_FIELDS = 8
_INPUTS_FIELD, _OUTPUTS_FIELD = 5, 6  # ModelInferRequest.inputs and .outputs
_RAW_INPUT_FIELD = 7  # ModelInferRequest.raw_input_contents
_LENGTH_DELIMITED = 2
_RAW_OUTPUT_TAG = b"\x32"  # ModelInferResponse.raw_output_contents: field 6, length-delimited
_STREAM_INFER_RESPONSE_TAG = b"\x12"  # ModelStreamInferResponse.infer_response: field 2, length-delimited
_FIXED_SIZES = {1: 8, 5: 4}  # wire types fixed64 and fixed32
#: the fewest bytes a parameter entry takes on the wire (its tag and a zero length)
_MIN_ENTRY_BYTES = 2
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


def _field(view: memoryview, pos: int) -> tuple[int, int, int, int]:
    """The field at `pos`: its number, its wire type, where its value starts and where the field ends.

    Raises:
        InvalidArgumentError: a truncated field or an unknown wire type (groups are not valid here).
    """
    key, pos = _varint(view, pos)
    wire = key & 7
    if wire == _LENGTH_DELIMITED:
        length, value = _varint(view, pos)
        if length > len(view) - value:
            raise InvalidArgumentError(_PARSE_ERROR)
        return key >> 3, wire, value, value + length
    if wire == 0:
        return key >> 3, wire, pos, _varint(view, pos)[1]
    if wire in _FIXED_SIZES and pos + _FIXED_SIZES[wire] <= len(view):
        return key >> 3, wire, pos, pos + _FIXED_SIZES[wire]
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


def split_raw_inputs(data: bytes | memoryview, limits: Limits) -> tuple[bytes, list[memoryview]]:
    """The request without its `raw_input_contents` fields, and those contents as read-only views of `data`.

    The walk stops as soon as the message holds more than a request within `limits` can: a request parameter
    over `max_parameters` (they are then counted at once, `check_parameter_counts`), an input or output over
    `max_inputs` / `max_outputs`, or more fields than all of those together (unknown or repeated singular
    fields). A hostile message may hold tens of millions of fields, each a step of this walk.

    Raises:
        InvalidArgumentError: a truncated field or an unknown wire type (groups are not valid here); too many
            request parameters or fields.
        ResourceExhaustedError: too many inputs or outputs (`codec.too_many_tensors`).
    """
    view = memoryview(data).toreadonly()
    kept: list[memoryview] = []
    raw: list[memoryview] = []
    pos, end = 0, len(view)
    counts = {_PARAMETERS_FIELD: 0, _INPUTS_FIELD: 0, _OUTPUTS_FIELD: 0, _RAW_INPUT_FIELD: 0}
    most = _most_fields(limits)
    fields = 0
    while pos < end:
        fields += 1
        if fields > most[0]:
            _refuse_fields(data, view[:pos], counts, limits)  # pos: the start of the next field
        start = pos
        number, wire, value, pos = _field(view, pos)
        if wire == _LENGTH_DELIMITED and number in counts:
            counts[number] += 1
            if counts[number] > most[number]:
                _refuse_fields(data, view[:start], counts, limits)
        if wire == _LENGTH_DELIMITED and number == _RAW_INPUT_FIELD:
            raw.append(view[value:pos])
        else:
            kept.append(view[start:pos])
    return b"".join(kept), raw


def _most_fields(limits: Limits) -> dict[int, int]:
    """How many fields of each counted kind (and, under 0, in all) a request within `limits` can hold."""
    return {
        _PARAMETERS_FIELD: limits.max_parameters,
        _INPUTS_FIELD: limits.max_inputs,
        _OUTPUTS_FIELD: limits.max_outputs,
        _RAW_INPUT_FIELD: limits.max_inputs,
        # model_name, model_version and id once each, and every repeated field at its limit
        0: 3 + limits.max_parameters + 2 * limits.max_inputs + limits.max_outputs,
    }


def _refuse_fields(data: bytes | memoryview, head: memoryview, counts: dict[int, int], limits: Limits) -> NoReturn:
    """Refuse a message the walk found to hold more than a request within `limits` can; `head` is its part
    before the field that tipped it (for the model name and request id of the error: clients write them first)."""
    if counts[_INPUTS_FIELD] > limits.max_inputs or counts[_OUTPUTS_FIELD] > limits.max_outputs:
        try:
            first = _counting_request().FromString(head)
        except DecodeError:
            raise InvalidArgumentError(_PARSE_ERROR) from None
        raise too_many_tensors(first.model_name, first.id)
    if counts[_PARAMETERS_FIELD] > limits.max_parameters:
        check_parameter_counts(data, limits)  # the exact count, in one pass of the C parser
    if counts[_RAW_INPUT_FIELD] > limits.max_inputs:
        raise InvalidArgumentError(f"request has more than {limits.max_inputs} raw input contents (--max-inputs)")
    raise InvalidArgumentError(f"{_PARSE_ERROR}: more fields than a request within the server's limits holds")


#: the parts of ModelInferRequest that parameter counting reads; every other field stays unknown bytes
_COUNTING_PROTO = """
name: "seawall_parameter_count.proto" package: "seawall" syntax: "proto3"
message_type {
  name: "Input"
  field { name: "name" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }
  field { name: "parameters" number: 4 type: TYPE_BYTES label: LABEL_REPEATED }
}
message_type {
  name: "Output"
  field { name: "name" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }
  field { name: "parameters" number: 2 type: TYPE_BYTES label: LABEL_REPEATED }
}
message_type {
  name: "Request"
  field { name: "model_name" number: 1 type: TYPE_STRING label: LABEL_OPTIONAL }
  field { name: "id" number: 3 type: TYPE_STRING label: LABEL_OPTIONAL }
  field { name: "parameters" number: 4 type: TYPE_BYTES label: LABEL_REPEATED }
  field { name: "inputs" number: 5 type: TYPE_MESSAGE type_name: ".seawall.Input" label: LABEL_REPEATED }
  field { name: "outputs" number: 6 type: TYPE_MESSAGE type_name: ".seawall.Output" label: LABEL_REPEATED }
}
"""


@functools.cache
def _counting_request() -> Any:
    """A message class reading a ModelInferRequest's model name and the parameter entries of the request, its
    inputs and its outputs as opaque bytes (same field numbers): counting them builds no map and no Python object
    per entry. Built on first use, in a descriptor pool of its own."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(text_format.Parse(_COUNTING_PROTO, descriptor_pb2.FileDescriptorProto()))
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("seawall.Request"))


def check_parameter_counts(data: bytes | memoryview, limits: Limits) -> None:
    """Refuse a serialized ModelInferRequest with more inputs or outputs than `limits` allow, or more parameter
    entries than `limits.max_parameters` in the request or in one of its inputs or outputs, before any tensor or
    parameter map is built (a key sent twice counts twice: the wire entries are what a parse costs).

    Raises:
        InvalidArgumentError: too many parameters (`security.parameters`), or bytes that are not a message.
        ResourceExhaustedError: too many inputs or outputs (`codec.too_many_tensors`).
    """
    try:
        counts = _counting_request().FromString(data)
    except DecodeError:
        raise InvalidArgumentError(_PARSE_ERROR) from None
    if len(counts.inputs) > limits.max_inputs or len(counts.outputs) > limits.max_outputs:
        raise too_many_tensors(counts.model_name, counts.id)
    check_parameter_count(len(counts.parameters), limits)
    for tensor in counts.inputs:
        check_parameter_count(len(tensor.parameters), limits, tensor.name, "input")
    for tensor in counts.outputs:
        check_parameter_count(len(tensor.parameters), limits, tensor.name, "output")


def model_name(data: bytes | memoryview) -> str:
    """The model a serialized ModelInferRequest names ("" when it is not one or does not name it among its first
    fields, where clients write it): read without parsing the message, which may hold millions of fields."""
    view = memoryview(data)
    pos = 0
    try:
        for _ in range(_NAME_WITHIN_FIELDS):
            if pos >= len(view):
                break
            number, wire, value, pos = _field(view, pos)
            if number == _MODEL_NAME_FIELD and wire == _LENGTH_DELIMITED:
                return bytes(view[value:pos]).decode()
    except (InvalidArgumentError, UnicodeDecodeError):
        pass
    return ""


def parse_infer_request(data: bytes | memoryview, limits: Limits) -> tuple[Any, Sequence[bytes | memoryview]]:
    """A serialized ModelInferRequest as (message, raw input contents); large contents stay views of `data`.
    Its parameters are counted (`check_parameter_counts`) before the message is parsed, unless it is too short to
    hold too many (the typical request: the count costs a few microseconds).

    Raises:
        InvalidArgumentError: the bytes are not a ModelInferRequest; too many parameters.
    """
    if len(data) >= SPLIT_MIN_BYTES:
        header, raw = split_infer_request(data, limits)
        return parse_header(header), raw
    if len(data) >= _MIN_ENTRY_BYTES * (limits.max_parameters + 1):  # else too short to hold too many
        check_parameter_counts(data, limits)
    message = parse_header(data)
    return message, message.raw_input_contents


def split_infer_request(data: bytes | memoryview, limits: Limits) -> tuple[bytes, list[memoryview]]:
    """A large serialized ModelInferRequest as the message without its raw contents (to `parse_header`) and those
    contents (views of `data`), its parameters counted: a walk over its fields, bounded by `limits`.

    Raises:
        InvalidArgumentError, ResourceExhaustedError: as `split_raw_inputs`; too many parameters.
    """
    header, raw = split_raw_inputs(data, limits)
    check_parameter_counts(header, limits)
    return header, raw


def parse_header(header: bytes | memoryview) -> Any:
    """The ModelInferRequest of `split_infer_request`'s header (or of a whole message too small to split).

    Raises:
        InvalidArgumentError: the bytes are not a ModelInferRequest.
    """
    try:
        return service_pb2.ModelInferRequest.FromString(header)
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


def infer_response_parts(response: InferResponse) -> list[bytes | memoryview]:
    """`infer_response_bytes(response)` as the parts it joins: the outputs' bytes are views of their arrays, so a
    writer that gathers (the lean listener) sends them without copying them first."""
    return _response_parts(response, response.parameters)


def stream_response_bytes(response: InferResponse, parameters: Mapping[str, ParamValue]) -> bytes:
    """A serialized ModelStreamInferResponse holding `response` with `parameters`, its tensor bytes copied once."""
    parts = _response_parts(response, parameters)
    size = sum(len(part) for part in parts)
    return b"".join([_STREAM_INFER_RESPONSE_TAG, encode_varint(size), *parts])
