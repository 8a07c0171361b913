"""What the `http2_frames` fuzz target (tests/fuzz/http2_target.py) found in the lean HTTP/2 stack, each replayed
over a real socket against a real server with a raw HTTP/2 client: the exact protocol answer, then a healthy server.

- a RST_STREAM in the same read as its stream's HEADERS/DATA held the stream's slot for good;
- a streaming call (ModelStreamInfer) sent a message over the size limit;
- a header block with a malformed field (RFC 9113 §8.2) reached the gRPC handler;
- HEADERS after a unary request's END_STREAM started a second call on the same stream.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator

import hpack
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.e2e.test_grpc_lean import (
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    REFUSED_STREAM,
    RST_STREAM,
    Raw,
    add_sub_message,
    assert_healthy,
    frame,
)
from tests.harness import ServerProcess, start_seawall

STREAM_PATH = "/inference.GRPCInferenceService/ModelStreamInfer"
PROTOCOL_ERROR, STREAM_CLOSED, CANCEL = 0x1, 0x5, 0x8


@pytest.fixture(scope="module")
def small() -> Iterator[ServerProcess]:
    server = start_seawall("--grpc-server=lean", "--grpc-max-concurrent-streams=4", "--grpc-max-message-size=4096")
    yield server
    server.stop()


@pytest.fixture
def connect(small: ServerProcess) -> Iterator[Callable[..., Raw]]:
    """Raw connections to `small`, closed after the test whatever its outcome."""
    opened: list[Raw] = []

    def open_one(settings: bytes = b"") -> Raw:
        opened.append(Raw(small.grpc, settings))
        return opened[-1]

    yield open_one
    for raw in opened:
        raw.close()


def _stream_headers(raw: Raw, stream: int, path: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    block = raw.encoder.encode(
        [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
         ("content-type", "application/grpc"), ("te", "trailers"), *(extra or [])]
    )  # fmt: skip
    return frame(HEADERS, END_HEADERS, stream, block)


def _answers(raw: Raw, seconds: float = 10.0) -> dict[int, list[tuple[str, object]]]:
    """Per stream, what the server sent until `seconds` passed or a GOAWAY came: ("headers", {name: value}),
    ("data", size), ("rst", code); a block is decoded with the connection's one HPACK decoder."""
    decoder = hpack.Decoder()
    out: dict[int, list[tuple[str, object]]] = {}
    for kind, _, stream, payload in raw.frames(seconds):
        if kind == HEADERS:
            out.setdefault(stream, []).append(("headers", dict(decoder.decode(payload))))
        elif kind == DATA and stream:
            out.setdefault(stream, []).append(("data", len(payload)))
        elif kind == RST_STREAM:
            out.setdefault(stream, []).append(("rst", int.from_bytes(payload, "big")))
    return out


def _ended(kind: int, flags: int) -> bool:
    return kind == RST_STREAM or (kind == HEADERS and bool(flags & END_STREAM))


def _until(
    raw: Raw, stream: int, done: Callable[[int, int], bool] = _ended, seconds: float = 10.0
) -> list[tuple[int, int, bytes]]:
    """Frames of `stream` (kind, flags, payload) until `done(kind, flags)` (by default: the stream's end), or
    `seconds` pass."""
    got: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not raw.closed:
        for kind, flags, sid, payload in raw.frames(0.2):
            if sid == stream:
                got.append((kind, flags, payload))
                if done(kind, flags):
                    return got
    return got


def test_reset_in_the_same_read_as_the_request_frees_the_stream(
    small: ServerProcess, connect: Callable[..., Raw]
) -> None:
    """Twice the stream limit of requests, each with HEADERS, DATA and RST_STREAM in one write: every reset stream
    gives its slot back, so a request after them is answered (it was refused forever when the slot leaked)."""
    raw = connect()
    message = add_sub_message()
    streams = range(1, 2 * 2 * 4, 2)
    cancel = CANCEL.to_bytes(4, "big")
    raw.send(
        b"".join(
            raw.headers(s) + frame(DATA, END_STREAM, s, message) + frame(RST_STREAM, 0, s, cancel) for s in streams
        )
    )
    decoder = hpack.Decoder()
    stream, deadline, answer = streams[-1] + 2, time.monotonic() + 20, None
    while answer is None and time.monotonic() < deadline:  # a refused stream is retried on the next id
        raw.send(raw.headers(stream) + frame(DATA, END_STREAM, stream, message))
        for kind, flags, payload in _until(raw, stream):
            if kind == RST_STREAM:
                assert int.from_bytes(payload, "big") == REFUSED_STREAM
            elif kind == HEADERS:
                headers = dict(decoder.decode(payload))
                if flags & END_STREAM:
                    answer = headers
        stream += 2
    assert answer is not None and answer["grpc-status"] == "0", answer
    assert_healthy(small)


