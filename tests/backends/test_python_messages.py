"""The python backend's stub protocol (`messages`): every kind survives its trip, and what a peer may not send
is refused as a ProtocolError before any field is used (a stub is untrusted: its frames are checked field by
field). The end-to-end behaviour of the protocol is covered by the backend's server tests."""

from __future__ import annotations

import pytest

from seawall.backends.python import messages
from seawall.backends.python.ipc import ProtocolError
from seawall.backends.python.messages import (
    AutoCompleted,
    BatchFailed,
    BatchResult,
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
    RequestHeader,
    Response,
    ResponseEntry,
    ResponseGrow,
    ResponseRead,
    ResponseRegion,
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
]
STUB_MESSAGES = [
    Ready(),
    InitFailed("ValueError: no", "Traceback ..."),
    AutoCompleted(None),
    AutoCompleted({"max_batch_size": 8}),
    BatchResult(1, [ResponseEntry([["OUTPUT0", "BYTES", [2], 64, 10]]), ResponseEntry([], 3, "bad input")], 5, 9),
    BatchFailed(2, "execute failed", ""),
    Grow(0, 1 << 21),
    Log(2, "line"),
    Finalized(),
    Response(1, 0, ResponseEntry([["OUT", "INT32", [1], 0, 4]]), False, 1),
    Response(1, 1, ResponseEntry([], 3, "bad input"), True, 0),
    Response(2, 0, None, True, 0),
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
        (b'["result", 1, [], 0]', "wrong number of fields"),
        (b'["result", -1, [], 0, 0]', "expected a non-negative integer"),
        (b'["result", 1, {}, 0, 0]', "expected a list"),
        (b'["result", 1, [[[], "3", ""]], 0, 0]', "bad response entry"),
        (b'["result", 1, [[[], null, 7]], 0, 0]', "bad response entry"),
        (b'["result", 1, [[{}, null, ""]], 0, 0]', "bad response entry"),
        (b'["result", 1, [[["x"], null, ""]], 0, 0]', "bad tensor descriptor"),
        (b'["result", 1, [[[], null]], 0, 0]', "bad response entry"),
        (b'["grow", 0, 1.5]', "expected a non-negative integer"),
        (b'["grow", true, 16]', "expected a non-negative integer"),
        (b'["error", "1", "x", ""]', "expected a non-negative integer"),
        (b'["auto", []]', "expected an object"),
        (b'["response", 1, 0, [[], null, ""], 1, 0]', "bad response"),  # final must be a bool
        (b'["response", 1, 0, null, false, 0]', "only a final response may be empty"),
        (b'["response", 1, 0, null, true, 3]', "only a final response may be empty"),
        (b'["response", 1, 0, [[["O", "INT32", [1], 0, 4]], null, ""], false, 0]', "a token exactly when"),
        (b'["response", 1, 0, [[], null, ""], false, 2]', "a token exactly when"),
        (b'["response", 1, -1, [[], null, ""], false, 0]', "expected a non-negative integer"),
        (b'["response", 1, 0, [[], "1", ""], true, 0]', "bad response entry"),
        (b'["response", 1, 0, [[7], null, ""], true, 0]', "bad tensor descriptor"),
        (b'["response", 1, 0, [[], null, ""], true]', "wrong number of fields"),
        (b'["rgrow", -5]', "expected a non-negative integer"),
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
