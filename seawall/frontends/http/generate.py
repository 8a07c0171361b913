"""Triton's generate extension over HTTP (`.../generate`, `.../generate_stream`): a flat JSON object mapped onto an
InferRequest by the model's input metadata, each response of the model's stream mapped back to one flat JSON
object, answered as one JSON reply or as Server-Sent Events (one `data:` event per response, errors included).

Imports orjson, `core.types`, `core.offload`, `errors`, `status` and the HTTP codec, tensors and message modules.
The conversions are pure functions; the replies consume `ServedModel.stream` message by message and close it
when they stop early or the client goes away.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import orjson

import seawall.core.offload as offload
from seawall.core.raw import checked_shape
from seawall.core.types import InferRequest, InferResponse, ParamValue, StreamResponse, Tensor, TensorMetadata
from seawall.errors import InvalidArgumentError, SeawallError
from seawall.frontends.http import tensors as http_tensors
from seawall.frontends.http.errors import INTERNAL_ERROR
from seawall.frontends.http.json_body import load_json
from seawall.frontends.http.message import HttpResponse, HttpStream
from seawall.frontends.status import http_status
from seawall.options import Limits

logger = logging.getLogger(__name__)

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
#: Triton's message when `/generate` gets no response or several (the model should be asked over generate_stream)
NOT_ONE_RESPONSE = (
    "generate expects model to produce exactly 1 response, use generate stream for model that generates various "
    "number of responses"
)
_PARAMETERS = "parameters"  # the one key whose members are mapped like top-level keys
_SCALARS = (str, int, float, bool)
_DUMPS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_SORT_KEYS
_NAME_SHOWN = 128  # characters of a client's key repeated in an error message


# ------------------------------------------------------------------------------------------------ request


def decode_generate_request(
    body: bytes, inputs: Mapping[str, TensorMetadata], model: str, version: str, limits: Limits
) -> InferRequest:
    """The InferRequest of a generate body, as Triton maps it: each key that names an input of the model becomes
    that tensor (a scalar one element, an array its elements, shaped by the input's metadata: fixed dimensions
    first, the innermost -1 takes the rest, other -1 dimensions are 1); `parameters` is an object whose members
    are mapped the same way; every other key is a request parameter. `id` is the request id, and a parameter too.

    Raises:
        InvalidArgumentError: malformed JSON, not an object, `id` not a string, `parameters` not an object, a
            value of the wrong type, an element count that no shape of the input holds, an input given twice,
            a tensor over the limits.
    """
    document = load_json(body, limits.max_json_depth)
    if not isinstance(document, dict):
        raise InvalidArgumentError("failed to parse the request JSON buffer: expected a JSON object")
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgumentError("Unable to parse 'id': expected a string")
    request = InferRequest(model, [], version, request_id)
    _convert(document, inputs, request, limits, top=True)
    return request


def _convert(
    members: dict[str, Any], inputs: Mapping[str, TensorMetadata], request: InferRequest, limits: Limits, top: bool
) -> None:
    """Map `members` (the body, or its `parameters` object) into `request`, in the document's order."""
    for key, value in members.items():
        if top and key == _PARAMETERS:
            if key in inputs:
                raise InvalidArgumentError("Keyword 'parameters' for nested schema also given as input tensor name")
            if not isinstance(value, dict):
                raise InvalidArgumentError(
                    "Expected JSON object for keyword: 'parameters': attempt to access JSON non-object as object"
                )
            try:
                _convert(value, inputs, request, limits, top=False)
            except InvalidArgumentError as exc:
                raise InvalidArgumentError(f"Converting keyword: 'parameters': {exc.message}") from None
        elif key in inputs:
            if any(t.name == key for t in request.inputs):
                raise InvalidArgumentError(
                    f"[request id: {request.id or '<id_unknown>'}] input '{key}' already exists in request"
                )
            request.inputs.append(_tensor(key, value, inputs[key], request, limits))
        else:
            request.parameters[key] = _parameter(key, value)


def _parameter(key: str, value: Any) -> ParamValue:
    if "\x00" in key:
        raise InvalidArgumentError("parameter name contains a NUL character")
    if not isinstance(value, _SCALARS):
        raise InvalidArgumentError(
            f"parameter '{key[:_NAME_SHOWN]}' has invalid type. It should be either 'int', 'bool', or 'string'."
        )
    return value


def _tensor(name: str, value: Any, metadata: TensorMetadata, request: InferRequest, limits: Limits) -> Tensor:
    """One input from its JSON value; nested arrays are flattened in row-major order."""
    flat = http_tensors.flatten(value) if isinstance(value, list) else [value]
    shape = _shape(len(flat), metadata.shape, name)
    strings = sum(t.data.size for t in request.inputs if t.datatype == "BYTES")
    shape, count = checked_shape(shape, metadata.datatype, name, request.model_name, limits, bytes_before=strings)
    data = http_tensors.decode_json_data(flat, metadata.datatype, shape, count, name)
    return Tensor(name, metadata.datatype, shape, data)


