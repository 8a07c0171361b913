"""Decoding of the stub protocol's frames: every field of a received message is checked (`ProtocolError` on
anything else), one `_check_*` function per kind in its direction's table, composed of `message_fields`' checks.
`messages` re-exports the two decoders.

Imports orjson, `ipc`, `message_fields` and `message_kinds`.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from seawall.backends.python.ipc import ProtocolError
from seawall.backends.python.message_fields import (
    array,
    boolean,
    build,
    check_fields,
    check_fields_inline,
    descriptors,
    inline_text,
    mapping,
    natural,
    naturals,
    number,
    string,
)
from seawall.backends.python.message_kinds import (
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


def _check_init(fields: list[object]) -> Init:
    mode, name, model_file, version_dir, model_dir, pins, args, config = check_fields(fields, 8)
    pin_sets = [mapping(pin_set) for pin_set in array(pins)]
    paths = string(model_file), string(version_dir), string(model_dir)
    completing = None if config is None else mapping(config)
    return Init(string(mode), string(name), *paths, pin_sets, mapping(args), completing)  # type: ignore[arg-type]


def _check_execute(fields: list[object]) -> Execute:
    """From the host (trusted: headers are checked for shape; descriptors when their tensors are read). Once per
    batch in every stub, so the field checks are written out here (`naturals`, `array`, `build`)."""
    if len(fields) != 5:
        raise ProtocolError("wrong number of fields")
    seq, slot, requests, inputs_size, outputs_size = fields
    for value in (seq, slot, inputs_size, outputs_size):
        if type(value) is not int or value < 0:
            raise ProtocolError("expected a non-negative integer")
    if type(requests) is not list:
        raise ProtocolError("expected a list")
    headers = []
    for header in requests:
        if type(header) is not list or len(header) != 6:
            raise ProtocolError("bad request header")
        headers.append(tuple.__new__(RequestHeader, header))
    return tuple.__new__(Execute, (seq, slot, headers, inputs_size, outputs_size))


def _check_result(fields: list[object]) -> BatchResult:
    """From a stub (untrusted; per request, so the checks are inline)."""
    seq, responses, started, finished, execute_started, execute_finished, kept = check_fields(fields, 7)
    naturals(seq, started, finished, execute_started, execute_finished)
    entries = [_check_entry(entry) for entry in array(responses)]
    return build(BatchResult, (seq, entries, started, finished, execute_started, execute_finished, boolean(kept)))


def _check_entry(entry: object) -> ResponseEntry:
    """One response entry from a stub: its shape here, its descriptors when the host reads the tensors."""
    if type(entry) is not list or len(entry) != 4:
        raise ProtocolError("bad response entry")
    outputs, code, message, parameters = entry
    if type(outputs) is not list or (code is not None and type(code) is not int) or type(message) is not str:
        raise ProtocolError("bad response entry")
    if parameters is not None and type(parameters) is not dict:
        raise ProtocolError("bad response entry")
    descriptors(outputs)
    return build(ResponseEntry, entry)


def _check_auto(fields: list[object]) -> AutoCompleted:
    (config,) = check_fields(fields, 1)
    return AutoCompleted(None if config is None else mapping(config))


def _check_log(fields: list[object]) -> Log:
    level, text, file, line = check_fields(fields, 4)
    return Log(level if type(level) is int else 0, str(text), str(file), line if type(line) is int else 0)


def _check_pair(kind: type[OutputRegion] | type[Grow]) -> Callable[[list[object]], OutputRegion | Grow]:
    def check(fields: list[object]) -> OutputRegion | Grow:
        slot, size = check_fields(fields, 2)
        return kind(natural(slot), natural(size))

    return check


def _check_ready(fields: list[object]) -> Ready:
    (checks,) = check_fields(fields, 1)
    return Ready(bool(checks))


def _check_ready_check(fields: list[object]) -> ReadyCheck:
    (ask,) = check_fields(fields, 1)
    return ReadyCheck(natural(ask))


def _check_ready_answer(fields: list[object]) -> ReadyAnswer:
    ask, ready, error = check_fields(fields, 3)
    return ReadyAnswer(natural(ask), boolean(ready), string(error))


def _check_empty(kind: type[Finalize] | type[Finalized]) -> Callable[[list[object]], Message]:
    def check(fields: list[object]) -> Message:
        check_fields(fields, 0)
        return kind()

    return check


def _check_init_failed(fields: list[object]) -> InitFailed:
    error, trace = check_fields(fields, 2)
    return InitFailed(str(error), str(trace))


def _check_batch_failed(fields: list[object]) -> BatchFailed:
    seq, error, trace, kept = check_fields(fields, 4)
    return BatchFailed(natural(seq), str(error), str(trace), boolean(kept))


def _check_call(fields: list[object]) -> Call:
    """From a stub (untrusted): every field is checked; descriptors again when their tensors are read."""
    return Call(*_call_fields(fields))


def _check_stream_call(fields: list[object]) -> StreamCall:
    return StreamCall(*_call_fields(fields))


def _call_fields(fields: list[object]) -> tuple[int, str, str, RequestHeader, int, int, str]:
    call_id, model, version, header, size, timeout_us, inline = check_fields_inline(fields, 6)
    naturals(call_id, size, timeout_us)
    if type(header) is not list or len(header) != 6:
        raise ProtocolError("bad request header")
    request_id, inputs, outputs, correlation_id, flags, parameters = header
    string(request_id)
    descriptors(inputs)
    for name in array(outputs):
        string(name)
    if type(correlation_id) is not str:
        natural(correlation_id)
    natural(flags)
    mapping(parameters)
    header_ = build(RequestHeader, header)
    return call_id, string(model), string(version), header_, size, timeout_us, inline_text(inline)  # type: ignore[return-value]


def _check_control(fields: list[object]) -> Control:
    call_id, action, model, text, flag, files, size = check_fields(fields, 7)
    naturals(call_id, size)
    if action not in ("ready", "load", "unload") or type(flag) is not bool:
        raise ProtocolError("bad model control request")
    descriptors(files)
    return Control(call_id, action, string(model), string(text), flag, files, size)  # type: ignore[arg-type]


def _check_call_result(fields: list[object]) -> CallResult:
    """From the host (trusted: shapes only; descriptors when their tensors are read)."""
    call_id, outputs, size, value, inline = check_fields_inline(fields, 4)
    naturals(call_id, size)
    return CallResult(call_id, array(outputs), size, bool(value), inline_text(inline))  # type: ignore[arg-type]


def _check_call_streamed(fields: list[object]) -> CallStreamed:
    """From the host (trusted: shapes only; descriptors when their tensors are read)."""
    call_id, position, outputs, size, error_code, error_message, final, inline = check_fields_inline(fields, 7)
    naturals(call_id, position, size)
    code = None if error_code is None else natural(error_code)
    text = string(error_message)
    return CallStreamed(call_id, position, array(outputs), size, code, text, bool(final), inline_text(inline))  # type: ignore[arg-type]


def _check_call_cancel(fields: list[object]) -> CallCancel:
    (call_id,) = check_fields(fields, 1)
    return CallCancel(natural(call_id))


def _check_call_failed(fields: list[object]) -> CallFailed:
    call_id, code, message = check_fields(fields, 3)
    return CallFailed(natural(call_id), natural(code), string(message))


_OneNumber = type[ResponseRead] | type[ResponseRegion] | type[ResponseGrow]


def _check_one(kind: _OneNumber) -> Callable[[list[object]], Message]:
    def check(fields: list[object]) -> Message:
        (value,) = check_fields(fields, 1)
        return kind(natural(value))

    return check


def _check_cancel(fields: list[object]) -> Cancel:
    seq, index = check_fields(fields, 2)
    return Cancel(natural(seq), natural(index))


def _check_response(fields: list[object]) -> Response:
    """From a stub (untrusted): the entry's shape here, its descriptors when the host reads them."""
    size: object = 0
    inline: object = ""
    if len(fields) == 5:  # outputs in the response region, or none: the inline fields may be left out
        seq, index, entry, final, token = fields
    else:
        seq, index, entry, final, token, size, inline = check_fields(fields, 7)
    naturals(seq, index, token, size)
    text = inline_text(inline)
    if type(final) is not bool:
        raise ProtocolError("bad response")
    if bool(size) != bool(text):
        raise ProtocolError("a response has a size exactly when it carries inline bytes")
    if entry is None:
        if token or not final or text:
            raise ProtocolError("only a final response may be empty")
        return Response(seq, index, None, True, 0)  # type: ignore[arg-type]
    checked = _check_entry(entry)
    if bool(checked.outputs) != bool(token):
        raise ProtocolError("a response has a token exactly when it has outputs")
    if text and not token:
        raise ProtocolError("a response carries inline bytes only with outputs")
    return Response(seq, index, checked, final, token, size, text)  # type: ignore[arg-type]