def test_oversized_message_on_a_stream_is_resource_exhausted(small: ServerProcess, connect: Callable[..., Raw]) -> None:
    raw = connect()
    oversized = b"\x00" + (5000).to_bytes(4, "big") + bytes(16)  # only the prefix matters: it is refused at once
    raw.send(_stream_headers(raw, 1, STREAM_PATH) + frame(DATA, 0, 1, oversized))
    answer = _answers(raw, 5.0)[1]
    headers = [item for kind, item in answer if kind == "headers"]
    assert headers[-1]["grpc-status"] == "8", answer  # type: ignore[index]
    assert headers[-1]["grpc-message"] == "Received message larger than max (5000 vs. 4096)"  # type: ignore[index]
    assert answer[-1] == ("rst", 0)  # NO_ERROR: the server stops reading the stream it answered
    assert_healthy(small)


def test_oversized_message_after_an_answered_one_ends_the_stream(
    small: ServerProcess, connect: Callable[..., Raw]
) -> None:
    """The stream has already sent a response (its HEADERS are out): the refusal comes as trailers after it."""
    raw = connect()
    raw.send(_stream_headers(raw, 1, STREAM_PATH) + frame(DATA, 0, 1, add_sub_message()))
    first = _until(raw, 1, lambda kind, _: kind == DATA)
    assert [kind for kind, _, _ in first] == [HEADERS, DATA]
    raw.send(frame(DATA, 0, 1, b"\x00" + (5000).to_bytes(4, "big")))
    rest = _until(raw, 1, lambda kind, _: kind == RST_STREAM)
    decoder = hpack.Decoder()
    decoder.decode(first[0][2])
    ends = [(flags, dict(decoder.decode(p))) for kind, flags, p in rest if kind == HEADERS]
    assert ends and ends[-1][0] & END_STREAM, rest
    assert ends[-1][1]["grpc-status"] == "8"
    assert ends[-1][1]["grpc-message"] == "Received message larger than max (5000 vs. 4096)"
    assert (rest[-1][0], rest[-1][2]) == (RST_STREAM, bytes(4))
    assert_healthy(small)


@pytest.mark.parametrize(
    "field",
    [("", "x"), ("X-Upper", "x"), ("bad name", "x"), ("x-value", "a\r\nb"), ("connection", "close"), ("te", "gzip"),
     (":unknown", "x")],
    ids=["empty-name", "uppercase", "space-in-name", "crlf-in-value", "connection-specific", "te-not-trailers",
         "unknown-pseudo"],
)  # fmt: skip
def test_malformed_field_is_a_stream_protocol_error(
    small: ServerProcess, connect: Callable[..., Raw], field: tuple[str, str]
) -> None:
    """RFC 9113 §8.2.1/§8.2.2: the request is malformed, a stream error of type PROTOCOL_ERROR; the connection
    goes on (the next stream on it is answered)."""
    raw = connect()
    raw.send(raw.headers(1, extra=[field]) + frame(DATA, END_STREAM, 1, add_sub_message()))
    assert _answers(raw, 3.0).get(1) == [("rst", PROTOCOL_ERROR)]
    raw.send(raw.headers(3) + frame(DATA, END_STREAM, 3, add_sub_message()))
    answer = _until(raw, 3)
    trailers = [p for kind, flags, p in answer if kind == HEADERS and flags & END_STREAM]
    assert trailers, answer
    assert_healthy(small)


