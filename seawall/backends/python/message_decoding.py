"""Decoding of the stub protocol's frames: every field of a received message is checked (`ProtocolError` on
anything else), one `_check_*` function per kind in its direction's table. `messages` re-exports the two decoders.

Imports orjson, `ipc` and `message_kinds`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import orjson

from seawall.backends.python.ipc import INLINE_TEXT_MAX, ProtocolError
from seawall.backends.python.message_kinds import (
    _NON_FINITE,
    AutoCompleted,
    BatchFailed,
    BatchResult,
    Call,
    CallCancel,
    CallFailed,
    CallResult,
    CallStreamed,
    Cancel,
    Control,
    Execute,
    Finalize,
    Finalized,
    Grow,
    HostMessage,
    Init,
    InitFailed,
    Log,
    Message,
    MetricAnswer,
    MetricDelete,
    MetricFamilyNew,
    MetricMessage,
    MetricNew,
    MetricUpdate,
    MetricValue,
    OutputRegion,
    Ready,
    ReadyAnswer,
    ReadyCheck,
    RequestHeader,
    Response,
    ResponseEntry,
    ResponseGrow,
    ResponseRead,
    ResponseRegion,
    StreamCall,
    StubMessage,
)

_N = TypeVar("_N", bound=tuple[object, ...])


def _int(value: object) -> int:
    """What a peer sent, checked field by field (ProtocolError on anything else)."""
    if type(value) is not int or value < 0:
        raise ProtocolError("expected a non-negative integer")
    return value


def _str(value: object) -> str:
    if type(value) is not str:
        raise ProtocolError("expected a string")
    return value


def _bool(value: object) -> bool:
    if type(value) is not bool:
        raise ProtocolError("expected a boolean")
    return value


def _list(value: object) -> list[object]:
    if type(value) is not list:
        raise ProtocolError("expected a list")
    return value


def _dict(value: object) -> dict[str, object]:
    if type(value) is not dict:
        raise ProtocolError("expected an object")
    return value


def _fields(fields: list[object], count: int) -> list[object]:
    if len(fields) != count:
        raise ProtocolError("wrong number of fields")
    return fields


def _fields_inline(fields: list[object], count: int) -> list[object]:
    """`count` fields and a trailing `inline` one, which a message with no inline bytes may leave out ("")."""
    return [*fields, ""] if len(fields) == count else _fields(fields, count + 1)


def _check_init(fields: list[object]) -> Init:
    mode, name, model_file, version_dir, model_dir, pins, args, config = _fields(fields, 8)
    pin_sets = [_dict(pin_set) for pin_set in _list(pins)]
    paths = _str(model_file), _str(version_dir), _str(model_dir)
    completing = None if config is None else _dict(config)
    return Init(_str(mode), _str(name), *paths, pin_sets, _dict(args), completing)  # type: ignore[arg-type]


def _new(kind: type[_N], fields: Sequence[object]) -> _N:
    """A NamedTuple from checked fields without its Python-level __new__ (per request on the hot path)."""
    return tuple.__new__(kind, fields)


def _naturals(*values: object) -> None:
    for value in values:
        if type(value) is not int or value < 0:
            raise ProtocolError("expected a non-negative integer")


def _check_execute(fields: list[object]) -> Execute:
    """From the host (trusted: headers are checked for shape; descriptors when their tensors are read)."""
    seq, slot, requests, inputs_size, outputs_size = _fields(fields, 5)
    _naturals(seq, slot, inputs_size, outputs_size)
    headers = []
    for header in _list(requests):
        if type(header) is not list or len(header) != 6:
            raise ProtocolError("bad request header")
        headers.append(_new(RequestHeader, header))
    return _new(Execute, (seq, slot, headers, inputs_size, outputs_size))


def _check_result(fields: list[object]) -> BatchResult:
    """From a stub (untrusted; per request, so the checks are inline)."""
    seq, responses, started, finished, execute_started, execute_finished, kept = _fields(fields, 7)
    _naturals(seq, started, finished, execute_started, execute_finished)
    entries = [_check_entry(entry) for entry in _list(responses)]
    return _new(BatchResult, (seq, entries, started, finished, execute_started, execute_finished, _bool(kept)))


def _check_entry(entry: object) -> ResponseEntry:
    """One response entry from a stub: its shape here, its descriptors when the host reads the tensors."""
    if type(entry) is not list or len(entry) != 4:
        raise ProtocolError("bad response entry")
    outputs, code, message, parameters = entry
    if type(outputs) is not list or (code is not None and type(code) is not int) or type(message) is not str:
        raise ProtocolError("bad response entry")
    if parameters is not None and type(parameters) is not dict:
        raise ProtocolError("bad response entry")
    for descriptor in outputs:
        if type(descriptor) is not list:
            raise ProtocolError("bad tensor descriptor")
    return _new(ResponseEntry, entry)


def _check_auto(fields: list[object]) -> AutoCompleted:
    (config,) = _fields(fields, 1)
    return AutoCompleted(None if config is None else _dict(config))


def _check_log(fields: list[object]) -> Log:
    level, text, file, line = _fields(fields, 4)
    return Log(level if type(level) is int else 0, str(text), str(file), line if type(line) is int else 0)


def _check_pair(kind: type[OutputRegion] | type[Grow]) -> Callable[[list[object]], OutputRegion | Grow]:
    def check(fields: list[object]) -> OutputRegion | Grow:
        slot, size = _fields(fields, 2)
        return kind(_int(slot), _int(size))

    return check


def _check_ready(fields: list[object]) -> Ready:
    (checks,) = _fields(fields, 1)
    return Ready(bool(checks))


def _check_ready_check(fields: list[object]) -> ReadyCheck:
    (ask,) = _fields(fields, 1)
    return ReadyCheck(_int(ask))


def _check_ready_answer(fields: list[object]) -> ReadyAnswer:
    ask, ready, error = _fields(fields, 3)
    return ReadyAnswer(_int(ask), _bool(ready), _str(error))


def _check_empty(kind: type[Finalize] | type[Finalized]) -> Callable[[list[object]], Message]:
    def check(fields: list[object]) -> Message:
        _fields(fields, 0)
        return kind()

    return check


def _check_init_failed(fields: list[object]) -> InitFailed:
    error, trace = _fields(fields, 2)
    return InitFailed(str(error), str(trace))


def _check_batch_failed(fields: list[object]) -> BatchFailed:
    seq, error, trace, kept = _fields(fields, 4)
    return BatchFailed(_int(seq), str(error), str(trace), _bool(kept))


def _check_call(fields: list[object]) -> Call:
    """From a stub (untrusted): every field is checked; descriptors again when their tensors are read."""
    return Call(*_call_fields(fields))


def _check_stream_call(fields: list[object]) -> StreamCall:
    return StreamCall(*_call_fields(fields))


def _call_fields(fields: list[object]) -> tuple[int, str, str, RequestHeader, int, int, str]:
    call_id, model, version, header, size, timeout_us, inline = _fields_inline(fields, 6)
    _naturals(call_id, size, timeout_us)
    if type(header) is not list or len(header) != 6:
        raise ProtocolError("bad request header")
    request_id, inputs, outputs, correlation_id, flags, parameters = header
    _str(request_id)
    for descriptor in _list(inputs):
        if type(descriptor) is not list:
            raise ProtocolError("bad tensor descriptor")
    for name in _list(outputs):
        _str(name)
    if type(correlation_id) is not str:
        _int(correlation_id)
    _int(flags)
    _dict(parameters)
    header_ = _new(RequestHeader, header)
    return call_id, _str(model), _str(version), header_, size, timeout_us, _inline(inline)  # type: ignore[return-value]


def _inline(text: object) -> str:
    """A message's inline tensor bytes (base64): a string no longer than the largest inline size needs; its
    content and its size against the message's `size` are checked where it is decoded (`ipc.inline_region`)."""
    if type(text) is not str or len(text) > INLINE_TEXT_MAX:
        raise ProtocolError("bad inline tensor bytes")
    return text


