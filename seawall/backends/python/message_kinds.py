"""The kinds of the stub protocol: one NamedTuple per message, their unions per direction, and the float helpers
of metric values. `messages` documents the protocol and re-exports all of these; import them from there.

Imports nothing but `ipc`'s descriptor type.
"""

from __future__ import annotations

from typing import NamedTuple

from seawall.backends.python.ipc import Descriptor

#: The Init mode of a throw-away backend worker that only describes its model (auto-complete of the onnxruntime
#: backend): the runtime parses the model in the stub, and the host gets a JSON-like description as AutoCompleted.
DESCRIBE_MODE = "describe"


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
    """initialize() returned; `checks_readiness`: the model defines `is_ready()` (asked with ReadyCheck)."""

    checks_readiness: bool = False


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
    written), and when execute() itself started and returned (CLOCK_MONOTONIC ns, the host's clock).

    `inputs_kept`: the model still holds something over the slot's input region (an input array, a view of one,
    a request): the host must not write that region again, and passes the slot a fresh one before its next batch.
    """

    seq: int
    responses: list[ResponseEntry]
    started_ns: int
    finished_ns: int
    execute_started_ns: int = 0
    execute_finished_ns: int = 0
    inputs_kept: bool = False


class BatchFailed(NamedTuple):
    """execute() raised or returned something unusable: every request of the batch fails with `error`."""

    seq: int
    error: str
    trace: str  # "" for the backend's own messages (nothing to log)
    inputs_kept: bool = False  # as BatchResult's (a model may keep an input, then raise)


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
    region), or, when they are small (`size` ≤ ipc.INLINE_BYTES), in `inline` (base64 of the `size` bytes such a
    region would hold; no region then). Answered by CallResult or CallFailed with the same `call_id`.
    """

    call_id: int
    model: str
    version: str
    request: RequestHeader
    size: int
    timeout_us: int  # 0: none
    inline: str = ""  # the inputs' bytes themselves (base64) instead of a region: small calls


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
    """host → stub: the call succeeded; outputs in a region of `size` bytes (fd tag `r<call_id>`; 0: none), or in
    `inline` as Call's inputs when small."""

    call_id: int
    outputs: list[Descriptor]
    size: int
    value: bool = False  # a Control's answer (is_model_ready)
    inline: str = ""


class CallFailed(NamedTuple):
    """host → stub: the call failed with a pb_utils.TritonError `code` and `message`."""

    call_id: int
    code: int
    message: str


class StreamCall(NamedTuple):
    """stub → host: `exec(decoupled=True)`: as Call, but answered by CallStreamed messages (one per response the
    called model sends, the last `final`), or by CallFailed if the call fails before its first response."""

    call_id: int
    model: str
    version: str
    request: RequestHeader
    size: int
    timeout_us: int  # 0: none
    inline: str = ""


class CallStreamed(NamedTuple):
    """host → stub: response `position` (0, 1, ...) of StreamCall `call_id`: its outputs in a region of `size`
    bytes (fd tag `s<call_id>.<position>`; 0: none), or the called model's error (`error_code` not None); `final`: the
    call's last message (an empty final one: the model sent nothing more). Small outputs: in `inline`, as Call's."""

    call_id: int
    position: int
    outputs: list[Descriptor]
    size: int
    error_code: int | None
    error_message: str
    final: bool
    inline: str = ""


class CallCancel(NamedTuple):
    """stub → host: the model cancelled StreamCall `call_id` (`iterator.cancel()`); a final CallStreamed with a
    CANCELLED error follows unless the call had ended."""

    call_id: int


# --- decoupled responses and cancellation --------------------------------------------------------------------


class ResponseRead(NamedTuple):  # host → stub
    """The host has read the Response of `token`: its bytes in the response region are free."""

    token: int


class ResponseRegion(NamedTuple):  # host → stub
    """The answer to ResponseGrow: a new response region of `size` bytes (fd socket, tag `r`), or 0: refused."""

    size: int


class ReadyCheck(NamedTuple):  # host → stub
    """Run the model's `is_ready()` (on a thread of its own, beside execute) and answer ReadyAnswer(`ask`)."""

    ask: int


class ReadyAnswer(NamedTuple):  # stub → host
    """What `is_ready()` returned (`error`: why it failed, "" if it did not; then `ready` is False)."""

    ask: int
    ready: bool
    error: str


class Cancel(NamedTuple):  # host → stub
    """The client of request `item` (its position) of batch `seq` went away: its `is_cancelled()` turns true."""

    seq: int
    item: int


class Response(NamedTuple):  # stub → host
    """One response of request `item` (its position) of batch `seq`, `final` or not: its outputs lie in the
    response region, or (`size` bytes in all, at most `ipc.INLINE_BYTES`) travel in `inline`, as a Call's do.

    `entry` None: no response, only the final flag (`send(None, FINAL)`). `token` > 0: the entry has outputs, the
    host answers ResponseRead(token) once it has read them (and its reader has room); 0: none.
    """

    seq: int
    item: int
    entry: ResponseEntry | None
    final: bool
    token: int
    size: int = 0
    inline: str = ""


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
#: the non-finite floats a frame carries by name (JSON has none)
NON_FINITE = {"NaN": float("nan"), "+Inf": float("inf"), "-Inf": float("-inf")}


def wire_float(value: float) -> float | str:
    """`value` as a frame carries it."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return value


def float_of(value: float | str) -> float:
    """The number a frame carried (checked by the decoder)."""
    return NON_FINITE[value] if type(value) is str else float(value)


HostMessage = (
    Init
    | Execute
    | OutputRegion
    | Finalize
    | CallResult
    | CallFailed
    | CallStreamed
    | ReadyCheck
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
    | StreamCall
    | CallCancel
    | ReadyAnswer
    | Response
    | ResponseGrow
)
#: what model code sends to the host (BLS and model control), served by `calls.CallServer`
CallMessage = Call | Control | StreamCall | CallCancel


def call_inline(message: Call | Control | StreamCall) -> str:
    """The input bytes a call carries inline (base64; "" for Control, which always uses a region)."""
    return "" if isinstance(message, Control) else message.inline


def carries_region(message: Call | Control | StreamCall) -> bool:
    """Whether a call comes with a sealed region of its inputs (fd tag `c<call_id>`): it has bytes, not inline."""
    return bool(message.size) and not call_inline(message)


CALL_MESSAGES = (Call, Control, StreamCall, CallCancel)
MetricMessage = MetricFamilyNew | MetricNew | MetricUpdate | MetricValue | MetricDelete
Message = HostMessage | StubMessage | MetricMessage
