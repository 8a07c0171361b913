"""HTTP/2 frames, error codes and HPACK literals as the lean gRPC stack writes them, the connection error, the
check of a request's header fields, and `Stream`, one gRPC call on a connection (its received messages, its
pending output). Pure data and encoding; `http2.Http2Connection` drives it.

Imports only the standard library and numpy (and `http2` for typing).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from seawall.frontends.grpc.http2 import Http2Connection

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x6
STREAM_CLOSED, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x5, 0x7, 0x8, 0x9, 0xB
SETTING_MAX_CONCURRENT_STREAMS, SETTING_INITIAL_WINDOW_SIZE = 0x3, 0x4
SETTING_MAX_FRAME_SIZE, SETTING_MAX_HEADER_LIST_SIZE = 0x5, 0x6
#: SETTINGS_MAX_FRAME_SIZE's initial value, and the smallest a peer may set (RFC 9113 6.5.2)
DEFAULT_FRAME = 16384


#: a frame's payload: a view of the bytes received, or a copy when the frame came in pieces
Payload = bytes | bytearray | memoryview

#: a request message this large is received into a buffer of its whole size (`Stream.reserve`) instead of one that
#: grows frame by frame, and handed on as a view of it, not copied
_VIEW_MIN_BYTES = 64 * 1024

#: a request message as a call's handler gets it: a view of a large one, the bytes of a small one
RequestMessage = bytes | memoryview


class ConnectionError_(Exception):  # noqa: N818 (a GOAWAY, not a Python error)
    """A connection error (RFC 9113 5.4.1): the connection ends with GOAWAY `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def _int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer with an N-bit prefix (RFC 7541 5.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A header as an HPACK literal without indexing, new name, no Huffman: the peer's table never changes."""
    return b"\x00" + _int(len(name), 7) + name + _int(len(value), 7) + value


def frame(kind: int, flags: int, stream: int, payload: Payload = b"") -> bytes:
    size = len(payload)
    return bytes((size >> 16, (size >> 8) & 0xFF, size & 0xFF, kind, flags)) + stream.to_bytes(4, "big") + payload


def reset(stream: int, code: int) -> bytes:
    """An RST_STREAM frame ending `stream` with error `code`."""
    return frame(RST_STREAM, 0, stream, code.to_bytes(4, "big"))


def settings_frame(settings: Iterable[tuple[int, int]]) -> bytes:
    """A SETTINGS frame of (identifier, value) pairs."""
    return frame(SETTINGS, 0, 0, b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in settings))


def settings_of(payload: Payload) -> Iterator[tuple[int, int]]:
    """The (identifier, value) pairs of a SETTINGS payload.

    Raises:
        ConnectionError_: its length is not a multiple of 6 (FRAME_SIZE_ERROR).
    """
    if len(payload) % 6:
        raise ConnectionError_(FRAME_SIZE_ERROR, "bad SETTINGS length")
    for at in range(0, len(payload), 6):
        yield int.from_bytes(payload[at : at + 2], "big"), int.from_bytes(payload[at + 2 : at + 6], "big")


def unpadded(flags: int, payload: Payload) -> tuple[Payload, int]:
    """A DATA frame's data without its padding, and the padding's size (with its length byte).

    Raises:
        ConnectionError_: the padding is longer than the frame (PROTOCOL_ERROR).
    """
    if not flags & PADDED:
        return payload, 0
    if not payload or payload[0] >= len(payload):
        raise ConnectionError_(PROTOCOL_ERROR, "bad padding")
    return payload[1 : len(payload) - payload[0]], payload[0] + 1


class Stream:
    """One gRPC call: its request headers, the messages it received, and the writing of its answer."""

    __slots__ = (
        "id", "headers", "_connection", "body", "streaming", "_queue", "ended", "send_window", "pending",
        "headers_sent", "finished", "cancelled", "unacked", "consumed", "ahead", "_drained", "working", "task",
        "charged", "_message", "_filled", "_whole",
    )  # fmt: skip

    def __init__(self, connection: Http2Connection, stream_id: int, headers: dict[str, str], streaming: bool):
        self.id = stream_id
        self.headers = headers
        self._connection = connection
        self.body = bytearray()  # received DATA not yet cut into messages
        self._message: memoryview | None = None  # a large message's buffer of its whole size (`reserve`)
        self._filled = 0  # the bytes of `_message` received
        self._whole: list[RequestMessage] = []  # a streaming call's reserved messages received whole, not yet taken
        self.streaming = streaming
        self._queue: asyncio.Queue[RequestMessage | None] | None = asyncio.Queue() if streaming else None
        self.ended = False  # END_STREAM received
        self.send_window = connection.peer_initial_window
        self.pending: deque[Any] = deque()  # DATA payloads (and trailers at the end) waiting for window
        self.headers_sent = self.finished = self.cancelled = False
        self.unacked = 0  # bytes received and not yet given back to the peer's window
        self.consumed = 0  # bytes a streaming call has taken and not yet given back
        self.ahead = 0  # bytes given back before the streaming call took them (a large message arriving)
        self.task: asyncio.Task[None] | None = None  # the call's work
        self._drained: asyncio.Future[None] | None = None
        self.working = False  # a task runs for this stream (it counts against the stream limit until it ends)
        self.charged = 0  # request bytes received and not yet given back to the listener's `HeldBytes`

    # -- receiving ---------------------------------------------------------------------------------------
    def reserve(self, payload: Payload, max_message_bytes: int) -> int:
        """The bytes to set aside for a message that `payload` begins (nothing of the call's request waits
        before it): the whole message, prefix included, when the prefix announces a plain message of
        `_VIEW_MIN_BYTES` up to `max_message_bytes`, else 0 (the body grows as bytes come). Grown frame by frame,
        a 1 MiB message was copied about twice more by reallocation; a buffer of the announced size takes each
        byte once and is not zeroed first (`receive` writes every byte of it before it is handed on)."""
        if self.body or self._message is not None or len(payload) < 5 or payload[0]:
            return 0
        size = int.from_bytes(payload[1:5], "big")
        if not _VIEW_MIN_BYTES <= size <= max_message_bytes or (not self.streaming and len(payload) > 5 + size):
            return 0
        return 5 + size

    def unreserved(self, size: int) -> int:
        """The bytes of a `size`-byte payload that the reserved buffer does not hold already: all of them without
        one, or when they overflow a unary call's (a streaming call's bytes past its reserved message are the
        next message's: `receive` gives them back, to be received in turn)."""
        message = self._message
        return size if message is None or (not self.streaming and self._filled + size > len(message)) else 0

    def receive(self, payload: Payload, reserved: int = 0) -> Payload:
        """Keep `payload`, into the buffer of `reserved` bytes that it begins when given (`reserve`). A payload
        that overflows a unary call's reserved buffer (a second message after the first) turns it into a
        growing body that holds both; for a streaming call, the bytes past its reserved message are returned,
        to be received as the next message's (empty: all kept)."""
        if reserved:
            self._message = np.empty(reserved, np.uint8).data
            self._filled = 0
        message = self._message
        if message is None:
            self.body += payload
            return b""
        end = self._filled + len(payload)
        if end > len(message):
            if not self.streaming:
                self.body = bytearray(message[: self._filled]) + payload
                self._message = None
                return b""
            fit = len(message) - self._filled
            message[self._filled :] = payload[:fit]
            self._filled = end = len(message)
            payload = payload[fit:]
        else:
            message[self._filled : end] = payload
            self._filled = end
            payload = b""
        if self.streaming and end == len(message):
            self._whole.append(message.toreadonly()[5:])
            self._message = None
        return payload

    @property
    def arriving(self) -> int:
        """The bytes of a message not yet whole that the call holds."""
        return self._filled if self._message is not None else len(self.body)

    def take_messages(self) -> list[RequestMessage]:
        """Cut the complete gRPC messages out of `body`.

        Raises:
            ValueError: a compressed message (no grpc-encoding is accepted) or one over the size limit.
        """
        out: list[RequestMessage] = []
        if self._whole:  # reserved messages come before anything the body holds
            out, self._whole = self._whole, []
        body = self.body
        pos = 0
        while len(body) - pos >= 5:
            if body[pos]:
                raise ValueError("compressed messages are not supported")
            size = int.from_bytes(body[pos + 1 : pos + 5], "big")
            if size > self._connection.limits.max_message_bytes:
                raise OverflowError(
                    f"Received message larger than max ({size} vs. {self._connection.limits.max_message_bytes})"
                )
            if len(body) - pos - 5 < size:
                break
            out.append(bytes(body[pos + 5 : pos + 5 + size]))
            pos += 5 + size
        if pos:
            del body[:pos]
        return out

    def take_only_message(self) -> bytes | memoryview | None:
        """A unary call's request when `body` is exactly one whole message within the limits, else None (then
        `take_messages` tells what it holds). A large message is a read-only view of the body, not a copy: the
        stream keeps no body after it.

        Raises:
            ValueError: a compressed message (no grpc-encoding is accepted).
        """
        kept = self._message
        if kept is not None:  # set aside at its announced size: whole once every announced byte came
            self._message = None
            if self._filled == len(kept):
                return kept.toreadonly()[5:]
            self.body = bytearray(kept[: self._filled])
        body = self.body
        if len(body) < 5:
            return None
        if body[0]:
            raise ValueError("compressed messages are not supported")
        size = int.from_bytes(body[1:5], "big")
        if len(body) != 5 + size or size > self._connection.limits.max_message_bytes:
            return None
        if size < _VIEW_MIN_BYTES:
            message = bytes(body[5:])
            body.clear()
            return message
        self.body = bytearray()
        return memoryview(body).toreadonly()[5:]

    def deliver(self, messages: list[RequestMessage], ended: bool) -> None:
        assert self._queue is not None
        for message in messages:
            self._queue.put_nowait(message)
        if ended:
            self._queue.put_nowait(None)

    def messages(self, deserialize: Callable[[RequestMessage], Any] | None) -> Messages:
        """The request messages of a streaming call as they come, each passed through `deserialize` (None: as
        received); the peer's window reopens as each is taken."""
        return Messages(self, deserialize)

    async def next_message(self) -> RequestMessage | None:
        """The next request message of a streaming call (None: the call's requests have ended)."""
        assert self._queue is not None
        message = await self._queue.get()
        if message is not None:
            self._connection.consumed(self, len(message) + 5)
        return message

    # -- sending -----------------------------------------------------------------------------------------
    async def write(self, message: bytes) -> bool:
        """Send one message; wait while the peer's window is closed. False once the call is cancelled."""
        if self.cancelled:
            return False
        self._connection.send_message(self, message)
        while self.pending and not self.cancelled:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
        return not self.cancelled

    def wake(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)


class Messages:
    """The request messages of a streaming call (`Stream.messages`): an async iterator written as a class, since
    the request path is compiled and mypyc compiles no async generator."""

    __slots__ = ("_stream", "_deserialize", "_ended")

    def __init__(self, stream: Stream, deserialize: Callable[[RequestMessage], Any] | None) -> None:
        self._stream = stream
        self._deserialize = deserialize
        self._ended = False

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> Any:
        if self._ended:
            raise StopAsyncIteration
        message = await self._stream.next_message()
        if message is None:
            self._ended = True
            raise StopAsyncIteration
        return message if self._deserialize is None else self._deserialize(message)


#: RFC 9113 8.2.2: connection-specific fields make a request malformed
_CONNECTION_FIELDS = frozenset((b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"))
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":authority", b":path"))
#: bytes a field name must not hold (RFC 9113 8.2.1: controls, space, uppercase, DEL and above; ':' but first)
_BAD_NAME = frozenset((*range(0x21), *range(0x41, 0x5B), *range(0x7F, 0x100), 0x3A))
_BLANK = (b" ", b"\t")


def malformed_request(fields: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a request's header fields make it malformed (RFC 9113 8.2.1, 8.2.2, 8.3.1), None when they do not."""
    pseudo: set[bytes] = set()
    regular = False
    for name, value in fields:
        if not name:
            return "empty field name"
        if name[0] == 0x3A:  # ':'
            if regular or name not in _REQUEST_PSEUDO or name in pseudo:
                return "pseudo-header field misplaced, unknown or repeated"
            if not value and name == b":path":
                return "empty :path"
            pseudo.add(name)
            name = name[1:]
        else:
            regular = True
        if not _BAD_NAME.isdisjoint(name):
            return "invalid character in a field name"
        if 0 in value or 10 in value or 13 in value or value[:1] in _BLANK or value[-1:] in _BLANK:
            return "invalid field value"
        if name in _CONNECTION_FIELDS or (name == b"te" and value != b"trailers"):
            return "connection-specific field"
    if not {b":method", b":scheme", b":path"} <= pseudo:
        return "missing pseudo-header field"
    return None


class Trailers:
    __slots__ = ("block",)

    def __init__(self, block: bytes) -> None:
        self.block = block


RESPONSE_HEADERS = b"\x88" + literal(b"content-type", b"application/grpc")  # :status 200 (static index 8)
_OK_TRAILERS = literal(b"grpc-status", b"0")


def trailers(status: int, message: str) -> bytes:
    if not status and not message:
        return _OK_TRAILERS
    block = literal(b"grpc-status", str(status).encode())
    if message:
        block += literal(b"grpc-message", percent_encode(message))
    return block


def percent_encode(text: str) -> bytes:
    """grpc-message encoding: bytes outside printable ASCII, and '%', as %XX (gRPC over HTTP/2)."""
    data = text.encode("utf-8", errors="replace")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in data):
        return data
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in data)
