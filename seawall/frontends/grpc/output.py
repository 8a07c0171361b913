"""The sending side of a lean HTTP/2 connection: frames queued in order and written at once (one gathering write), each
call's answer (response headers, messages, trailers) cut into DATA frames as the peer's windows (connection and stream,
RFC 9113 6.9) and frame size allow, the trailers after the last byte.

`http2.Http2Connection` decides what to answer and when a stream ends; this only frames and paces it. Imports
only the standard library and `frames`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from seawall.frontends.grpc.frames import (
    DATA,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR,
    HEADERS,
    RESPONSE_HEADERS,
    ConnectionError_,
    Stream,
    Trailers,
    frame,
)

MAX_WINDOW = (1 << 31) - 1
#: one gRPC message to send: its bytes, or its parts in order (sent as they are, never joined here)
Message = bytes | memoryview | list[bytes | memoryview]


class Output:
    """What one connection has to send. `answered(stream)` is called once a stream's trailers are queued."""

    def __init__(self, frame_size: int, answered: Callable[[Stream], None]) -> None:
        self._answered = answered
        self._queue: list[bytes | memoryview] = []
        self.send_window = 65535  # connection-level window the peer gave us
        self.initial_window = 65535  # the peer's SETTINGS_INITIAL_WINDOW_SIZE: a new stream's window
        self.frame_size = frame_size  # the peer's SETTINGS_MAX_FRAME_SIZE (capped)

    def add(self, data: bytes) -> None:
        """Queue a frame (control frames: they are not flow controlled)."""
        self._queue.append(data)

    def take(self) -> list[bytes | memoryview]:
        """Everything queued, in order, for one (gathering) write; the queue is empty after. Slices of a large
        message are views of it: the message is copied only by the write itself."""
        parts, self._queue = self._queue, []
        return parts

    def message(self, stream: Stream, message: Message) -> None:
        """Queue one gRPC message of the stream's answer (after its response headers), as the windows allow."""
        if not stream.headers_sent:
            stream.headers_sent = True
            self._queue.append(frame(HEADERS, END_HEADERS, stream.id, RESPONSE_HEADERS))
        parts = message if isinstance(message, list) else [message]
        size = sum(map(len, parts))
        pending = stream.pending
        if size < 65536:
            pending.append(b"".join([size.to_bytes(5, "big"), *parts]))
            self.pump(stream)
            return
        pending.append(size.to_bytes(5, "big"))  # then slices of views: copied only by the write itself...
        pending.extend(memoryview(part) for part in parts if len(part))
        self.pump(stream)
        for index, item in enumerate(pending):  # ...but what the windows hold back of a mutable buffer gets its own
            if type(item) is memoryview and type(item.obj) is not bytes:  # copy: a model may write its arrays again
                pending[index] = bytes(item)

    def trailers(self, stream: Stream, block: bytes) -> None:
        """End the stream's answer with trailers: at once when nothing was sent (a trailers-only response),
        else after its pending data."""
        if not stream.headers_sent:
            stream.headers_sent = True
            self._queue.append(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, RESPONSE_HEADERS + block))
            self._answered(stream)
        else:
            stream.pending.append(Trailers(block))
            self.pump(stream)

    def window_update(self, stream: Stream | None, increment: int) -> None:
        """The peer opened the connection's window (`stream` None) or a stream's.

        Raises:
            ConnectionError_: the connection's window went over 2^31-1.
        """
        if stream is not None:
            stream.send_window += increment
            self.pump(stream)
            return
        self.send_window += increment
        if self.send_window > MAX_WINDOW:
            raise ConnectionError_(FLOW_CONTROL_ERROR, "connection window overflow")

    def new_initial_window(self, value: int, streams: Iterable[Stream]) -> None:
        """The peer changed SETTINGS_INITIAL_WINDOW_SIZE: every open stream's window moves by the difference.

        Raises:
            ConnectionError_: above 2^31-1.
        """
        if value > MAX_WINDOW:
            raise ConnectionError_(FLOW_CONTROL_ERROR, "window too large")
        delta, self.initial_window = value - self.initial_window, value
        for stream in streams:
            stream.send_window += delta

    def pump_all(self, streams: Iterable[Stream]) -> None:
        for stream in list(streams):
            if stream.pending:
                self.pump(stream)

    def pump(self, stream: Stream) -> None:
        """Queue what the windows allow of the stream's pending data, as DATA frames of the peer's frame size."""
        pending = stream.pending
        out = self._queue
        while pending:
            if isinstance(pending[0], Trailers):
                out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, pending.popleft().block))
                self._answered(stream)
                break
            room = min(stream.send_window, self.send_window, self.frame_size)
            if room <= 0:
                break
            parts: list[bytes | memoryview] = []
            size = 0
            while pending and size < room and not isinstance(pending[0], Trailers):
                item = pending[0]
                take = room - size
                if len(item) <= take:
                    parts.append(pending.popleft())
                    size += len(item)
                else:
                    parts.append(item[:take])
                    pending[0] = item[take:]
                    size += take
            stream.send_window -= size
            self.send_window -= size
            out.append(bytes((size >> 16, (size >> 8) & 0xFF, size & 0xFF, DATA, 0)) + stream.id.to_bytes(4, "big"))
            out.extend(parts)
        if not pending:
            stream.wake()
