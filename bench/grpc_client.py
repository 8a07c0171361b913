"""The load generator's gRPC client: one HTTP/2 connection that sends one pre-encoded unary call at a time.

Frames are built and read with `struct`; only header blocks go through a library (`hpack`, a dependency of
Seawall itself), because a server may answer with Huffman-coded or table-indexed headers. The request's header
block is a constant (literal fields, never indexed), so a call costs a few frame headers and one HPACK decode of
the trailers: tens of µs of client CPU where the `h2` state machine took hundreds, which left the Python driver
measuring its own limit at c=1 and on 1 MiB messages.

Flow control both ways: the client gives the server 1 GiB windows (stream and connection, topped up as data
comes) and sends its own DATA within the server's windows and frame size.
"""

from __future__ import annotations

import asyncio
import struct

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x4, 0x5
DEFAULT_WINDOW, DEFAULT_FRAME = 65535, 16384
#: the receive windows the client gives the server, per stream and for the connection
WINDOW = 1 << 30
_HEAD = struct.Struct(">IBI")  # length (24 bits) and type, flags, stream id
_SETTING = struct.Struct(">HI")
_INCREMENT = struct.Struct(">I")


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return _HEAD.pack(len(payload) << 8 | kind, flags, stream) + payload


def header_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """HPACK literal fields without indexing and without Huffman coding (RFC 7541 6.2.2): the same bytes on
    every call, whatever the connection's tables hold."""
    block = bytearray()
    for name, value in headers:
        block.append(0)
        for text in (name, value):
            block += hpack.hpack.encode_integer(len(text), 7)  # (H bit 0: the string as it is)
            block += text
    return bytes(block)


class GrpcConnection(asyncio.Protocol):
    """One HTTP/2 connection; `call` sends the request body (a gRPC message with its 5-byte prefix) on a new
    stream and waits for the end of the response."""

    def __init__(self, authority: str, body: bytes, path: str) -> None:
        headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode())]
        headers += [(b":authority", authority.encode()), (b"content-type", b"application/grpc"), (b"te", b"trailers")]
        self._block = header_block(headers)
        self._body = body  # the request (`set_body` changes it between calls)
        self._decoder = hpack.Decoder()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._headers = bytearray()  # a header block not yet ended (CONTINUATION follows)
        self._ending = False  # that block ends the current stream (its END_STREAM came on the HEADERS frame)
        self._stream = -1  # the current call's stream (odd, growing)
        self._sent = 0  # bytes of the body sent on the current stream
        self._send_window = DEFAULT_WINDOW  # the server's window for the connection
        self._stream_window = DEFAULT_WINDOW  # ... and for the current stream
        self._initial_window = DEFAULT_WINDOW  # the server's SETTINGS_INITIAL_WINDOW_SIZE
        self._frame_size = DEFAULT_FRAME  # the server's SETTINGS_MAX_FRAME_SIZE
        self._unacked = 0  # DATA bytes received and not yet given back to the server's connection window
        self._status = b""
        self.received = 0  # bytes of response DATA in the current call
        self._done: asyncio.Future[bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's
        settings = frame(SETTINGS, 0, 0, _SETTING.pack(SETTINGS_INITIAL_WINDOW_SIZE, WINDOW))
        opening = frame(WINDOW_UPDATE, 0, 0, _INCREMENT.pack(WINDOW - DEFAULT_WINDOW))
        self._transport.write(PREFACE + settings + opening)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(False)

    async def call(self) -> bool:
        """Send the request and wait for the end of the response; True when grpc-status is 0 and a message came."""
        assert self._transport is not None
        if self._transport.is_closing():
            return False
        self._done = asyncio.get_running_loop().create_future()
        self._stream += 2
        self._status, self._sent, self.received = b"", 0, 0
        self._stream_window = self._initial_window
        self._transport.write(frame(HEADERS, END_HEADERS, self._stream, self._block))
        self._pump()
        return await self._done

    def set_body(self, body: bytes) -> None:
        """The request the next `call` sends."""
        self._body = body

    def _pump(self) -> None:
        """Send what the windows allow of the body, in frames the server takes."""
        body, parts = self._body, []
        while self._sent < len(body):
            size = min(self._send_window, self._stream_window, self._frame_size, len(body) - self._sent)
            if size <= 0:
                break
            end = self._sent + size
            parts.append(frame(DATA, END_STREAM if end == len(body) else 0, self._stream, body[self._sent : end]))
            self._sent = end
            self._send_window -= size
            self._stream_window -= size
        if parts:
            assert self._transport is not None
            self._transport.write(b"".join(parts))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        position, total, replies = 0, len(buffer), []
        while total - position >= 9:
            word, flags, stream = _HEAD.unpack_from(buffer, position)
            length, kind = word >> 8, word & 0xFF
            if total - position - 9 < length:
                break
            start = position + 9
            position = start + length
            if kind == DATA:
                self._unacked += length
                if stream == self._stream:
                    pad = buffer[start] + 1 if flags & PADDED else 0
                    self.received += length - pad
                    if flags & END_STREAM:
                        self._finish(self._status == b"0" and self.received > 5)
            elif kind == HEADERS or kind == CONTINUATION:
                if kind == HEADERS:
                    pad = buffer[start] if flags & PADDED else 0
                    skip = (1 if flags & PADDED else 0) + (5 if flags & PRIORITY else 0)
                    self._headers = buffer[start + skip : position - pad]
                    self._ending = stream == self._stream and bool(flags & END_STREAM)  # trailers
                else:
                    self._headers += buffer[start:position]
                if flags & END_HEADERS:  # the block is whole: decode it (the decoder's table needs every block)
                    for name, value in self._decoder.decode(bytes(self._headers), raw=True):
                        if name == b"grpc-status" and stream == self._stream:
                            self._status = value
                    self._headers = bytearray()
                    if self._ending:
                        self._finish(self._status == b"0" and self.received > 5)
            elif kind == SETTINGS:
                if not flags & ACK:
                    self._settings(buffer[start:position])
                    replies.append(frame(SETTINGS, ACK, 0))
            elif kind == WINDOW_UPDATE:
                (increment,) = _INCREMENT.unpack_from(buffer, start)
                if stream == 0:
                    self._send_window += increment & 0x7FFFFFFF
                elif stream == self._stream:
                    self._stream_window += increment & 0x7FFFFFFF
            elif kind == PING:
                if not flags & ACK:
                    replies.append(frame(PING, ACK, 0, bytes(buffer[start:position])))
            elif kind == RST_STREAM and stream == self._stream or kind == GOAWAY:
                self._finish(False)
        del buffer[:position]
        if self._unacked >= WINDOW // 2:
            replies.append(frame(WINDOW_UPDATE, 0, 0, _INCREMENT.pack(self._unacked)))
            self._unacked = 0
        if replies:
            assert self._transport is not None
            self._transport.write(b"".join(replies))
        if self._sent < len(self._body) and self._done is not None and not self._done.done():
            self._pump()

    def _settings(self, payload: bytearray) -> None:
        for offset in range(0, len(payload) - len(payload) % 6, 6):
            key, value = _SETTING.unpack_from(payload, offset)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                self._stream_window += value - self._initial_window
                self._initial_window = value
            elif key == SETTINGS_MAX_FRAME_SIZE:
                self._frame_size = value

    def _finish(self, ok: bool) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(ok)

    def is_closed(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