def _check_control(fields: list[object]) -> Control:
    call_id, action, model, text, flag, files, size = _fields(fields, 7)
    _naturals(call_id, size)
    if action not in ("ready", "load", "unload") or type(flag) is not bool:
        raise ProtocolError("bad model control request")
    for descriptor in _list(files):
        if type(descriptor) is not list:
            raise ProtocolError("bad tensor descriptor")
    return Control(call_id, action, _str(model), _str(text), flag, files, size)  # type: ignore[arg-type]


def _check_call_result(fields: list[object]) -> CallResult:
    """From the host (trusted: shapes only; descriptors when their tensors are read)."""
    call_id, outputs, size, value, inline = _fields_inline(fields, 4)
    _naturals(call_id, size)
    return CallResult(call_id, _list(outputs), size, bool(value), _inline(inline))  # type: ignore[arg-type]


def _check_call_streamed(fields: list[object]) -> CallStreamed:
    """From the host (trusted: shapes only; descriptors when their tensors are read)."""
    call_id, position, outputs, size, error_code, error_message, final, inline = _fields_inline(fields, 7)
    _naturals(call_id, position, size)
    code = None if error_code is None else _int(error_code)
    text = _str(error_message)
    return CallStreamed(call_id, position, _list(outputs), size, code, text, bool(final), _inline(inline))  # type: ignore[arg-type]


def _check_call_cancel(fields: list[object]) -> CallCancel:
    (call_id,) = _fields(fields, 1)
    return CallCancel(_int(call_id))


def _check_call_failed(fields: list[object]) -> CallFailed:
    call_id, code, message = _fields(fields, 3)
    return CallFailed(_int(call_id), _int(code), _str(message))


_OneNumber = type[ResponseRead] | type[ResponseRegion] | type[ResponseGrow]


def _check_one(kind: _OneNumber) -> Callable[[list[object]], Message]:
    def check(fields: list[object]) -> Message:
        (value,) = _fields(fields, 1)
        return kind(_int(value))

    return check


def _check_cancel(fields: list[object]) -> Cancel:
    seq, index = _fields(fields, 2)
    return Cancel(_int(seq), _int(index))


