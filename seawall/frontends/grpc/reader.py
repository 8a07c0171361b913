"""The receiving side's syntax for the lean HTTP/2 stack: client bytes cut into frames (RFC 9113 3.4, 4.1), HEADERS
and their CONTINUATION frames joined into one header block (6.2, 6.10) and decoded with HPACK (RFC 7541).
What a frame means for a stream or the connection is `http2.Http2Connection`'s business.

Every buffer a peer can make it hold is bounded: one frame of at most 16 KiB, one header block before decoding
(CONTINUATION flood), the decoded header list (HPACK bomb), the few decoded blocks it remembers. A DATA frame may be
as large as the SETTINGS_MAX_FRAME_SIZE we advertise (4 MiB, as Triton's gRPC server does, so a client sends a
large request in a few frames rather than one per 16 KiB), but one larger than 16 KiB that is not whole in the
bytes read is never buffered: its data goes on in pieces as they arrive, each a DATA frame of its own for the
connection (the last one with the frame's END_STREAM; its padding, if any, as an empty padded frame after them),
so flow control counts every byte of it as the peer sent it.

A client repeats the same header block call after call once its fields are in the dynamic table: a block whose
decoding left the table as it was is remembered and decoded again only once the table changes (`_Blocks`).

Imports only the standard library, `hpack` and `frames`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, cast

import hpack
import hpack.exceptions

from seawall.frontends.grpc.frames import (
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME,
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
    Payload,
    malformed_request,
)

#: the SETTINGS_MAX_FRAME_SIZE we advertise (Triton's gRPC server advertises 4 MiB too); only DATA frames may be
#: larger than DEFAULT_FRAME, and such a frame is taken in pieces, never buffered whole
MAX_FRAME = 4 * 1024 * 1024

#: a frame but HEADERS and CONTINUATION: (type, flags, stream id, payload)
Frame = tuple[int, int, int, Payload]
#: blocks remembered per connection, and the largest remembered (encoded, and decoded: names and values)
_REMEMBERED_BLOCKS, _REMEMBERED_BLOCK_BYTES, _REMEMBERED_FIELD_BYTES = 4, 1024, 4096


class Fields:
    """The decoded fields of one header block; what a request's fields mean is worked out once per `Fields`
    (a remembered block gives the same object again). Read-only: calls share it."""

    __slots__ = ("fields", "_malformed", "_headers")

    def __init__(self, fields: Sequence[tuple[bytes, bytes]]) -> None:
        self.fields = fields
        self._malformed: str | None | bool = False  # False: not worked out yet
        self._headers: dict[str, str] | None = None

    def malformed(self) -> str | None:
        """Why these fields make a request malformed (`frames.malformed_request`), None when they do not."""
        if self._malformed is False:
            self._malformed = malformed_request(self.fields)
        return self._malformed  # type: ignore[return-value]

    def headers(self) -> dict[str, str]:
        """The fields as {name: value} (latin-1); the last of a repeated name wins. Shared: never change it."""
        if self._headers is None:
            self._headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.fields}
        return self._headers


class HeaderBlock(NamedTuple):
    """A HEADERS frame and its CONTINUATION frames, decoded."""

    stream_id: int
    fields: Fields
    ended: bool  # END_STREAM was set on the HEADERS frame


class _Blocks:
    """HPACK decoding of one connection's header blocks, remembering the last few small blocks that did not change
    the dynamic table while the table stays as it was: decoding one of them again would give the same fields.

    The table's state is told by its newest entry (the object itself: every insertion makes a new one, and the one
    held here cannot be reused), its length and its size limit; any change forgets every remembered block.
    """

    def __init__(self, max_header_list_bytes: int) -> None:
        self._decoder = hpack.Decoder(max_header_list_size=max_header_list_bytes)
        self._decoder.max_allowed_table_size = 4096
        self._remembered: dict[bytes, Fields] = {}
        self._state: tuple[object, int, int] | None = None

    def _table_state(self) -> tuple[object, int, int]:
        table = self._decoder.header_table
        # Any, not hpack's deque[tuple[bytes, bytes]]: compiled, a typed tuple is unboxed and boxed again as a new
        # object, and the identity of the newest entry is what tells the table's state
        entries: Any = table.dynamic_entries
        return (entries[0] if entries else None), len(entries), table.maxsize

    def decode(self, block: bytes) -> Fields:
        """
        Raises:
            ConnectionError_: the block is not valid HPACK or decodes to more than the header list limit.
        """
        state = self._table_state()
        if self._state is None or not _same(state, self._state):
            self._remembered.clear()
            self._state = state
        elif (known := self._remembered.get(block)) is not None:
            return known
        try:
            fields = Fields(cast("list[tuple[bytes, bytes]]", self._decoder.decode(block, raw=True)))
        except hpack.exceptions.HPACKError as exc:
            raise ConnectionError_(COMPRESSION_ERROR, f"header block: {exc}") from None
        if (
            len(block) <= _REMEMBERED_BLOCK_BYTES
            and sum(len(k) + len(v) for k, v in fields.fields) <= _REMEMBERED_FIELD_BYTES
            and _same(self._table_state(), state)
        ):
            if len(self._remembered) >= _REMEMBERED_BLOCKS:
                self._remembered.clear()
            self._remembered[block] = fields
        return fields


def _same(state: tuple[object, int, int], other: tuple[object, int, int]) -> bool:
    return state[0] is other[0] and state[1] == other[1] and state[2] == other[2]


def _frame_size(buffer: bytearray | memoryview, pos: int) -> int:
    """The payload size in the frame header at `pos` (whole: 9 bytes).

    Raises:
        ConnectionError_: larger than the SETTINGS_MAX_FRAME_SIZE we advertise (FRAME_SIZE_ERROR); a frame of
            another kind than DATA larger than DEFAULT_FRAME: a header block one (ENHANCE_YOUR_CALM, as a too
            large block), any other (FRAME_SIZE_ERROR; none of them needs that much).
    """
    size = (buffer[pos] << 16) | (buffer[pos + 1] << 8) | buffer[pos + 2]
    if size > DEFAULT_FRAME and buffer[pos + 3] != DATA:
        if buffer[pos + 3] in (HEADERS, CONTINUATION):
            raise ConnectionError_(ENHANCE_YOUR_CALM, "header block too large")
        raise ConnectionError_(FRAME_SIZE_ERROR, "frame larger than its kind needs")
    if size > MAX_FRAME:
        raise ConnectionError_(FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
    return size


def _large_data(buffer: bytearray | memoryview, pos: int, size: int) -> bool:
    """Whether the frame whose header is at `pos` is a DATA frame taken in pieces when it is not whole."""
    return size > DEFAULT_FRAME and buffer[pos + 3] == DATA


class FrameReader:
    """Cuts one connection's incoming bytes into frames, once the client's connection preface has come."""

    def __init__(self, max_header_list_bytes: int) -> None:
        self._max_block = max_header_list_bytes
        self._buffer = bytearray()  # the bytes of an incomplete frame (or preface), waiting for the rest
        self.preface = False  # the client's connection preface has arrived
        self._blocks = _Blocks(max_header_list_bytes)
        self._block: bytearray | None = None  # a header block waiting for its CONTINUATION frames
        self._block_stream = 0
        self._block_end = False
        # a large DATA frame being taken in pieces (`_large_data`): its stream, END_STREAM flag, data bytes still
        # to come, padding length (-1: none, or its padding frame was made) and padding bytes still to come
        self._piece_stream = 0
        self._piece_end = 0
        self._piece_left = 0
        self._pad = -1
        self._pad_left = 0

    def frames(self, data: bytes) -> Iterator[Frame | HeaderBlock]:
        """The complete frames and header blocks that `data` finishes, in order; the rest waits for more bytes.
        Payloads are views of `data` (no copy), but for a frame begun in earlier bytes: only the bytes that finish
        it are copied, the frames after it are read in place. A consumer keeps what it needs of a payload before
        the next call. A consumer that stops early (the connection closed) leaves the reader unusable.

        Raises:
            ConnectionError_: the bytes break HTTP/2's framing (a connection error, with its code).
        """
        view = memoryview(data)
        if not self.preface:  # the connection's first bytes: buffered whole until the preface is complete
            self._buffer += view
            view = memoryview(b"")
            if len(self._buffer) < 24:
                if not PREFACE.startswith(bytes(self._buffer)):
                    raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return
            if bytes(self._buffer[:24]) != PREFACE:
                raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self.preface = True
            del self._buffer[:24]
        elif self._buffer:
            taken = self._finish_frame(view)  # not inside the slice: compiled, a call there ran twice
            if taken < 0:
                return  # still incomplete: all of `data` is in the buffer
            view = view[taken:]
        if self._buffer:
            yield from self._cut(self._buffer)
        if len(view):
            yield from self._cut(view)

    def _finish_frame(self, view: memoryview) -> int:
        """Append to the buffered start of a frame the bytes of `view` that finish it and return how many they
        were; -1 when all of `view` does not finish it (then all of it was appended)."""
        buffer = self._buffer
        taken = 0
        if len(buffer) < 9:
            taken = min(9 - len(buffer), len(view))
            buffer.extend(view[:taken])
            if len(buffer) < 9:
                return -1
        size = _frame_size(buffer, 0)
        if _large_data(buffer, 0, size):  # only its header (and padding length) is buffered: `_cut` goes on
            head = 10 if buffer[4] & PADDED else 9
            more = min(head - len(buffer), len(view) - taken)
            buffer.extend(view[taken : taken + more])
            return taken + more if len(buffer) == head else -1
        more = min(9 + size - len(buffer), len(view) - taken)
        buffer.extend(view[taken : taken + more])
        return taken + more if len(buffer) == 9 + size else -1

    def _cut(self, buffer: bytearray | memoryview) -> Iterator[Frame | HeaderBlock]:
        """The complete frames of `buffer` (the reader's own buffer, or a view of received bytes); what is left
        of it waits in the reader's buffer."""
        pos = 0
        end = len(buffer)
        while True:
            if self._piece_left or self._pad >= 0:  # a large DATA frame is being taken: these bytes go on with it
                if pos == end:
                    break
                taken = min(self._piece_left, end - pos)
                if taken:
                    self._piece_left -= taken
                    flags = self._piece_end if not self._piece_left and self._pad < 0 else 0
                    yield DATA, flags, self._piece_stream, buffer[pos : pos + taken]
                    pos += taken
                if not self._piece_left and self._pad >= 0:
                    padding = min(self._pad_left, end - pos)
                    self._pad_left -= padding
                    pos += padding
                    if not self._pad_left:  # the padding as a frame of its own: counted, and carrying END_STREAM
                        pad, self._pad = self._pad, -1
                        yield DATA, PADDED | self._piece_end, self._piece_stream, bytes((pad,)) + bytes(pad)
                continue
            if end - pos < 9:
                break
            size = _frame_size(buffer, pos)
            if end - pos - 9 < size:
                if not _large_data(buffer, pos, size):
                    break
                if self._block is not None:
                    raise ConnectionError_(PROTOCOL_ERROR, "expected CONTINUATION")
                head = 10 if buffer[pos + 4] & PADDED else 9  # (the padding length is part of the head)
                if end - pos < head:
                    break  # its padding length has not come yet
                self._piece_stream = int.from_bytes(buffer[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                self._piece_end = buffer[pos + 4] & END_STREAM
                self._pad = buffer[pos + 9] if head == 10 else -1  # (at most 255: shorter than the frame)
                self._pad_left = max(self._pad, 0)
                self._piece_left = size - (head - 9) - self._pad_left
                pos += head
                continue
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
        if buffer is self._buffer:
            del self._buffer[:pos]
        else:
            self._buffer += buffer[pos:]

    def _headers(self, flags: int, stream_id: int, payload: Payload) -> None:
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
        return HeaderBlock(stream_id, self._blocks.decode(bytes(block)), ended)