def _shape(count: int, dims: tuple[int, ...], name: str) -> tuple[int, ...]:
    """The shape of `count` elements for an input of metadata shape `dims` (Triton's two passes)."""
    rest = count
    for dim in dims:
        if dim != -1:
            if dim <= 0 or rest % dim:
                break
            rest //= dim
    else:
        shape = list(dims)
        for index in range(len(shape) - 1, -1, -1):
            if shape[index] == -1:
                shape[index], rest = rest, 1
        if rest == 1:
            return tuple(shape)
    raise InvalidArgumentError(f"The schema can not convert input '{name}' to tensor with proper shape")


# ----------------------------------------------------------------------------------------------- response


def response_json(response: InferResponse) -> bytes:
    """One response as Triton's generate object: every output by name (one element as a scalar, else a flat
    array), every response parameter, `id` (when the request had one), `model_name` and `model_version`, keys
    sorted; a name taken twice keeps the reserved field, then the parameter, then the output.

    Raises:
        InvalidArgumentError: an output JSON cannot carry (non-finite floats, non-UTF-8 bytes, FP16/BF16).
    """
    document: dict[str, Any] = {}
    for tensor in response.outputs:
        data = http_tensors.json_data(tensor)
        document[tensor.name] = data[0] if len(data) == 1 else data
    document.update(response.parameters)
    if response.id:
        document["id"] = response.id
    document["model_name"] = response.model_name
    document["model_version"] = response.model_version
    return orjson.dumps(document, option=_DUMPS)


def sse_event(payload: bytes) -> bytes:
    """One Server-Sent Event carrying `payload` (a JSON object on one line)."""
    return b"data: " + payload + b"\n\n"


def _error_json(message: str) -> bytes:
    return orjson.dumps({"error": message})


async def _encode(response: InferResponse) -> bytes:
    return await offload.run(offload.is_heavy(response.outputs), response_json, response)


async def _close(messages: AsyncIterator[StreamResponse]) -> None:
    """Stop the model's stream now rather than when it is collected (an async generator has `aclose`)."""
    aclose = getattr(messages, "aclose", None)
    if aclose is not None:
        await aclose()


# ------------------------------------------------------------------------------------------------ replies


async def generate_reply(messages: AsyncIterator[StreamResponse]) -> HttpResponse:
    """The `/generate` reply: the model's one response as a JSON object. The stream is read until its end, or
    closed as soon as a second response shows the model is not answering once.

    Raises:
        SeawallError: raised by the stream before its first message, or the model's error when that is its one
            message; InvalidArgumentError (Triton's message) when the model sends no response or several.
    """
    found: StreamResponse | None = None
    try:
        async for message in messages:
            if message.response is None and message.error is None:
                continue  # the empty final message of a decoupled model
            if found is not None:
                raise InvalidArgumentError(NOT_ONE_RESPONSE)
            found = message
    finally:
        await _close(messages)
    if found is None:
        raise InvalidArgumentError(NOT_ONE_RESPONSE)
    if found.error is not None:
        raise found.error
    assert found.response is not None
    return HttpResponse(200, (await _encode(found.response),), "application/json")


async def generate_stream_reply(messages: AsyncIterator[StreamResponse], context: str) -> HttpResponse:
    """The `/generate_stream` reply: Server-Sent Events, one per message of the stream, sent as they come. The
    status is the first message's (200, or its error's status); later errors are events under that status.
    `context` names the request in log lines.

    Raises:
        SeawallError: raised by the stream before its first message (answered as a JSON error reply).
    """
    try:
        first = await anext(messages, None)
        event, error = await _event(first, context) if first is not None else (b"", None)
    except BaseException:
        await _close(messages)
        raise
    status = 200 if error is None else http_status(error.code)
    return HttpStream(status, SSE_CONTENT_TYPE, _events(event, first, messages, context))


async def _event(message: StreamResponse, context: str) -> tuple[bytes, SeawallError | None]:
    """The event of one message (b"" for an empty final message) and the error it carries, if any."""
    error = message.error
    if message.response is not None:
        try:
            return sse_event(await _encode(message.response)), None
        except SeawallError as exc:  # an output JSON cannot carry: this response's error
            error = exc
    if error is None:
        return b"", None
    logger.debug("%s: error event: %s", context, error.message)
    return sse_event(_error_json(error.message)), error


async def _events(
    event: bytes, message: StreamResponse | None, messages: AsyncIterator[StreamResponse], context: str
) -> AsyncGenerator[bytes, None]:
    """`event` (of `message`), then the event of every later message; closes `messages` when done or closed."""
    try:
        while message is not None:
            if event:
                yield event
            if message.final:
                return
            message = await anext(messages, None)
            if message is not None:
                event = (await _event(message, context))[0]
    except SeawallError as exc:  # the stream itself failed midway: the status is sent, so it is an event
        logger.debug("%s: the stream failed: %s", context, exc.message)
        yield sse_event(_error_json(exc.message))
    except Exception:
        logger.exception("internal error on %s", context)
        yield sse_event(_error_json(INTERNAL_ERROR))
    finally:
        await _close(messages)
