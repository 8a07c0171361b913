"""The receiving side's syntax for the lean HTTP/2 stack: client bytes cut into frames (RFC 9113 3.4, 4.1), HEADERS
and their CONTINUATION frames joined into one header block (6.2, 6.10) and decoded with HPACK (RFC 7541).
What a frame means for a stream or the connection is `http2.Http2Connection`'s business.

Every buffer a peer can make it hold is bounded: one frame (our SETTINGS_MAX_FRAME_SIZE), one header block before
decoding (CONTINUATION flood), the decoded header list (HPACK bomb).

Imports only the standard library, `hpack` and `frames`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import hpack
import hpack.exceptions

from seawall.frontends.grpc.frames import (
    COMPRESSION_ERROR,
    CONTINUATION,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FRAME_SIZE_ERROR,
    HEADERS,
    PADDED,
    PREFACE,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    ConnectionError_,
)

MAX_FRAME = 16384  # what we advertise (SETTINGS_MAX_FRAME_SIZE is left at its default)

#: a frame but HEADERS and CONTINUATION: (type, flags, stream id, payload)
Frame = tuple[int, int, int, bytearray]


class HeaderBlock(NamedTuple):
    """A HEADERS frame and its CONTINUATION frames, decoded."""

    stream_id: int
    fields: Sequence[tuple[bytes, bytes]]
    ended: bool  # END_STREAM was set on the HEADERS frame


class FrameReader:
    """Cuts one connection's incoming bytes into frames, once the client's connection preface has come."""

    def __init__(self, max_header_list_bytes: int) -> None:
        self._max_block = max_header_list_bytes
        self._buffer = bytearray()
        self.preface = False  # the client's connection preface has arrived
        self._decoder = hpack.Decoder(max_header_list_size=max_header_list_bytes)
        self._decoder.max_allowed_table_size = 4096
        self._block: bytearray | None = None  # a header block waiting for its CONTINUATION frames
        self._block_stream = 0
        self._block_end = False

    def frames(self, data: bytes) -> Iterator[Frame | HeaderBlock]:
        """The complete frames and header blocks that `data` finishes, in order; the rest waits for more bytes.
        A consumer that stops early (the connection closed) leaves the reader unusable.

        Raises:
            ConnectionError_: the bytes break HTTP/2's framing (a connection error, with its code).
        """
        buffer = self._buffer
        buffer += data
        pos = 0
        if not self.preface:
            if len(buffer) < 24:
                if not PREFACE.startswith(bytes(buffer)):
                    raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return
            if buffer[:24] != PREFACE:
                raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self.preface = True
            pos = 24
        end = len(buffer)
        while end - pos >= 9:
            size = (buffer[pos] << 16) | (buffer[pos + 1] << 8) | buffer[pos + 2]
            if size > MAX_FRAME:
                raise ConnectionError_(FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
            if end - pos - 9 < size:
                break
            kind, flags = buffer[pos + 3], buffer[pos + 4]
            stream_id = int.from_bytes(buffer[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            payload = buffer[pos + 9 : pos + 9 + size]
            pos += 9 + size
            if self._block is not None and (kind != CONTINUATION or stream_id != self._block_stream):
                raise ConnectionError_(PROTOCOL_ERROR, "expected CONTINUATION")
            if kind == HEADERS:
                self._headers(flags, stream_id, payload)
            elif kind == CONTINUATION:
                if self._block is None:
                    raise ConnectionError_(PROTOCOL_ERROR, "unexpected CONTINUATION")
                self._block += payload
                self._check_block()
            else:
                yield kind, flags, stream_id, payload
                continue
            if flags & END_HEADERS:
                yield self._end_block()
        del buffer[:pos]

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

    def _check_block(self) -> None:
        assert self._block is not None
        if len(self._block) > self._max_block:
            raise ConnectionError_(ENHANCE_YOUR_CALM, "header block too large")  # CONTINUATION flood

    def _end_block(self) -> HeaderBlock:
        block, stream_id, ended = self._block, self._block_stream, self._block_end
        self._block = None
        assert block is not None
        try:
            decoded = list(self._decoder.decode(bytes(block), raw=True))
        except hpack.exceptions.HPACKError as exc:
            raise ConnectionError_(COMPRESSION_ERROR, f"header block: {exc}") from None
        return HeaderBlock(stream_id, decoded, ended)
