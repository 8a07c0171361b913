"""The stub protocol, written once: every message between the python backend's host and a stub process.

Imports only orjson and `ipc` (the stub imports this module too, so it stays light); nothing is ever unpickled.

Framing. On the control socket (a stream), each message is one frame: a little-endian u32 byte count, then a
JSON array `[kind, field, ...]` whose fields are the message's fields in their declared order. Tensor bytes
never travel in frames: they lie in the slot's shared regions (see `ipc`), and a message describes each tensor
by a `[name, datatype, shape, offset, nbytes]` descriptor that the reader checks against its region
(`ipc.read_tensor`). Region file descriptors go over a second socket, tagged `i<slot>` / `o<slot>`; a message
that announces a new region carries its size, and the reader maps the fd of that tag.

Who sends what (host → stub | stub → host):

    Init          load model.py: mode "model"   | Ready, or InitFailed; "auto_complete": AutoCompleted or InitFailed
    Execute       one batch in one slot          | BatchResult or BatchFailed, with the Execute's seq
    OutputRegion  answers Grow (size 0: refused) | Grow: the running batch needs a bigger output region
    Finalize      run finalize(), then exit      | Finalized
                                                 | Log: any time (pb_utils.Logger)
    MetricAnswer  answers an ask                 | Metric*: any time (pb_utils.MetricFamily; see its block)
    CallResult, CallFailed (by call id)          | Call, Control: from model code (BLS, model control)

Decoupled models (`model_transaction_policy { decoupled: true }`):

    Execute       one batch                      | BatchResult (no entries) once execute() returned, or BatchFailed
    ResponseRead  the Response's bytes are free  | Response: a response_sender.send(...), any time, any thread
    ResponseRegion answers ResponseGrow (0: no)  | ResponseGrow: a response needs a bigger response region
    Cancel        a request's client went away   |

A Response's outputs lie in the stub's one response region (fd tag `r`, made on the first ResponseGrow); the stub
has one Response with outputs in flight at a time and reuses the region once the host answered ResponseRead with
its token (the host holds that answer back while the request's reader is behind: backpressure). Cancel sets the
flag behind `is_cancelled()` of one request (of any model, decoupled or not); Response, ResponseRead,
ResponseRegion and Cancel are aside messages, never answers.

The stub answers messages in the order they came (an `async def execute` model's batches may run at once, but
their results still leave in order), so the host matches each answer to its oldest unanswered message; Log,
Grow, Call, Control, Response and ResponseGrow are aside messages, handled as they come (`StubProcess.on_message`).

Growing the protocol: a kind is a NamedTuple, a line in `_KINDS` and a `_check_*` function in its direction's
table; decoders refuse unknown kinds, so both sides change together. What fits later, existing kinds unchanged:
- Decoupled models (many responses per request): `Response(seq, request index, ResponseEntry, final)`, an aside
  message the stub sends at each `response_sender.send(...)`, routed by seq to that request's stream rather
  than to the reply queue; the Execute itself is answered by an empty BatchResult once execute() returns. A
  Response's outputs stay in the slot's output region until the host answers `ResponseRead(seq)`.
- BLS (built, see the Call kinds): `Call(call id, model, version, RequestHeader, size, timeout)` and
  `Control(call id, action, ...)` (is_model_ready / load_model / unload_model) are aside messages whose inputs
  lie in a sealed region the stub made for the call (fd tag `c<id>`), answered by `CallResult(call id,
  outputs, size)` (outputs in a region the host made, tag `r<id>`) or `CallFailed(call id, code, message)`.
  Answers are matched by call id, not by order: several calls may be in flight (async_exec, user threads).
  Streamed BLS answers (exec(decoupled=True)) will reuse Response.

Why NamedTuples: immutable and typed like frozen dataclasses, but built at tuple speed (a frozen slotted
dataclass costs ~1 µs more per object, and a RequestHeader and a ResponseEntry are built per request on both
sides of the hot path); their field order is the wire's order.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Generic, NamedTuple, TypeVar

import orjson

from seawall.backends.python.ipc import Descriptor, ProtocolError

#: Little-endian u32 byte count in front of every frame.
FRAME_HEADER = struct.Struct("<I")
#: Largest frame either side accepts (headers only; tensor bytes travel in shared memory).
MAX_FRAME_BYTES = 64 * 1024 * 1024

_M = TypeVar("_M")
_N = TypeVar("_N", bound=tuple[object, ...])


class Init(NamedTuple):  # host → stub: Init, Execute (RequestHeader), OutputRegion, Finalize
    """Load the model file (`mode` "model": then initialize(args); "auto_complete": auto_complete_config)."""

    mode: str
    model_name: str
    model_file: str
    version_dir: str  # the version directory's modules import by name
    model_dir: str  # code is imported only from inside it; pins are relative to it
    pins: list[dict[str, str]]  # SHA-256 pin sets (empty: unpinned)
    args: dict[str, str]  # initialize(args); empty for auto-complete
    config: dict[str, object] | None  # the configuration auto-complete starts from; None for "model"


class RequestHeader(NamedTuple):
    """Everything of one request but its tensor bytes."""

    id: str
    inputs: list[Descriptor]  # in the slot's input region
    outputs: list[str]  # requested output names (empty: all)
    correlation_id: int | str  # sequence_id, 0 when absent
    flags: int  # 1: sequence start, 2: sequence end
    parameters: dict[str, object]  # the request's parameters but those the server consumes


class Execute(NamedTuple):
    """Run one batch in `slot`. A size > 0 announces a new region of that size for the slot (fd socket)."""

    seq: int
    slot: int
    requests: list[RequestHeader]
    inputs_size: int = 0
    outputs_size: int = 0


class OutputRegion(NamedTuple):
    """The answer to Grow: a new output region of `size` bytes for `slot` (fd socket), or 0: refused."""

    slot: int
    size: int


class Finalize(NamedTuple):
    """Run finalize(), answer Finalized, exit."""


class Ready(NamedTuple):  # stub → host: the rest
    """initialize() returned."""


class InitFailed(NamedTuple):
    """Loading the model, initialize() or auto_complete_config() failed; the stub exits."""

    error: str  # "<type>: <text>", for the client once paths are hidden
    trace: str  # for the server log only


class AutoCompleted(NamedTuple):
    """auto_complete_config's result as a JSON-like dict, or None (the model has no such method)."""

    config: dict[str, object] | None


