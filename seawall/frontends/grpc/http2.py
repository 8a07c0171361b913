"""A lean HTTP/2 server connection that carries gRPC calls (RFC 9113, gRPC over HTTP/2), for the `lean` listener:
what each frame means for its stream and the connection (stream states, the stream limit, settings, the gRPC
message prefix), and when a call is answered, reset or released. What a call means is the `on_call` callback's
business; `reader.FrameReader` cuts the client's bytes into frames and header blocks, `output.Output` frames and
paces what is sent, `window.ReceiveWindow` reopens the peer's windows as data is received and taken,
`liveness.Liveness` keeps the keepalive and abuse counters and answers PINGs.

Every resource a peer can make the server hold is bounded (see `Http2Limits` and docs/architecture.md): frame
size, header block size (CONTINUATION flood) and decoded header list size (HPACK bomb) in the reader, concurrent
streams counting reset streams until their work has ended (rapid reset), control frames (SETTINGS/PING/RST floods),
buffered output (a peer that does not read, or keeps its window at zero, stops being read), the data sent
beyond the receive windows (`window.ReceiveWindow`), and the request bytes held by all connections of the
listener (`held.HeldBytes`: a call whose bytes do not fit is answered UNAVAILABLE).

Imports only the standard library, `frontends.held` and this package's `frames`, `limits`, `reader`, `output`, `window`,
`liveness`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from seawall.frontends.grpc.frames import (
    ACK,
    DATA,
    DEFAULT_FRAME,
    END_STREAM,
    FRAME_SIZE_ERROR,
    GOAWAY,
    NO_ERROR,
    PING,
    PRIORITY,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTING_INITIAL_WINDOW_SIZE,
    SETTING_MAX_CONCURRENT_STREAMS,
    SETTING_MAX_FRAME_SIZE,
    SETTING_MAX_HEADER_LIST_SIZE,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    ConnectionError_,
    Payload,
    Stream,
    frame,
    reset,
    settings_frame,
    settings_of,
    trailers,
    unpadded,
)
from seawall.frontends.grpc.limits import Http2Limits
from seawall.frontends.grpc.liveness import Due, Liveness
from seawall.frontends.grpc.output import Message, Output
from seawall.frontends.grpc.reader import MAX_FRAME, FrameReader, HeaderBlock
from seawall.frontends.grpc.window import ReceiveWindow
from seawall.frontends.held import HeldBytes

logger = logging.getLogger(__name__)
INTERNAL_ERROR = 0x2
_UNAVAILABLE = 14  # grpc-status


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
        held: HeldBytes | None = None,
    ) -> None:
        self.limits = limits
        self._held = held if held is not None else HeldBytes(limits.max_held_bytes)  # shared by the listener
        self._is_streaming = is_streaming
        self._on_call = on_call
        self._on_close = on_close
        self.transport: Any = None
        self._reader = FrameReader(limits.max_header_list_bytes)
        self._liveness = Liveness(limits)
        self._streams: dict[int, Stream] = {}  # open, or reset with their work still running
        self._last_stream = 0
        self._output = Output(DEFAULT_FRAME, self._release)  # called once a stream's trailers are out
        self._window = ReceiveWindow(limits.window_bytes, self._output)
        self._paused = False  # not reading: our output is not being read
        self._write_paused = False
        self.going_away = False
        self.closed = False
        self.started = self.last_activity = time.monotonic()  # when accepted (the server's sweep ages it)

    @property
    def peer_initial_window(self) -> int:
        """A new stream's send window (the peer's SETTINGS_INITIAL_WINDOW_SIZE)."""
        return self._output.initial_window

    @property
    def preface_received(self) -> bool:
        """The client has spoken HTTP/2 (its connection preface arrived)."""
        return self._reader.preface

    def tick(self, now: float) -> None:
        """Keepalive PINGs, their timeout, and the maximum connection age (called about every 100 ms)."""
        if self.closed or self.transport is None:
            return
        due = self._liveness.due(now, self.going_away, bool(self._streams))
        if due is Due.GO_AWAY:
            self.go_away(NO_ERROR, "max_age")
        elif due is Due.CLOSE:
            self.transport.close()
        elif due is Due.PING:
            self._output.add(frame(PING, 0, 0, b"seawall\x00"))
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
            (SETTING_MAX_FRAME_SIZE, MAX_FRAME),
        )
        transport.write(settings_frame(settings) + self._window.opening())

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
        try:
            for item in self._reader.frames(data):
                if isinstance(item, HeaderBlock):
                    self._liveness.received_data()
                    self._header_block(item)
                else:
                    self._frame(*item)
                if self.closed:
                    return
        except ConnectionError_ as exc:
            self.go_away(exc.code, str(exc))
            return
        except Exception:  # a bug here must cost one connection, never the listener
            logger.exception("HTTP/2 connection failed")
            self.go_away(INTERNAL_ERROR, "internal error")
            return
        self.flush()

    # -- frames ------------------------------------------------------------------------------------------
    def _frame(self, kind: int, flags: int, stream_id: int, payload: Payload) -> None:
        if kind == DATA:
            self._liveness.received_data()
            self._data(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == PING:
            if (answer := self._liveness.ping(flags, stream_id, payload)) is not None:
                self._output.add(answer)
        elif kind == RST_STREAM:
            self._liveness.control_frame()
            if len(payload) != 4 or not stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, "bad RST_STREAM")
            if (stream := self._streams.get(stream_id)) is not None:
                self._cancel(stream)
        elif kind == GOAWAY:  # the peer opens no more streams: close as soon as ours have ended
            self.going_away = True
            if not self._streams:
                self.flush()
                self.transport.close()
                self.closed = True
        elif kind == PRIORITY:
            self._liveness.control_frame()
        elif kind == PUSH_PROMISE:
            raise ConnectionError_(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # unknown frame types are ignored (RFC 9113 4.1)

    def _settings(self, flags: int, stream_id: int, payload: Payload) -> None:
        self._liveness.control_frame()
        if stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        for key, value in settings_of(payload):
            if key == SETTING_INITIAL_WINDOW_SIZE:
                self._output.new_initial_window(value, self._streams.values())
            elif key == SETTING_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= 16777215:
                    raise ConnectionError_(PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self._output.frame_size = min(value, 1 << 20)
        self._output.add(frame(SETTINGS, ACK, 0))
        self._output.pump_all(self._streams.values())

    def _window_update(self, stream_id: int, payload: Payload) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if not increment:
            self._liveness.control_frame()
        elif not stream_id:
            self._output.window_update(None, increment)
            self._output.pump_all(self._streams.values())
        elif (stream := self._streams.get(stream_id)) is not None:
            self._output.window_update(stream, increment)

    def _header_block(self, block: HeaderBlock) -> None:
        stream_id, fields, ended = block
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers from the client
            if stream.cancelled:
                return  # a stream we reset: what the peer sent before it knew is dropped
            if stream.ended:
                self._stream_closed(stream)
                return
            if not ended:
                raise ConnectionError_(PROTOCOL_ERROR, "trailers without END_STREAM")
            self._received(stream, b"", True)
            return
        if stream_id <= self._last_stream:
            raise ConnectionError_(PROTOCOL_ERROR, "stream id not increasing")
        self._last_stream = stream_id
        if self.going_away or len(self._streams) >= self.limits.max_concurrent_streams:
            self._output.add(reset(stream_id, REFUSED_STREAM))
            return
        # RFC 9113 8.1.1: a malformed request is a stream error; the call never starts
        if (malformed := fields.malformed()) is not None:
            logger.debug("stream %d: malformed request (%s): RST_STREAM PROTOCOL_ERROR", stream_id, malformed)
            self._output.add(reset(stream_id, PROTOCOL_ERROR))
            return
        headers = fields.headers()
        stream = Stream(self, stream_id, headers, self._is_streaming(headers.get(":path", "")))
        self._streams[stream_id] = stream
        if stream.streaming:
            stream.working = True
            self._on_call(stream)
        if ended:
            self._received(stream, b"", True)

    def _data(self, flags: int, stream_id: int, payload: Payload) -> None:
        size = len(payload)
        payload, padding = unpadded(flags, payload)
        self._window.received(size)
        if not size and not flags & END_STREAM:  # an empty DATA frame counts as a control frame
            self._liveness.control_frame()
        stream = self._streams.get(stream_id)
        if stream is None or stream.cancelled:
            if stream_id > self._last_stream or not stream_id:
                raise ConnectionError_(PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream we refused or reset: its data is dropped, the connection window was given back
        if stream.ended:
            self._stream_closed(stream)
            return
        self._window.stream_received(stream, size, padding)
        self._received(stream, payload, bool(flags & END_STREAM))

    def _stream_closed(self, stream: Stream) -> None:
        """HEADERS or DATA after the peer's END_STREAM (RFC 9113 5.1, half-closed (remote)): a stream error of
        type STREAM_CLOSED; the call is cancelled (a second request on it would have started a second call)."""
        self._output.add(reset(stream.id, STREAM_CLOSED))
        self._cancel(stream)

    def _received(self, stream: Stream, payload: Payload, ended: bool) -> None:
        while payload:  # a streaming call's payload may end one message and begin the next
            # a large message is charged its whole announced size when it begins, as it is set aside then
            reserved = stream.reserve(payload, self.limits.max_message_bytes)
            cost = reserved or stream.unreserved(len(payload))
            if cost and not self._held.take(cost):
                self.reset_with_status(stream, _UNAVAILABLE, self._held.refusal())
                return
            stream.charged += cost
            payload = stream.receive(payload, reserved)
        stream.ended = stream.ended or ended
        if stream.streaming:
            try:
                messages = stream.take_messages()
            except (ValueError, OverflowError) as exc:
                self.reset_with_status(stream, 8 if isinstance(exc, OverflowError) else 12, str(exc))
                return
            stream.deliver(messages, ended)
            if not stream.ended:
                self._window.message_arriving(stream, stream.arriving)
            return
        if not stream.ended:  # unary: the window reopens at once; the message size limit bounds the body
            if len(stream.body) > self.limits.max_message_bytes + 5:
                size = int.from_bytes(stream.body[1:5], "big") if len(stream.body) >= 5 else len(stream.body)
                limit = self.limits.max_message_bytes
                self.reset_with_status(stream, 8, f"Received message larger than max ({size} vs. {limit})")
                return
            self._window.unary_arriving(stream)
            return
        stream.working = True
        self._on_call(stream)

    def consumed(self, stream: Stream, size: int) -> None:
        """A streaming call took `size` bytes (its window reopens in batches)."""
        self._held.give_back(size)
        stream.charged -= size
        if self._window.consumed(stream, size):
            self.flush()

    # -- sending -----------------------------------------------------------------------------------------
    def send_message(self, stream: Stream, message: bytes) -> None:
        self._liveness.sent_data()
        self._output.message(stream, message)
        self.flush()

    def finish(self, stream: Stream, status: int, message: str = "", answer: Message | None = None) -> None:
        """End the call with trailers (a trailers-only response when nothing was sent), after pending data; a
        unary call's `answer` goes first, in the same write when the windows allow (one write per answer)."""
        if stream.finished:
            return
        stream.finished = True
        if stream.cancelled or self.closed:
            self._release(stream)
            return
        if answer is not None:
            self._liveness.sent_data()
            self._output.message(stream, answer)
        self._output.trailers(stream, trailers(status, message))
        self.flush()

    def reset_with_status(self, stream: Stream, status: int, message: str) -> None:
        """Answer a call's own error now and stop reading it: RST_STREAM NO_ERROR after the trailers while the
        peer is still sending (RFC 9113 8.1); none once its END_STREAM came, as the trailers close the stream and
        nothing but PRIORITY may follow on a closed stream (5.1).

        Responses still waiting for flow-control window are dropped: the trailers go out at once (HEADERS are not
        flow controlled), or the reset that follows would clear them and leave the call without a status.
        """
        if not stream.finished:
            stream.pending.clear()
        self.finish(stream, status, message)
        if not stream.cancelled and not stream.ended:
            self._output.add(reset(stream.id, NO_ERROR))
        self._cancel(stream)

    def flush(self) -> None:
        parts = self._output.take()
        if parts and not self.closed:
            self.transport.writelines(parts)

    def work_ended(self, stream: Stream) -> None:
        """The call's task has ended (normally after `finish`): a reset stream stops counting against the limit."""
        stream.working = False
        self._release(stream)

    def _release(self, stream: Stream) -> None:
        """Stop counting the stream once its work has ended and it was answered or reset. A task still running
        keeps it counted (it was cut short, or its answer went out before its `finally`): rapid reset is bounded
        by the work, not by the frames."""
        if not stream.working and (stream.cancelled or (stream.finished and not stream.pending)):
            if self._streams.pop(stream.id, None) is not None:
                self._held.give_back(stream.charged)
                stream.charged = 0
        if self.going_away and not self._streams and not self.closed:
            self.flush()
            self.transport.close()

    def _cancel(self, stream: Stream) -> None:
        stream.cancelled = True
        stream.pending.clear()
        stream.wake()
        if stream.streaming:  # the handler's reading ends (END_STREAM may have come with a refused message)
            stream.ended = True
            stream.deliver([], True)
        if stream.working and stream.task is not None:
            stream.task.cancel()
        self._release(stream)

    def go_away(self, code: int, reason: str = "") -> None:
        """Send GOAWAY and close (an error), or stop taking streams and close once they end (NO_ERROR)."""
        if self.closed:
            return
        if self.transport is None:  # still in its TLS handshake
            self.closed = True
            return
        payload = self._last_stream.to_bytes(4, "big") + code.to_bytes(4, "big") + reason.encode()[:256]
        self._output.add(frame(GOAWAY, 0, 0, payload))
        self.going_away = True
        self.flush()
        if code != NO_ERROR or not self._streams:
            self.transport.close()
            self.closed = True
            for stream in list(self._streams.values()):
                self._cancel(stream)

    def active_streams(self) -> int:
        return len(self._streams)