def _check_response(fields: list[object]) -> Response:
    """From a stub (untrusted): the entry's shape here, its descriptors when the host reads them."""
    seq, index, entry, final, token = _fields(fields, 5)
    _naturals(seq, index, token)
    if type(final) is not bool:
        raise ProtocolError("bad response")
    if entry is None:
        if token or not final:
            raise ProtocolError("only a final response may be empty")
        return Response(seq, index, None, True, 0)  # type: ignore[arg-type]
    checked = _check_entry(entry)
    if bool(checked.outputs) != bool(token):
        raise ProtocolError("a response has a token exactly when it has outputs")
    return Response(seq, index, checked, final, token)  # type: ignore[arg-type]


def _number(value: object) -> float | str:
    if (type(value) is float or type(value) is int) or (type(value) is str and value in _NON_FINITE):
        return value
    raise ProtocolError("expected a number")


def _check_metric_family(fields: list[object]) -> MetricFamilyNew:
    ask, family, name, description, kind = _fields(fields, 5)
    _naturals(ask, family, kind)
    return MetricFamilyNew(ask, family, _str(name), _str(description), kind)  # type: ignore[arg-type]


def _check_metric_new(fields: list[object]) -> MetricNew:
    ask, metric, family, labels, buckets = _fields(fields, 5)
    _naturals(ask, metric, family)
    checked = _dict(labels)
    for value in checked.values():
        _str(value)
    bounds = None if buckets is None else [_number(bound) for bound in _list(buckets)]
    if bounds is not None and any(type(bound) is str for bound in bounds):
        raise ProtocolError("bucket boundaries must be finite")
    return MetricNew(ask, metric, family, checked, bounds)  # type: ignore[arg-type]


def _check_metric_update(fields: list[object]) -> MetricUpdate:
    metric, op, value = _fields(fields, 3)
    _naturals(metric, op)
    return MetricUpdate(metric, op, _number(value))  # type: ignore[arg-type]


def _check_metric_value(fields: list[object]) -> MetricValue:
    ask, metric = _fields(fields, 2)
    _naturals(ask, metric)
    return MetricValue(ask, metric)  # type: ignore[arg-type]


def _check_metric_delete(fields: list[object]) -> MetricDelete:
    kind, id_ = _fields(fields, 2)
    _naturals(kind, id_)
    return MetricDelete(kind, id_)  # type: ignore[arg-type]


def _check_metric_answer(fields: list[object]) -> MetricAnswer:
    ask, value, error = _fields(fields, 3)
    _naturals(ask)
    return MetricAnswer(ask, _number(value), _str(error))  # type: ignore[arg-type]


_HOST_MESSAGES: dict[object, Callable[[list[object]], Message]] = {
    "init": _check_init,
    "exec": _check_execute,
    "out": _check_pair(OutputRegion),
    "fini": _check_empty(Finalize),
    "callok": _check_call_result,
    "callerr": _check_call_failed,
    "sresp": _check_call_streamed,
    "rcheck": _check_ready_check,
    "read": _check_one(ResponseRead),
    "rregion": _check_one(ResponseRegion),
    "cancel": _check_cancel,
    "mans": _check_metric_answer,
}
_STUB_MESSAGES: dict[object, Callable[[list[object]], Message]] = {
    "ready": _check_ready,
    "rans": _check_ready_answer,
    "fail": _check_init_failed,
    "auto": _check_auto,
    "result": _check_result,
    "error": _check_batch_failed,
    "grow": _check_pair(Grow),
    "log": _check_log,
    "done": _check_empty(Finalized),
    "call": _check_call,
    "ctl": _check_control,
    "scall": _check_stream_call,
    "scancel": _check_call_cancel,
    "response": _check_response,
    "rgrow": _check_one(ResponseGrow),
    "mfam": _check_metric_family,
    "mnew": _check_metric_new,
    "mset": _check_metric_update,
    "mval": _check_metric_value,
    "mdel": _check_metric_delete,
}


def _decode(payload: bytes | bytearray | memoryview, kinds: dict[object, Callable[[list[object]], Message]]) -> Message:
    try:
        frame = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("frame is not valid JSON") from exc
    if type(frame) is not list or not frame:
        raise ProtocolError("frame is not a message")
    check = kinds.get(frame[0]) if type(frame[0]) is str else None
    if check is None:
        raise ProtocolError("unknown message kind")
    return check(frame[1:])


def decode_host_message(payload: bytes | bytearray | memoryview) -> HostMessage:
    """A message the stub received (never anything but JSON: no pickle crosses the channel).

    Raises:
        ProtocolError: not a valid frame of a host → stub kind.
    """
    return _decode(payload, _HOST_MESSAGES)  # type: ignore[return-value]  # the table holds host kinds only


def decode_stub_message(payload: bytes | bytearray | memoryview) -> StubMessage | MetricMessage:
    """A message the host received from a stub (untrusted: every field is checked).

    Raises:
        ProtocolError: not a valid frame of a stub → host kind.
    """
    return _decode(payload, _STUB_MESSAGES)  # type: ignore[return-value]  # the table holds stub kinds only