class ResponseEntry(NamedTuple):
    """One request's response: its outputs in the slot's output region, or the error the model set."""

    outputs: list[Descriptor]
    error_code: int | None = None  # pb_utils.TritonError code (-1: not an int); None: no error
    error_message: str = ""
    parameters: dict[str, object] | None = None  # InferenceResponse(parameters=...), checked by the host


class BatchResult(NamedTuple):
    """One entry per request of the batch, and when the stub took the batch up and was done with it (outputs
    written), and when execute() itself started and returned (CLOCK_MONOTONIC ns, the host's clock)."""

    seq: int
    responses: list[ResponseEntry]
    started_ns: int
    finished_ns: int
    execute_started_ns: int = 0
    execute_finished_ns: int = 0


class BatchFailed(NamedTuple):
    """execute() raised or returned something unusable: every request of the batch fails with `error`."""

    seq: int
    error: str
    trace: str  # "" for the backend's own messages (nothing to log)


class Grow(NamedTuple):
    """The outputs of the running batch need `size` bytes: the host answers OutputRegion."""

    slot: int
    size: int


class Log(NamedTuple):
    """One pb_utils.Logger line (level: 0 info, 1 warning, 2 error, 3 verbose), with the file and line of the
    model code that logged it ("" and 0: the stub's own line)."""

    level: int
    text: str
    file: str = ""
    line: int = 0


class Finalized(NamedTuple):
    """finalize() ran (or failed and was logged)."""


# BLS: a model's calls to the server (aside messages both ways, matched by call id, never by order).


class Call(NamedTuple):
    """stub → host: run `request` on `model` / `version` ("": the latest) through the server's core.

    The inputs lie in a sealed region the stub made for this call (fd tag `c<call_id>`, `size` bytes; 0: no
    region). Answered by CallResult or CallFailed with the same `call_id`.
    """

    call_id: int
    model: str
    version: str
    request: RequestHeader
    size: int
    timeout_us: int  # 0: none


class Control(NamedTuple):
    """stub → host: `action` "ready" (`text`: the version), "load" (`text`: a JSON config; `files`: UINT8
    descriptors named by path, in region `c<call_id>` of `size` bytes) or "unload" (`flag`: unload dependents)
    of `model`. Answered by CallResult (`value`: is ready) or CallFailed."""

    call_id: int
    action: str
    model: str
    text: str
    flag: bool
    files: list[Descriptor]
    size: int