def test_oversized_stream_message_from_tritonclient_ends_the_stream(small: ServerProcess) -> None:
    """The same through tritonclient's streaming API: the callback gets RESOURCE_EXHAUSTED and the stream ends."""
    results: queue.Queue[tuple[object, object]] = queue.Queue()
    with grpcclient.InferenceServerClient(small.grpc) as client:
        client.start_stream(callback=lambda result, error: results.put((result, error)))
        tensor = grpcclient.InferInput("INPUT0", [8192], "FP32")
        tensor.set_data_from_numpy(np.zeros(8192, dtype=np.float32))
        client.async_stream_infer("identity", [tensor])
        result, error = results.get(timeout=20)
        assert result is None and isinstance(error, InferenceServerException)
        assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert "Received message larger than max" in str(error.message())
        client.stop_stream(cancel_requests=True)
    assert_healthy(small)


def test_oversized_message_with_a_response_held_by_flow_control(
    small: ServerProcess, connect: Callable[..., Raw]
) -> None:
    """The client's window is 0, so the stream's first response waits; the refusal of an oversized message still
    goes out at once as trailers (not flow controlled) before the RST_STREAM (a reset alone has no status)."""
    raw = connect((4).to_bytes(2, "big") + (0).to_bytes(4, "big"))
    raw.send(_stream_headers(raw, 1, STREAM_PATH) + frame(DATA, 0, 1, add_sub_message()))
    first = _until(raw, 1, lambda kind, _: kind == HEADERS)
    assert [kind for kind, _, _ in first] == [HEADERS]  # the response's headers; its DATA waits for window
    raw.send(frame(DATA, 0, 1, b"\x00" + (5000).to_bytes(4, "big")))
    rest = _until(raw, 1, lambda kind, _: kind == RST_STREAM)
    decoder = hpack.Decoder()
    decoder.decode(first[0][2])
    assert [kind for kind, _, _ in rest] == [HEADERS, RST_STREAM], rest
    assert rest[0][1] & END_STREAM and dict(decoder.decode(rest[0][2]))["grpc-status"] == "8"
    assert rest[1][2] == bytes(4)
    assert_healthy(small)


def test_refused_message_in_the_frame_that_ends_the_stream(small: ServerProcess, connect: Callable[..., Raw]) -> None:
    """A compressed message in the DATA frame carrying END_STREAM: the call is answered UNIMPLEMENTED and its
    handler ends (it used to wait for the end of the requests for good, holding a task until the server stopped).
    The trailers close the stream (both sides have ended): no RST_STREAM follows (RFC 9113 5.1)."""
    raw = connect()
    raw.send(_stream_headers(raw, 1, STREAM_PATH) + frame(DATA, END_STREAM, 1, b"\x01" + bytes(4)))
    answer = _answers(raw, 3.0)[1]
    assert answer == [
        ("headers", {":status": "200", "content-type": "application/grpc", "grpc-status": "12",
                     "grpc-message": "compressed messages are not supported"}),
    ]  # fmt: skip
    assert_healthy(small)


def test_headers_after_end_stream_is_a_stream_closed_error(small: ServerProcess, connect: Callable[..., Raw]) -> None:
    """RFC 9113 5.1: a frame other than WINDOW_UPDATE, PRIORITY or RST_STREAM on a half-closed (remote) stream is a
    stream error STREAM_CLOSED. Trailers after the request's END_STREAM used to start a second call on the stream
    (answered INTERNAL "expected exactly one request message", then the first call's response after that end)."""
    raw = connect()
    request = raw.headers(1) + frame(DATA, END_STREAM, 1, add_sub_message())  # encoded first: HPACK is ordered
    trailers = frame(HEADERS, END_HEADERS | END_STREAM, 1, raw.encoder.encode([("x-trailer", "t")]))
    raw.send(request + trailers)
    assert _answers(raw, 3.0).get(1) == [("rst", STREAM_CLOSED)]
    raw.send(raw.headers(3) + frame(DATA, END_STREAM, 3, add_sub_message()))
    answer = _until(raw, 3)
    assert answer and answer[-1][0] == HEADERS and answer[-1][1] & END_STREAM, answer
    assert_healthy(small)
