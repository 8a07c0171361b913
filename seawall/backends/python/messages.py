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
                  (a backend worker: "describe"  | AutoCompleted with its model's description, or InitFailed)
    Execute       one batch in one slot; after   | BatchResult or BatchFailed, with the Execute's seq; inputs_kept:
                  inputs_kept, a fresh input one | the model holds something over the slot's input region still,
                                                 | which the host then never writes again
    OutputRegion  answers Grow (size 0: refused) | Grow: the running batch needs a bigger output region
    Finalize      run finalize(), then exit      | Finalized
                                                 | Log: any time (pb_utils.Logger)
    MetricAnswer  answers an ask                 | Metric*: any time (pb_utils.MetricFamily; see its block)
    CallResult, CallFailed (by call id)          | Call, Control: from model code (BLS, model control)
    CallStreamed..., or CallFailed (by call id)  | StreamCall: exec(decoupled=True); CallCancel: its cancel()
    ReadyCheck    runs is_ready() (a thread)     | ReadyAnswer (by ask; only if Ready said the model has is_ready)

Decoupled models (`model_transaction_policy { decoupled: true }`):

    Execute       one batch                      | BatchResult (no entries) once execute() returned, or BatchFailed
    ResponseRead  the Response's bytes are free  | Response: a response_sender.send(...), any time, any thread
    ResponseRegion answers ResponseGrow (0: no)  | ResponseGrow: a response needs a bigger response region
    Cancel        a request's client went away   |

A Response's outputs of at most `ipc.INLINE_BYTES` in all ride in the message (base64 in `inline`, `size` bytes, as
a Call's); larger ones lie in the stub's one response region (fd tag `r`, made on the first ResponseGrow), used in
two halves, each reused once the host answered ResponseRead with the token of the response in it. Every Response
with outputs has a token, and the host holds its ResponseRead back while the request's reader is behind
(backpressure): the stub waits for it before reusing a half, or before more than 16 inline responses
(`stub_responses.INLINE_WINDOW`) would be in flight. Cancel sets the flag behind `is_cancelled()` of one
request (of any model, decoupled or not); Response, ResponseRead, ResponseRegion and Cancel are aside messages,
never answers.

The stub answers messages in the order they came (an `async def execute` model's batches may run at once, but
their results still leave in order), so the host matches each answer to its oldest unanswered message; Log,
Grow, Call, Control, Response and ResponseGrow are aside messages, handled as they come (`StubProcess.on_message`).

Growing the protocol: a kind is a NamedTuple (`message_kinds`), a line in `_KINDS` and a `_check_*` function in its
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
  Streamed BLS (exec(decoupled=True), built): `StreamCall` (fields as Call) is answered by `CallStreamed(call id,
  position, outputs, size, error code, error message, final)` per response of the called model (outputs in a
  sealed region the host made per response, tag `s<id>.<position>`), or by CallFailed before the first one;
  `CallCancel(call id)` (iterator.cancel()) ends it with a final CANCELLED error.
  Small BLS tensors (≤ `ipc.INLINE_BYTES` in all) ride inside Call / StreamCall / CallResult / CallStreamed as
  base64 in their trailing `inline` field instead of a region (no fd is passed then); a frame may leave that
  field out when it is empty.

Why NamedTuples: immutable and typed like frozen dataclasses, but built at tuple speed (a frozen slotted
dataclass costs ~1 µs more per object, and a RequestHeader and a ResponseEntry are built per request on both
sides of the hot path); their field order is the wire's order.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Generic, TypeVar

import orjson

from seawall.backends.python.ipc import ProtocolError
from seawall.backends.python.message_decoding import decode_host_message as decode_host_message
from seawall.backends.python.message_decoding import decode_stub_message as decode_stub_message
from seawall.backends.python.message_kinds import CALL_MESSAGES as CALL_MESSAGES
from seawall.backends.python.message_kinds import DESCRIBE_MODE as DESCRIBE_MODE
from seawall.backends.python.message_kinds import METRIC_MESSAGES as METRIC_MESSAGES
from seawall.backends.python.message_kinds import AutoCompleted as AutoCompleted
from seawall.backends.python.message_kinds import BatchFailed as BatchFailed
from seawall.backends.python.message_kinds import BatchResult as BatchResult
from seawall.backends.python.message_kinds import Call as Call
from seawall.backends.python.message_kinds import CallCancel as CallCancel
from seawall.backends.python.message_kinds import CallFailed as CallFailed
from seawall.backends.python.message_kinds import CallMessage as CallMessage
from seawall.backends.python.message_kinds import CallResult as CallResult
from seawall.backends.python.message_kinds import CallStreamed as CallStreamed
from seawall.backends.python.message_kinds import Cancel as Cancel
from seawall.backends.python.message_kinds import Control as Control
from seawall.backends.python.message_kinds import Execute as Execute
from seawall.backends.python.message_kinds import Finalize as Finalize
from seawall.backends.python.message_kinds import Finalized as Finalized
from seawall.backends.python.message_kinds import Grow as Grow
from seawall.backends.python.message_kinds import HostMessage as HostMessage
from seawall.backends.python.message_kinds import Init as Init
from seawall.backends.python.message_kinds import InitFailed as InitFailed
from seawall.backends.python.message_kinds import Log as Log
from seawall.backends.python.message_kinds import Message as Message
from seawall.backends.python.message_kinds import MetricAnswer as MetricAnswer
from seawall.backends.python.message_kinds import MetricDelete as MetricDelete
from seawall.backends.python.message_kinds import MetricFamilyNew as MetricFamilyNew
from seawall.backends.python.message_kinds import MetricMessage as MetricMessage
from seawall.backends.python.message_kinds import MetricNew as MetricNew
from seawall.backends.python.message_kinds import MetricUpdate as MetricUpdate
from seawall.backends.python.message_kinds import MetricValue as MetricValue
from seawall.backends.python.message_kinds import OutputRegion as OutputRegion
from seawall.backends.python.message_kinds import Ready as Ready
from seawall.backends.python.message_kinds import ReadyAnswer as ReadyAnswer
from seawall.backends.python.message_kinds import ReadyCheck as ReadyCheck
from seawall.backends.python.message_kinds import RequestHeader as RequestHeader
from seawall.backends.python.message_kinds import Response as Response
from seawall.backends.python.message_kinds import ResponseEntry as ResponseEntry
from seawall.backends.python.message_kinds import ResponseGrow as ResponseGrow
from seawall.backends.python.message_kinds import ResponseRead as ResponseRead
from seawall.backends.python.message_kinds import ResponseRegion as ResponseRegion
from seawall.backends.python.message_kinds import StreamCall as StreamCall
from seawall.backends.python.message_kinds import StubMessage as StubMessage
from seawall.backends.python.message_kinds import call_inline as call_inline
from seawall.backends.python.message_kinds import carries_region as carries_region
from seawall.backends.python.message_kinds import float_of as float_of
from seawall.backends.python.message_kinds import wire_float as wire_float

#: Little-endian u32 byte count in front of every frame.
FRAME_HEADER = struct.Struct("<I")
#: Largest frame either side accepts (headers only; tensor bytes travel in shared memory).
MAX_FRAME_BYTES = 64 * 1024 * 1024

_M = TypeVar("_M")


_KINDS: dict[type, str] = {
    Init: "init",
    Execute: "exec",
    OutputRegion: "out",
    Finalize: "fini",
    Ready: "ready",
    ReadyCheck: "rcheck",
    ReadyAnswer: "rans",
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
    StreamCall: "scall",
    CallStreamed: "sresp",
    CallCancel: "scancel",
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