class CallResult(NamedTuple):
    """host → stub: the call succeeded; outputs in a region of `size` bytes (fd tag `r<call_id>`; 0: none)."""

    call_id: int
    outputs: list[Descriptor]
    size: int
    value: bool = False  # a Control's answer (is_model_ready)


class CallFailed(NamedTuple):
    """host → stub: the call failed with a pb_utils.TritonError `code` and `message`."""

    call_id: int
    code: int
    message: str


# --- decoupled responses and cancellation --------------------------------------------------------------------


class ResponseRead(NamedTuple):  # host → stub
    """The host has read the Response of `token`: its bytes in the response region are free."""

    token: int


class ResponseRegion(NamedTuple):  # host → stub
    """The answer to ResponseGrow: a new response region of `size` bytes (fd socket, tag `r`), or 0: refused."""

    size: int


class Cancel(NamedTuple):  # host → stub
    """The client of request `item` (its position) of batch `seq` went away: its `is_cancelled()` turns true."""

    seq: int
    item: int


class Response(NamedTuple):  # stub → host
    """One response of request `item` (its position) of batch `seq` (outputs in the response region), `final` or not.

    `entry` None: no response, only the final flag (`send(None, FINAL)`). `token` > 0: the entry has outputs, the
    host answers ResponseRead(token) once it has read them; 0: none.
    """

    seq: int
    item: int
    entry: ResponseEntry | None
    final: bool
    token: int


class ResponseGrow(NamedTuple):  # stub → host
    """A response needs a response region of at least `size` bytes: the host answers ResponseRegion."""

    size: int


# -- custom metrics (pb_utils.MetricFamily) -----------------------------------------------------------------------
# Stub → host, aside messages (any time, from any thread of the model). The ids of families and metrics are the
# stub's own; the host checks them per instance. An `ask` is answered by MetricAnswer with the same ask; updates
# and deletes are not answered (the stub checks kinds and values first, the host again). Values that are not
# finite travel as "NaN", "+Inf" or "-Inf" (JSON has no such numbers).


class MetricFamilyNew(NamedTuple):
    ask: int
    family: int
    name: str
    description: str
    kind: int  # 0 counter, 1 gauge, 2 histogram


class MetricNew(NamedTuple):
    ask: int
    metric: int
    family: int
    labels: dict[str, str]
    buckets: list[float] | None  # histograms only


class MetricUpdate(NamedTuple):
    metric: int
    op: int  # 0 increment, 1 set, 2 observe
    value: float | str


class MetricValue(NamedTuple):
    ask: int
    metric: int


class MetricDelete(NamedTuple):
    """The model dropped its MetricFamily (kind 0: with its metrics) or Metric (kind 1) object."""

    kind: int
    id: int


class MetricAnswer(NamedTuple):  # host → stub
    """The answer to an ask: the value (MetricValue), or the error for the model ("" if none)."""

    ask: int
    value: float | str
    error: str


METRIC_MESSAGES = (MetricFamilyNew, MetricNew, MetricUpdate, MetricValue, MetricDelete)
_NON_FINITE = {"NaN": float("nan"), "+Inf": float("inf"), "-Inf": float("-inf")}


