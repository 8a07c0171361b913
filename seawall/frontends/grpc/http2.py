"""A lean HTTP/2 server connection that carries gRPC calls (RFC 9113, gRPC over HTTP/2), for the `lean` listener.

Imports only the standard library and `hpack` (header decoding: Huffman, dynamic table, size limits). Framing,
flow control and the gRPC message prefix are done here; what a call means is the `on_call` callback's business.
Every resource a peer can make the server hold is bounded (see `Http2Limits` and docs/architecture.md):
frame size, header block size (CONTINUATION flood), decoded header list size (HPACK bomb), concurrent streams
counting reset streams until their work has ended (rapid reset), control frames (SETTINGS/PING/RST floods),
buffered output (a peer that does not read, or keeps its window at zero, stops being read).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hpack
import hpack.exceptions

from seawall.frontends.grpc.frames import (
    ACK,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RESPONSE_HEADERS,
    RST_STREAM,
    SETTING_INITIAL_WINDOW_SIZE,
    SETTING_MAX_CONCURRENT_STREAMS,
    SETTING_MAX_FRAME_SIZE,
    SETTING_MAX_HEADER_LIST_SIZE,
    SETTINGS,
    WINDOW_UPDATE,
    Stream,
    Trailers,
    frame,
    trailers,
)

_MAX_WINDOW = (1 << 31) - 1
_DEFAULT_FRAME = 16384

logger = logging.getLogger(__name__)
INTERNAL_ERROR = 0x2


@dataclass(frozen=True)
class Http2Limits:
    """What one connection may make the server hold."""

    max_concurrent_streams: int = 1024  # streams open or still working after a reset (RST_STREAM)
    max_message_bytes: int = 64 * 1024 * 1024  # one gRPC message
    max_header_list_bytes: int = 16 * 1024  # decoded headers of one block, and the encoded block itself
    window_bytes: int = 4 * 1024 * 1024  # receive window per stream and per connection
    control_frames_per_second: int = 1000  # SETTINGS, PING, RST_STREAM, PRIORITY, empty DATA: beyond → GOAWAY
    # grpc's keepalive and connection-age channel arguments (Triton's --grpc-* flags), in seconds; 0: off
    keepalive_time: float = 7200.0
    keepalive_timeout: float = 20.0
    keepalive_without_calls: bool = False
    max_pings_without_data: int = 2  # our pings with no DATA/HEADERS sent in between (0: unlimited)
    min_ping_interval: float = 300.0  # client pings closer than this without data are strikes
    max_ping_strikes: int = 2  # strikes beyond this: GOAWAY ENHANCE_YOUR_CALM (0: unlimited)
    max_age: float = 0.0
    max_age_grace: float = 0.0


class ConnectionError_(Exception):  # noqa: N818 (a GOAWAY, not a Python error)
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Http2Connection(asyncio.Protocol):
    """The server side of one HTTP/2 connection.

    `on_call(stream)` is called once per call: for a unary call (`is_streaming(path)` false) when its request has
    fully arrived, for a streaming call when its headers have. It must start the call's work and return; the work
    ends with `connection.finish(stream, status, message)`.
    """

    def __init__(
        self,
        limits: Http2Limits,
        is_streaming: Callable[[str], bool],
        on_call: Callable[[Stream], None],
        on_close: Callable[[Http2Connection], None] | None = None,
    ) -> None:
        self.limits = limits
        self._is_streaming = is_streaming
        self._on_call = on_call
        self._on_close = on_close
        self.transport: Any = None
        self._buffer = bytearray()
        self._preface = False
        self._decoder = hpack.Decoder(max_header_list_size=limits.max_header_list_bytes)
        self._decoder.max_allowed_table_size = 4096
        self._streams: dict[int, Stream] = {}  # open, or reset with their work still running
        self._last_stream = 0
        self._block: bytearray | None = None  # a header block waiting for its CONTINUATION frames
        self._block_stream = 0
        self._block_end = False
        self.peer_initial_window = 65535
        self._peer_frame = _DEFAULT_FRAME
        self._send_window = 65535  # connection-level window the peer gave us
        self._recv_unacked = 0
        self._out: list[bytes | memoryview] = []
        self._control = 0
        self._control_epoch = time.monotonic()
        self._paused = False  # not reading: our output is not being read
        self._write_paused = False
        self.going_away = False
        self.closed = False
        self.last_activity = self.opened = self._pinged = time.monotonic()
        self._ping_out: float | None = None  # when our unanswered keepalive PING was sent
        self._pings_without_data = 0
        self._peer_ping: float | None = None
        self._data_since_ping = False
        self._strikes = 0
        self._age_deadline: float | None = None

    def tick(self, now: float) -> None:
        """Keepalive PINGs, their timeout, and the maximum connection age (called about every 100 ms)."""
        limits = self.limits
        if self.closed or self.transport is None:
            return
        if limits.max_age and not self.going_away and now - self.opened > limits.max_age:
            self._age_deadline = now + limits.max_age_grace if limits.max_age_grace else None
            self.go_away(NO_ERROR, "max_age")
        if self._age_deadline is not None and now > self._age_deadline:
            self.transport.close()
            return
        if not limits.keepalive_time:
            return
        if self._ping_out is not None:
            if now - self._ping_out > limits.keepalive_timeout:
                self.transport.close()  # the peer stopped answering
            return
        if (
            now - self._pinged >= limits.keepalive_time
            and (self._streams or limits.keepalive_without_calls)
            and not (limits.max_pings_without_data and self._pings_without_data >= limits.max_pings_without_data)
        ):
            self._ping_out = self._pinged = now
            self._pings_without_data += 1
            self._out.append(frame(PING, 0, 0, b"seawall\x00"))
            self.flush()

    # -- asyncio.Protocol --------------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        settings = (
            (SETTING_MAX_CONCURRENT_STREAMS, self.limits.max_concurrent_streams),
            (SETTING_INITIAL_WINDOW_SIZE, self.limits.window_bytes),
            (SETTING_MAX_HEADER_LIST_SIZE, self.limits.max_header_list_bytes),
        )
        payload = b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in settings)
        increment = self.limits.window_bytes - 65535
        transport.write(frame(SETTINGS, 0, 0, payload) + frame(WINDOW_UPDATE, 0, 0, increment.to_bytes(4, "big")))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for stream in list(self._streams.values()):
            self._cancel(stream)
        if self._on_close is not None:
            self._on_close(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        if not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._paused:
            self._paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        buffer = self._buffer
        buffer += data
        try:
            pos = 0
            if not self._preface:
                if len(buffer) < 24:
                    if not PREFACE.startswith(bytes(buffer)):
                        raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    return
                if buffer[:24] != PREFACE:
                    raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._preface = True
                pos = 24
            end = len(buffer)
            limit = _DEFAULT_FRAME  # what we advertise (SETTINGS_MAX_FRAME_SIZE is left at its default)
            while end - pos >= 9:
                size = (buffer[pos] << 16) | (buffer[pos + 1] << 8) | buffer[pos + 2]
                if size > limit:
                    raise ConnectionError_(FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
                if end - pos - 9 < size:
                    break
                kind, flags = buffer[pos + 3], buffer[pos + 4]
                stream_id = int.from_bytes(buffer[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                payload = buffer[pos + 9 : pos + 9 + size]
                pos += 9 + size
                self._frame(kind, flags, stream_id, payload)
                if self.closed:
                    return
            del buffer[:pos]
        except ConnectionError_ as exc:
            self.go_away(exc.code, str(exc))
            return
        except Exception:  # a bug here must cost one connection, never the listener
            logger.exception("HTTP/2 connection failed")
            self.go_away(INTERNAL_ERROR, "internal error")
            return
        self.flush()

    # -- frames ------------------------------------------------------------------------------------------
    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytearray) -> None:
        if self._block is not None and (kind != CONTINUATION or stream_id != self._block_stream):
            raise ConnectionError_(PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == DATA:
            self._data_since_ping = True
            self._strikes = 0
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._data_since_ping = True
            self._strikes = 0
            self._headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            if self._block is None:
                raise ConnectionError_(PROTOCOL_ERROR, "unexpected CONTINUATION")
            self._block += payload
            self._check_block()
            if flags & END_HEADERS:
                self._end_block()
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == PING:
            self._count_control()
            if len(payload) != 8 or stream_id:
                raise ConnectionError_(FRAME_SIZE_ERROR if len(payload) != 8 else PROTOCOL_ERROR, "bad PING")
            if flags & ACK:
                self._ping_out = None
                self._pinged = time.monotonic()
            else:
                self._ping_strike()
                self._out.append(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            self._count_control()
            if len(payload) != 4 or not stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, "bad RST_STREAM")
            stream = self._streams.get(stream_id)
            if stream is not None:
                self._cancel(stream)
        elif kind == GOAWAY:  # the peer opens no more streams: close as soon as ours have ended
            self.going_away = True
            if not self._streams:
                self.flush()
                self.transport.close()
                self.closed = True
        elif kind == PRIORITY:
            self._count_control()
        elif kind == PUSH_PROMISE:
            raise ConnectionError_(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # unknown frame types are ignored (RFC 9113 4.1)

    def _ping_strike(self) -> None:
        now = time.monotonic()
        limits = self.limits
        if (
            self._peer_ping is not None
            and not self._data_since_ping
            and now - self._peer_ping < limits.min_ping_interval
        ):
            self._strikes += 1
            if limits.max_ping_strikes and self._strikes > limits.max_ping_strikes:
                raise ConnectionError_(ENHANCE_YOUR_CALM, "too_many_pings")
        self._peer_ping, self._data_since_ping = now, False

    def _count_control(self) -> None:
        now = time.monotonic()
        if now - self._control_epoch >= 1.0:
            self._control_epoch, self._control = now, 0
        self._control += 1
        if self._control > self.limits.control_frames_per_second:
            raise ConnectionError_(ENHANCE_YOUR_CALM, "too many control frames")

    def _settings(self, flags: int, stream_id: int, payload: bytearray) -> None:
        self._count_control()
        if stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "bad SETTINGS length")
        for at in range(0, len(payload), 6):
            key, value = int.from_bytes(payload[at : at + 2], "big"), int.from_bytes(payload[at + 2 : at + 6], "big")
            if key == SETTING_INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise ConnectionError_(FLOW_CONTROL_ERROR, "window too large")
                delta, self.peer_initial_window = value - self.peer_initial_window, value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif key == SETTING_MAX_FRAME_SIZE:
                if not _DEFAULT_FRAME <= value <= 16777215:
                    raise ConnectionError_(PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self._peer_frame = min(value, 1 << 20)
        self._out.append(frame(SETTINGS, ACK, 0))
        self._pump_all()

    def _window_update(self, stream_id: int, payload: bytearray) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if not increment:
            self._count_control()
            return
        if not stream_id:
            self._send_window += increment
            if self._send_window > _MAX_WINDOW:
                raise ConnectionError_(FLOW_CONTROL_ERROR, "connection window overflow")
            self._pump_all()
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.send_window += increment
            self._pump(stream)

    def _headers(self, flags: int, stream_id: int, payload: bytearray) -> None:
        if not stream_id % 2:
            raise ConnectionError_(PROTOCOL_ERROR, "HEADERS on an even stream")
        start, end = 0, len(payload)
        if flags & PADDED:
            if not payload:
                raise ConnectionError_(PROTOCOL_ERROR, "bad padding")
            start, end = 1, end - payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
        if end < start:
            raise ConnectionError_(PROTOCOL_ERROR, "bad padding")
        self._block = bytearray(payload[start:end])
        self._block_stream, self._block_end = stream_id, bool(flags & END_STREAM)
        self._check_block()
        if flags & END_HEADERS:
            self._end_block()

    def _check_block(self) -> None:
        assert self._block is not None
        if len(self._block) > self.limits.max_header_list_bytes:
            raise ConnectionError_(ENHANCE_YOUR_CALM, "header block too large")  # CONTINUATION flood

    def _end_block(self) -> None:
        block, stream_id, ended = self._block, self._block_stream, self._block_end
        self._block = None
        assert block is not None
        try:
            decoded = self._decoder.decode(bytes(block), raw=True)
        except hpack.exceptions.HPACKError as exc:
            raise ConnectionError_(COMPRESSION_ERROR, f"header block: {exc}") from None
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers from the client
            if not ended:
                raise ConnectionError_(PROTOCOL_ERROR, "trailers without END_STREAM")
            self._received(stream, b"", True)
            return
        if stream_id <= self._last_stream:
            raise ConnectionError_(PROTOCOL_ERROR, "stream id not increasing")
        self._last_stream = stream_id
        if self.going_away or len(self._streams) >= self.limits.max_concurrent_streams:
            self._out.append(frame(RST_STREAM, 0, stream_id, REFUSED_STREAM.to_bytes(4, "big")))
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in decoded}
        stream = Stream(self, stream_id, headers, self._is_streaming(headers.get(":path", "")))
        self._streams[stream_id] = stream
        if stream.streaming:
            stream.working = True
            self._on_call(stream)
        if ended:
            self._received(stream, b"", True)

    def _data(self, flags: int, stream_id: int, payload: bytearray) -> None:
        size = len(payload)
        if flags & PADDED:
            if not payload or payload[0] >= size:
                raise ConnectionError_(PROTOCOL_ERROR, "bad padding")
            padding = payload[0] + 1
            payload = payload[1 : size - payload[0]]
        else:
            padding = 0
        self._recv_unacked += size
        if self._recv_unacked >= self.limits.window_bytes // 2:
            self._out.append(frame(WINDOW_UPDATE, 0, 0, self._recv_unacked.to_bytes(4, "big")))
            self._recv_unacked = 0
        if not size:
            if not flags & END_STREAM:
                self._count_control()
        stream = self._streams.get(stream_id)
        if stream is None or stream.ended or stream.cancelled:
            if stream_id > self._last_stream or not stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream we refused or reset: its data is dropped, the connection window was given back
        stream.unacked += size
        stream.consumed += padding
        if stream.unacked > self.limits.window_bytes:
            raise ConnectionError_(FLOW_CONTROL_ERROR, "stream window exceeded")
        self._received(stream, payload, bool(flags & END_STREAM))

    def _received(self, stream: Stream, payload: bytes | bytearray, ended: bool) -> None:
        stream.body += payload
        stream.ended = stream.ended or ended
        if stream.streaming:
            try:
                messages = stream.take_messages()
            except (ValueError, OverflowError) as exc:
                self.reset_with_status(stream, 8 if isinstance(exc, OverflowError) else 12, str(exc))
                return
            stream.deliver(messages, ended)
            if not stream.ended and len(stream.body) >= self.limits.window_bytes // 2:
                self._credit_arriving(stream)
            return
        if not stream.ended:  # unary: the window reopens at once; the message size limit bounds the body
            if len(stream.body) > self.limits.max_message_bytes + 5:
                size = int.from_bytes(stream.body[1:5], "big") if len(stream.body) >= 5 else len(stream.body)
                limit = self.limits.max_message_bytes
                self.reset_with_status(stream, 8, f"Received message larger than max ({size} vs. {limit})")
                return
            if stream.unacked >= self.limits.window_bytes // 2:
                self._out.append(frame(WINDOW_UPDATE, 0, stream.id, stream.unacked.to_bytes(4, "big")))
                stream.unacked = 0
            return
        stream.working = True
        self._on_call(stream)

    def _credit_arriving(self, stream: Stream) -> None:
        """A message of half a window or more is arriving on a streaming call: give back every byte received
        (the message size limit bounds them), or a message larger than the window would never complete. The
        bytes not yet taken are then credited ahead: taking them (in order) gives nothing back again."""
        if stream.unacked < self.limits.window_bytes // 2:
            return
        self._out.append(frame(WINDOW_UPDATE, 0, stream.id, stream.unacked.to_bytes(4, "big")))
        stream.ahead += stream.unacked - stream.consumed
        stream.unacked = stream.consumed = 0

    def consumed(self, stream: Stream, size: int) -> None:
        """A streaming call took `size` bytes: reopen the peer's window by as much, in batches."""
        repaid = min(stream.ahead, size)  # bytes already given back while their message arrived
        stream.ahead -= repaid
        stream.consumed += size - repaid
        if stream.consumed >= self.limits.window_bytes // 4 and not stream.ended and not stream.cancelled:
            self._out.append(frame(WINDOW_UPDATE, 0, stream.id, stream.consumed.to_bytes(4, "big")))
            stream.unacked -= stream.consumed
            stream.consumed = 0
            self.flush()

    # -- sending -----------------------------------------------------------------------------------------
    def send_message(self, stream: Stream, message: bytes) -> None:
        # as grpc core: sending data resets our keepalive count and the peer's ping strikes
        self._pings_without_data = self._strikes = 0
        self._data_since_ping = True
        if not stream.headers_sent:
            stream.headers_sent = True
            self._out.append(frame(HEADERS, END_HEADERS, stream.id, RESPONSE_HEADERS))
        if len(message) < 65536:
            stream.pending.append(len(message).to_bytes(5, "big") + message)
        else:  # sent in slices of one view: never copied but into the output
            stream.pending.append(len(message).to_bytes(5, "big"))
            stream.pending.append(memoryview(message))
        self._pump(stream)
        self.flush()

    def finish(self, stream: Stream, status: int, message: str = "") -> None:
        """End the call with trailers (a trailers-only response when nothing was sent), after pending data."""
        if stream.finished:
            return
        stream.finished = True
        if stream.cancelled or self.closed:
            self._done(stream)
            return
        block = trailers(status, message)
        if not stream.headers_sent:
            stream.headers_sent = True
            self._out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, RESPONSE_HEADERS + block))
            self._done(stream)
        else:
            stream.pending.append(Trailers(block))
            self._pump(stream)
        self.flush()

    def reset_with_status(self, stream: Stream, status: int, message: str) -> None:
        """Answer a call's own error now and stop reading it (RST_STREAM NO_ERROR after the trailers)."""
        self.finish(stream, status, message)
        if not stream.cancelled:
            self._out.append(frame(RST_STREAM, 0, stream.id, NO_ERROR.to_bytes(4, "big")))
        self._cancel(stream)

    def _pump_all(self) -> None:
        for stream in list(self._streams.values()):
            if stream.pending:
                self._pump(stream)

    def _pump(self, stream: Stream) -> None:
        """Send what the windows allow of the stream's pending data, as DATA frames of the peer's frame size."""
        pending = stream.pending
        out = self._out
        while pending:
            if isinstance(pending[0], Trailers):
                out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, pending.popleft().block))
                self._done(stream)
                break
            room = min(stream.send_window, self._send_window, self._peer_frame)
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
            self._send_window -= size
            out.append(bytes((size >> 16, (size >> 8) & 0xFF, size & 0xFF, DATA, 0)) + stream.id.to_bytes(4, "big"))
            out.extend(parts)
        if not pending:
            stream.wake()

    def flush(self) -> None:
        if self._out and not self.closed:
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def _done(self, stream: Stream) -> None:
        stream.working = False
        if stream.ended or stream.cancelled:
            self._streams.pop(stream.id, None)
        if self.going_away and not self._streams and not self.closed:
            self.flush()
            self.transport.close()

    def work_ended(self, stream: Stream) -> None:
        """The call's task has ended (normally after `finish`): a reset stream stops counting against the limit."""
        stream.working = False
        if stream.cancelled or (stream.finished and not stream.pending):
            self._streams.pop(stream.id, None)

    def _cancel(self, stream: Stream) -> None:
        stream.cancelled = True
        stream.pending.clear()
        stream.wake()
        if stream.streaming and not stream.ended:
            stream.ended = True
            stream.deliver([], True)
        if not stream.working:
            self._streams.pop(stream.id, None)
        elif stream.task is not None:
            stream.task.cancel()

    def go_away(self, code: int, reason: str = "") -> None:
        """Send GOAWAY and close (an error), or stop taking streams and close once they end (NO_ERROR)."""
        if self.closed:
            return
        if self.transport is None:  # still in its TLS handshake
            self.closed = True
            return
        payload = self._last_stream.to_bytes(4, "big") + code.to_bytes(4, "big") + reason.encode()[:256]
        self._out.append(frame(GOAWAY, 0, 0, payload))
        self.going_away = True
        self.flush()
        if code != NO_ERROR or not self._streams:
            self.transport.close()
            self.closed = True
            for stream in list(self._streams.values()):
                self._cancel(stream)

    def active_streams(self) -> int:
        return len(self._streams)
