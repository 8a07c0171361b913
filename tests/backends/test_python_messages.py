"""The python backend's stub protocol (`messages`): every kind survives its trip, and what a peer may not send
is refused as a ProtocolError before any field is used (a stub is untrusted: its frames are checked field by
field). The end-to-end behaviour of the protocol is covered by the backend's server tests."""

from __future__ import annotations

import numpy as np
import pytest

from seawall.backends.python import ipc, messages
from seawall.backends.python.ipc import ProtocolError
from seawall.backends.python.messages import (
    AutoCompleted,
    BatchFailed,
    BatchResult,
    CallCancel,
    CallStreamed,
    Cancel,
    Execute,
    Finalize,
    Finalized,
    Grow,
    Init,
    InitFailed,
    Log,
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
)

_HEADER = RequestHeader("r1", [["INPUT0", "FP32", [1, 4], 0, 16]], ["OUTPUT0"], 7, 3, {"p": "v"})
HOST_MESSAGES = [
    Init("model", "m", "/r/m/1/model.py", "/r/m/1", "/r/m", [{"1/model.py": "ab"}], {"model_name": "m"}, None),
    Init("auto_complete", "m", "/f", "/v", "/m", [], {}, {"name": "m", "input": []}),
    Execute(1, 0, [_HEADER, RequestHeader("", [], [], "seq-a", 0, {})]),
    Execute(2, 3, [], 4096, 8192),
    OutputRegion(1, 0),
    Finalize(),
    ResponseRead(3),
    ResponseRegion(1 << 20),
    Cancel(4, 1),
    CallStreamed(5, 0, [["OUT", "INT32", [1], 0, 4]], 64, None, "", False),
    CallStreamed(5, 1, [], 0, 3, "bad input", True),
    CallStreamed(6, 0, [], 0, None, "", True),
    ReadyCheck(2),
]
STUB_MESSAGES = [
    Ready(),
    Ready(True),
    StreamCall(5, "square_int32", "", _HEADER, 64, 0),
    CallCancel(5),
    ReadyAnswer(2, False, "RuntimeError: no"),
    InitFailed("ValueError: no", "Traceback ..."),
    AutoCompleted(None),
    AutoCompleted({"max_batch_size": 8}),
    BatchResult(
        1,
        [ResponseEntry([["OUTPUT0", "BYTES", [2], 64, 10]], None, "", {"p": 1}), ResponseEntry([], 3, "bad input")],
        5,
        9,
        6,
        8,
    ),
    BatchResult(3, [], 5, 9, 6, 8, True),
    BatchFailed(2, "execute failed", ""),
    BatchFailed(4, "execute failed", "", True),
    Grow(0, 1 << 21),
    Log(2, "line"),
    Finalized(),
    Response(1, 0, ResponseEntry([["OUT", "INT32", [1], 0, 4]]), False, 1),
    Response(1, 1, ResponseEntry([], 3, "bad input"), True, 0),
    Response(2, 0, None, True, 0),
    Response(2, 1, ResponseEntry([["OUT", "INT32", [1], 0, 4]]), True, 2, 4, "BwAAAA=="),
    ResponseGrow(1 << 21),
]


def _payload(message: messages.Message) -> bytes:
    frame = messages.encode(message)
    (length,) = messages.FRAME_HEADER.unpack_from(frame)
    assert length == len(frame) - messages.FRAME_HEADER.size
    return frame[messages.FRAME_HEADER.size :]


@pytest.mark.parametrize("message", HOST_MESSAGES, ids=lambda m: type(m).__name__)
def test_host_messages_round_trip(message: messages.HostMessage) -> None:
    decoded = messages.decode_host_message(_payload(message))
    assert type(decoded) is type(message) and decoded == message


@pytest.mark.parametrize("message", STUB_MESSAGES, ids=lambda m: type(m).__name__)
def test_stub_messages_round_trip(message: messages.StubMessage) -> None:
    decoded = messages.decode_stub_message(_payload(message))
    assert type(decoded) is type(message) and decoded == message