def _check_metric_family(fields: list[object]) -> MetricFamilyNew:
    ask, family, name, description, kind = check_fields(fields, 5)
    naturals(ask, family, kind)
    return MetricFamilyNew(ask, family, string(name), string(description), kind)  # type: ignore[arg-type]


def _check_metric_new(fields: list[object]) -> MetricNew:
    ask, metric, family, labels, buckets = check_fields(fields, 5)
    naturals(ask, metric, family)
    checked = mapping(labels)
    for value in checked.values():
        string(value)
    bounds = None if buckets is None else [number(bound) for bound in array(buckets)]
    if bounds is not None and any(type(bound) is str for bound in bounds):
        raise ProtocolError("bucket boundaries must be finite")
    return MetricNew(ask, metric, family, checked, bounds)  # type: ignore[arg-type]


def _check_metric_update(fields: list[object]) -> MetricUpdate:
    metric, op, value = check_fields(fields, 3)
    naturals(metric, op)
    return MetricUpdate(metric, op, number(value))  # type: ignore[arg-type]


def _check_metric_value(fields: list[object]) -> MetricValue:
    ask, metric = check_fields(fields, 2)
    naturals(ask, metric)
    return MetricValue(ask, metric)  # type: ignore[arg-type]


def _check_metric_delete(fields: list[object]) -> MetricDelete:
    kind, id_ = check_fields(fields, 2)
    naturals(kind, id_)
    return MetricDelete(kind, id_)  # type: ignore[arg-type]


def _check_metric_answer(fields: list[object]) -> MetricAnswer:
    ask, value, error = check_fields(fields, 3)
    naturals(ask)
    return MetricAnswer(ask, number(value), string(error))  # type: ignore[arg-type]


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