def wire_float(value: float) -> float | str:
    """`value` as a frame carries it."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return value


def float_of(value: float | str) -> float:
    """The number a frame carried (checked by the decoder)."""
    return _NON_FINITE[value] if type(value) is str else float(value)


HostMessage = (
    Init
    | Execute
    | OutputRegion
    | Finalize
    | CallResult
    | CallFailed
    | ResponseRead
    | ResponseRegion
    | Cancel
    | MetricAnswer
)
StubMessage = (
    Ready
    | InitFailed
    | AutoCompleted
    | BatchResult
    | BatchFailed
    | Grow
    | Log
    | Finalized
    | Call
    | Control
    | Response
    | ResponseGrow
)
MetricMessage = MetricFamilyNew | MetricNew | MetricUpdate | MetricValue | MetricDelete
Message = HostMessage | StubMessage | MetricMessage

_KINDS: dict[type, str] = {
    Init: "init",
    Execute: "exec",
    OutputRegion: "out",
    Finalize: "fini",
    Ready: "ready",
    InitFailed: "fail",
    AutoCompleted: "auto",
    BatchResult: "result",
    BatchFailed: "error",
    Grow: "grow",
    Log: "log",
    Finalized: "done",
    Call: "call",
    Control: "ctl",
    CallResult: "callok",
    CallFailed: "callerr",
    ResponseRead: "read",
    ResponseRegion: "rregion",
    Cancel: "cancel",
    Response: "response",
    ResponseGrow: "rgrow",
    MetricFamilyNew: "mfam",
    MetricNew: "mnew",
    MetricUpdate: "mset",
    MetricValue: "mval",
    MetricDelete: "mdel",
    MetricAnswer: "mans",
}


def encode(message: Message) -> bytes:
    """One frame: the length prefix and `[kind, *fields]`."""
    # orjson writes only exact tuples itself; `default` gets the nested NamedTuples (RequestHeader, ResponseEntry)
    payload = orjson.dumps((_KINDS[type(message)], *message), default=tuple)
    return FRAME_HEADER.pack(len(payload)) + payload


def _int(value: object) -> int:
    """What a peer sent, checked field by field (ProtocolError on anything else)."""
    if type(value) is not int or value < 0:
        raise ProtocolError("expected a non-negative integer")
    return value


def _str(value: object) -> str:
    if type(value) is not str:
        raise ProtocolError("expected a string")
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
    seq, responses, started, finished, execute_started, execute_finished = _fields(fields, 6)
    _naturals(seq, started, finished, execute_started, execute_finished)
    entries = [_check_entry(entry) for entry in _list(responses)]
    return _new(BatchResult, (seq, entries, started, finished, execute_started, execute_finished))


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


def _check_empty(kind: type[Finalize] | type[Ready] | type[Finalized]) -> Callable[[list[object]], Message]:
    def check(fields: list[object]) -> Message:
        _fields(fields, 0)
        return kind()

    return check


def _check_init_failed(fields: list[object]) -> InitFailed:
    error, trace = _fields(fields, 2)
    return InitFailed(str(error), str(trace))


def _check_batch_failed(fields: list[object]) -> BatchFailed:
    seq, error, trace = _fields(fields, 3)
    return BatchFailed(_int(seq), str(error), str(trace))


def _check_call(fields: list[object]) -> Call:
    """From a stub (untrusted): every field is checked; descriptors again when their tensors are read."""
    call_id, model, version, header, size, timeout_us = _fields(fields, 6)
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
    return Call(call_id, _str(model), _str(version), _new(RequestHeader, header), size, timeout_us)  # type: ignore[arg-type]


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
    call_id, outputs, size, value = _fields(fields, 4)
    _naturals(call_id, size)
    return CallResult(call_id, _list(outputs), size, bool(value))  # type: ignore[arg-type]


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
    "read": _check_one(ResponseRead),
    "rregion": _check_one(ResponseRegion),
    "cancel": _check_cancel,
    "mans": _check_metric_answer,
}
_STUB_MESSAGES: dict[object, Callable[[list[object]], Message]] = {
    "ready": _check_empty(Ready),
    "fail": _check_init_failed,
    "auto": _check_auto,
    "result": _check_result,
    "error": _check_batch_failed,
    "grow": _check_pair(Grow),
    "log": _check_log,
    "done": _check_empty(Finalized),
    "call": _check_call,
    "ctl": _check_control,
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


class FrameDecoder(Generic[_M]):
    """Splits a byte stream into messages; owned by one reader (the event loop, or the stub's main thread)."""

    def __init__(self, decode: Callable[[bytes | bytearray | memoryview], _M]) -> None:
        self._decode = decode
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[_M]:
        """Add received bytes and return every message now complete.

        Raises:
            ProtocolError: a frame is larger than MAX_FRAME_BYTES or is not a valid message.
        """
        if self._buffer:
            self._buffer += data
            data = self._buffer
        messages: list[_M] = []
        start = 0
        size = len(data)
        while size - start >= FRAME_HEADER.size:
            (length,) = FRAME_HEADER.unpack_from(data, start)
            if length > MAX_FRAME_BYTES:
                raise ProtocolError("frame too large")
            end = start + FRAME_HEADER.size + length
            if size < end:
                break
            messages.append(self._decode(memoryview(data)[start + FRAME_HEADER.size : end]))
            start = end
        if data is self._buffer:
            del self._buffer[:start]
        elif start < size:
            self._buffer = bytearray(data[start:])  # usually frames arrive whole: nothing is kept
        return messages