def test_malformed_host_messages_are_refused() -> None:
    with pytest.raises(ProtocolError, match="bad request header"):
        messages.decode_host_message(b'["exec", 1, 0, [["r1", [], []]], 0, 0]')
    with pytest.raises(ProtocolError, match="expected a non-negative integer"):
        messages.decode_host_message(b'["exec", 1, -2, [], 0, 0]')
    with pytest.raises(ProtocolError, match="expected a non-negative integer"):
        messages.decode_host_message(b'["sresp", 1, 0, [], 0, "3", "", true]')
    with pytest.raises(ProtocolError, match="wrong number of fields"):
        messages.decode_host_message(b'["sresp", 1, 0, [], 0, null, ""]')
    with pytest.raises(ProtocolError, match="expected a non-negative integer"):
        messages.decode_host_message(b'["rcheck", "a"]')


def test_each_direction_accepts_only_its_own_kinds() -> None:
    with pytest.raises(ProtocolError, match="unknown message kind"):
        messages.decode_stub_message(_payload(Finalize()))  # a stub cannot send what the host sends
    with pytest.raises(ProtocolError, match="unknown message kind"):
        messages.decode_host_message(_payload(Ready()))


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"\x80\x03pickle", "frame is not valid JSON"),  # never unpickled: not JSON, refused
        (b'{"t": "result"}', "frame is not a message"),
        (b"[]", "frame is not a message"),
        (b"[7]", "unknown message kind"),
        (b'["result", 1, [], 0, 0]', "wrong number of fields"),
        (b'["result", -1, [], 0, 0, 0, 0, false]', "expected a non-negative integer"),
        (b'["result", 1, [], 0, 0, 0, -5, false]', "expected a non-negative integer"),
        (b'["result", 1, {}, 0, 0, 0, 0, false]', "expected a list"),
        (b'["result", 1, [[[], "3", "", null]], 0, 0, 0, 0, false]', "bad response entry"),
        (b'["result", 1, [[[], null, 7, null]], 0, 0, 0, 0, false]', "bad response entry"),
        (b'["result", 1, [[{}, null, "", null]], 0, 0, 0, 0, false]', "bad response entry"),
        (b'["result", 1, [[["x"], null, "", null]], 0, 0, 0, 0, false]', "bad tensor descriptor"),
        (b'["result", 1, [[[], null, ""]], 0, 0, 0, 0, false]', "bad response entry"),
        (b'["result", 1, [[[], null, "", []]], 0, 0, 0, 0, false]', "bad response entry"),
        (b'["grow", 0, 1.5]', "expected a non-negative integer"),
        (b'["grow", true, 16]', "expected a non-negative integer"),
        (b'["error", "1", "x", "", false]', "expected a non-negative integer"),
        (b'["error", 1, "x", ""]', "wrong number of fields"),
        (b'["error", 1, "x", "", 0]', "expected a boolean"),
        (b'["result", 1, [], 0, 0, 0, 0, 1]', "expected a boolean"),
        (b'["result", 1, [], 0, 0, 0, 0]', "wrong number of fields"),
        (b'["auto", []]', "expected an object"),
        (b'["response", 1, 0, [[], null, "", null], 1, 0]', "bad response"),  # final must be a bool
        (b'["response", 1, 0, null, false, 0]', "only a final response may be empty"),
        (b'["response", 1, 0, null, true, 3]', "only a final response may be empty"),
        (b'["response", 1, 0, [[["O", "INT32", [1], 0, 4]], null, "", null], false, 0]', "a token exactly when"),
        (b'["response", 1, 0, [[], null, "", null], false, 2]', "a token exactly when"),
        (b'["response", 1, -1, [[], null, "", null], false, 0]', "expected a non-negative integer"),
        (b'["response", 1, 0, [[], "1", "", null], true, 0]', "bad response entry"),
        (b'["response", 1, 0, [[7], null, "", null], true, 0]', "bad tensor descriptor"),
        (b'["response", 1, 0, [[], null, "", null], true]', "wrong number of fields"),
        (b'["response", 1, 0, [[], null, "", null], true, 0, 0]', "wrong number of fields"),
        (b'["response", 1, 0, [[["O", "INT32", [1], 0, 4]], null, "", null], true, 1, 4, 7]', "bad inline tensor"),
        (b'["response", 1, 0, [[["O", "INT32", [1], 0, 4]], null, "", null], true, 1, -4, "BwAAAA=="]', "non-negative"),
        (b'["response", 1, 0, [[["O", "INT32", [1], 0, 4]], null, "", null], true, 1, 0, "BwAAAA=="]', "size exactly"),
        (b'["response", 1, 0, [[["O", "INT32", [1], 0, 4]], null, "", null], true, 1, 4, ""]', "size exactly"),
        (b'["response", 1, 0, null, true, 0, 4, "BwAAAA=="]', "only a final response may be empty"),
        (b'["response", 1, 0, [[], null, "", null], true, 0, 4, "BwAAAA=="]', "inline bytes only with"),
        (
            b'["response", 1, 0, [[["O", "INT32", [1], 0, 4]], null, "", null], true, 1, 8, "' + b"A" * 5468 + b'"]',
            "bad inline tensor",
        ),
        (b'["rgrow", -5]', "expected a non-negative integer"),
        (b'["ready"]', "wrong number of fields"),
        (b'["scall", 1, "m", "", ["r", [], []], 0, 0]', "bad request header"),
        (b'["scall", 1, 5, "", ["r", [], [], 0, 0, {}], 0, 0]', "expected a string"),
        (b'["scancel"]', "wrong number of fields"),
        (b'["scancel", -1]', "expected a non-negative integer"),
        (b'["rans", 1, 1, ""]', "expected a boolean"),
        (b'["rans", 1, true]', "wrong number of fields"),
        (b'["rans", 1, false, 7]', "expected a string"),
    ],
)
def test_malformed_stub_messages_are_refused(payload: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        messages.decode_stub_message(payload)


def test_frames_are_split_across_reads_and_bounded() -> None:
    stream = b"".join(messages.encode(message) for message in STUB_MESSAGES)
    decoder = messages.FrameDecoder(messages.decode_stub_message)
    received: list[messages.StubMessage] = []
    for start in range(0, len(stream), 7):  # arbitrary read boundaries
        received += decoder.feed(stream[start : start + 7])
    assert received == STUB_MESSAGES
    with pytest.raises(ProtocolError, match="frame too large"):
        messages.FrameDecoder(messages.decode_stub_message).feed(
            messages.FRAME_HEADER.pack(messages.MAX_FRAME_BYTES + 1)
        )


# -- custom metrics (pb_utils.MetricFamily) ---------------------------------------------------------------------

METRIC_MESSAGES = [
    messages.MetricFamilyNew(1, 7, "requests", "Number of requests", 0),
    messages.MetricNew(2, 8, 7, {"model": "m"}, None),
    messages.MetricNew(3, 9, 7, {}, [0.5, 1.0, 2]),
    messages.MetricUpdate(8, 0, 1.5),
    messages.MetricUpdate(8, 1, "-Inf"),
    messages.MetricValue(4, 8),
    messages.MetricDelete(1, 8),
]


@pytest.mark.parametrize("message", METRIC_MESSAGES, ids=lambda m: type(m).__name__)
def test_metric_messages_round_trip(message: messages.MetricMessage) -> None:
    decoded = messages.decode_stub_message(_payload(message))
    assert type(decoded) is type(message) and decoded == message


def test_metric_answers_round_trip_with_values_json_cannot_hold() -> None:
    for value in (2.5, float("inf"), float("-inf")):
        answer = messages.MetricAnswer(3, messages.wire_float(value), "")
        decoded = messages.decode_host_message(_payload(answer))
        assert decoded == answer and messages.float_of(decoded.value) == value  # type: ignore[union-attr]
    nan = messages.decode_host_message(_payload(messages.MetricAnswer(1, messages.wire_float(float("nan")), "")))
    assert nan.value == "NaN"  # type: ignore[union-attr]
    with pytest.raises(ProtocolError, match="expected a number"):
        messages.decode_host_message(b'["mans", 1, "nan", ""]')
    with pytest.raises(ProtocolError, match="unknown message kind"):
        messages.decode_stub_message(_payload(messages.MetricAnswer(1, 0.0, "")))  # host → stub only


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b'["mfam", 1, 2, "n"]', "wrong number of fields"),
        (b'["mfam", 1, 2, 3, "d", 0]', "expected a string"),
        (b'["mfam", 1, 2, "n", null, 0]', "expected a string"),
        (b'["mfam", 1, 2, "n", "d", -1]', "expected a non-negative integer"),
        (b'["mfam", 1, 2, "n", "d", 1.0]', "expected a non-negative integer"),
        (b'["mnew", 1, 2, 3, ["a"], null]', "expected an object"),
        (b'["mnew", 1, 2, 3, {"a": 1}, null]', "expected a string"),
        (b'["mnew", 1, 2, 3, {}, {"b": 1}]', "expected a list"),
        (b'["mnew", 1, 2, 3, {}, ["1"]]', "expected a number"),
        (b'["mnew", 1, 2, 3, {}, ["+Inf"]]', "bucket boundaries must be finite"),
        (b'["mset", 1, 0, "1"]', "expected a number"),
        (b'["mset", 1, 0, true]', "expected a number"),
        (b'["mset", 1, 0, null]', "expected a number"),
        (b'["mset", -1, 0, 1]', "expected a non-negative integer"),
        (b'["mval", 1]', "wrong number of fields"),
        (b'["mdel", 0, "x"]', "expected a non-negative integer"),
    ],
)
def test_malformed_metric_messages_are_refused(payload: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        messages.decode_stub_message(payload)


def test_small_call_tensors_travel_inline_and_are_checked() -> None:
    """A call's bytes up to ipc.INLINE_BYTES ride in its message (base64): they survive the trip both ways, and
    text longer than the limit needs, bytes that are not base64 or not the size the message says are refused."""
    payloads = [ipc.to_payload("FP32", np.arange(4, dtype=np.float32)), b"\x01\x02\x03"]
    offsets, size = ipc.layout(payloads)
    text = ipc.inline_text(offsets, payloads, size)
    call = messages.decode_stub_message(_payload(StreamCall(3, "m", "", _HEADER, size, 0, text)))
    region = ipc.inline_region(call.inline, call.size)  # type: ignore[union-attr]
    _, _, array = ipc.read_tensor(region, ["INPUT0", "FP32", [4], offsets[0], 16], copy=False)
    assert array.tolist() == [0.0, 1.0, 2.0, 3.0] and array.flags.writeable  # a model may write into it
    assert bytes(region[offsets[1] : offsets[1] + 3]) == b"\x01\x02\x03"
    streamed = CallStreamed(3, 0, [["OUTPUT0", "FP32", [4], 0, 16]], size, None, "", True, text)
    assert messages.decode_host_message(_payload(streamed)) == streamed
    too_long = "A" * (ipc.INLINE_TEXT_MAX + 4)
    with pytest.raises(ProtocolError, match="bad inline tensor bytes"):
        messages.decode_stub_message(_payload(StreamCall(3, "m", "", _HEADER, 16, 0, too_long)))
    with pytest.raises(ProtocolError, match="bad inline tensor bytes"):
        messages.decode_stub_message(b'["scall", 1, "m", "", ["r", [], [], 0, 0, {}], 16, 0, 7]')
    cases = [
        ("!!!!", 3, "not base64"),
        (text, size + 1, "wrong size"),
        (text, ipc.INLINE_BYTES + 1, "larger than allowed"),
        (too_long, 16, "larger than allowed"),
    ]
    for bad, claimed, error in cases:
        with pytest.raises(ProtocolError, match=error):
            ipc.inline_region(bad, claimed)
    with pytest.raises(ProtocolError, match="lies outside"):
        ipc.read_tensor(ipc.inline_region(text, size), ["INPUT0", "FP32", [4], size, 16], copy=False)
