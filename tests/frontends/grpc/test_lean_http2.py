"""The lean HTTP/2 stack's parts on their own: the reader's remembered header blocks follow the HPACK dynamic table,
frames split across reads come out whole, a unary answer (headers, message, trailers) leaves in one write, and one
in parts is never changed by its owner while the windows hold it back."""

from __future__ import annotations

import asyncio

import hpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seawall.frontends.grpc.frames import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PADDED,
    PREFACE,
    WINDOW_UPDATE,
    Stream,
    frame,
    unpadded,
)
from seawall.frontends.grpc.http2 import Http2Connection
from seawall.frontends.grpc.limits import Http2Limits
from seawall.frontends.grpc.reader import FrameReader, HeaderBlock
from seawall.frontends.held import HeldBytes

REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/s/m"), (":authority", "x"), ("te", "trailers")]


def _blocks(reader: FrameReader, *blocks: tuple[int, bytes]) -> list[HeaderBlock]:
    data = b"".join(frame(HEADERS, END_HEADERS, stream, block) for stream, block in blocks)
    out = [item for item in reader.frames(data) if isinstance(item, HeaderBlock)]
    assert len(out) == len(blocks)
    return out


def test_a_repeated_block_is_decoded_once_while_the_table_stays() -> None:
    reader, encoder = FrameReader(16384), hpack.Encoder()
    list(reader.frames(PREFACE))
    first = encoder.encode(REQUEST)  # inserts its fields into the dynamic table
    again = encoder.encode(REQUEST)  # every field indexed: the same bytes each time
    assert encoder.encode(REQUEST) == again
    one, two, three = _blocks(reader, (1, first), (3, again), (5, again))
    assert two.fields is three.fields
    assert list(one.fields.fields) == list(two.fields.fields) == [(k.encode(), v.encode()) for k, v in REQUEST]


def test_a_remembered_block_is_decoded_again_once_the_table_changes() -> None:
    reader, encoder, mirror = FrameReader(16384), hpack.Encoder(), hpack.Decoder()
    list(reader.frames(PREFACE))
    first = encoder.encode(REQUEST)
    again = encoder.encode(REQUEST)
    mirror.decode(first)
    before = mirror.decode(again, raw=True)
    change = encoder.encode([("x-new", "1")])  # one more entry: `again`'s indexes now name other fields
    mirror.decode(change)
    after = mirror.decode(again, raw=True)
    assert after != before
    blocks = _blocks(reader, (1, first), (3, again), (5, change), (7, again))
    assert list(blocks[1].fields.fields) == before
    assert list(blocks[3].fields.fields) == after
    assert blocks[3].fields.malformed() is not None or blocks[3].fields.headers() != blocks[1].fields.headers()


def test_a_block_that_changes_the_table_is_never_reused() -> None:
    reader, encoder = FrameReader(16384), hpack.Encoder()
    list(reader.frames(PREFACE))
    block = encoder.encode([*REQUEST, ("x-n", "1")])
    encoder2 = hpack.Encoder()  # the same bytes again: each decoding inserts its fields once more
    assert encoder2.encode([*REQUEST, ("x-n", "1")]) == block
    one, two = _blocks(reader, (1, block), (3, block))
    assert one.fields is not two.fields
    # the table holds both insertions: a block indexing the newest entry and the one 4 entries older (x-n twice)
    probe = b"\xbe\xc2"  # indexes 62 and 66
    (decoded,) = _blocks(reader, (5, probe))
    assert list(decoded.fields.fields) == [(b"x-n", b"1"), (b"x-n", b"1")]


@pytest.mark.parametrize("step", [1, 7, 9, 10, 33, 118, 1000])
def test_frames_split_across_reads_come_out_whole(step: int) -> None:
    """Reads cut anywhere (inside the preface, a frame header, a payload, a header block and its CONTINUATION)
    give the frames of one whole read."""
    reader, encoder = FrameReader(16384), hpack.Encoder()
    block = encoder.encode(REQUEST)
    data = (
        PREFACE + frame(DATA, 0, 1, b"a" * 100) + frame(DATA, END_STREAM, 1, b"b" * 50)
        + frame(HEADERS, 0, 3, block[:10]) + frame(CONTINUATION, END_HEADERS, 3, block[10:])
        + frame(DATA, 0, 3, bytes(range(256)) * 3) + frame(DATA, END_STREAM, 3, b"")
    )  # fmt: skip
    out: list[object] = []
    for at in range(0, len(data), step):
        for item in reader.frames(data[at : at + step]):
            if isinstance(item, HeaderBlock):
                out.append((item.stream_id, item.fields.headers(), item.ended))
            else:
                out.append((item[0], item[1], item[2], bytes(item[3])))
    assert out == [
        (DATA, 0, 1, b"a" * 100),
        (DATA, END_STREAM, 1, b"b" * 50),
        (3, dict(REQUEST), False),
        (DATA, 0, 3, bytes(range(256)) * 3),
        (DATA, END_STREAM, 3, b""),
    ]


def test_only_the_frame_begun_in_an_earlier_read_is_copied() -> None:
    reader = FrameReader(16384)
    list(reader.frames(PREFACE))
    first, second = frame(DATA, 0, 1, b"a" * 100), frame(DATA, 0, 1, b"b" * 16000)
    assert list(reader.frames(first[:50])) == []
    chunk = first[50:] + second
    (_, _, _, begun), (_, _, _, after) = reader.frames(chunk)
    assert bytes(begun) == b"a" * 100 and bytes(after) == b"b" * 16000
    assert isinstance(after, memoryview) and after.obj is chunk  # read in place


@pytest.mark.parametrize("pad", [None, 0, 7, 255])
@pytest.mark.parametrize("step", [1, 9, 10, 11, 4096, 16393, 70_000, 300_000])
def test_a_large_data_frame_is_taken_in_pieces_as_it_comes(pad: int | None, step: int) -> None:
    """A DATA frame over 16 KiB (up to the 4 MiB advertised) that a read does not hold whole is never buffered:
    each read's part of its data comes out at once as a DATA frame of its own, a view of the read; the last carries
    the frame's END_STREAM, or, padded, an empty padded frame after them does. Together they count exactly the
    frame's size (flow control), none is empty, and the frames around it come out as they were."""
    reader = FrameReader(16384)
    list(reader.frames(PREFACE))
    data = bytes(range(256)) * 800  # 204800 bytes
    payload = data if pad is None else bytes((pad,)) + data + b"\0" * pad
    flags = END_STREAM | (0 if pad is None else PADDED)
    sent = frame(DATA, 0, 1, b"before") + frame(DATA, flags, 1, payload) + frame(DATA, 0, 3, b"after")
    out: list[tuple[int, int, int, bytes]] = []
    for at in range(0, len(sent), step):
        read = sent[at : at + step]
        for kind, flags_, stream, piece in reader.frames(read):
            if kind == DATA and stream == 1 and len(piece) > 6 and not flags_ & PADDED and len(read) < len(sent):
                assert isinstance(piece, memoryview) and piece.obj is read  # a view of the read: nothing buffered
            out.append((kind, flags_, stream, bytes(piece)))
    assert out[0] == (DATA, 0, 1, b"before") and out[-1] == (DATA, 0, 3, b"after")
    pieces = out[1:-1]
    assert all(kind == DATA and stream == 1 and piece for kind, _, stream, piece in pieces)
    assert sum(len(piece) for *_, piece in pieces) == len(payload)
    assert [flags_ & END_STREAM for _, flags_, _, _ in pieces] == [0] * (len(pieces) - 1) + [END_STREAM]
    assert b"".join(unpadded(flags_, piece)[0] for _, flags_, _, piece in pieces) == data
    if step < len(payload):
        assert len(pieces) > 1
        if pad is not None:
            assert pieces[-1] == (DATA, PADDED | END_STREAM, 1, bytes((pad,)) + b"\0" * pad)
    else:
        assert pieces == [(DATA, flags, 1, payload)]  # whole in one read: as it came


class _Transport(asyncio.Transport):
    """Records what the connection writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def _frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 3], "big")
        out.append(
            (
                data[pos + 3],
                data[pos + 4],
                int.from_bytes(data[pos + 5 : pos + 9], "big"),
                data[pos + 9 : pos + 9 + size],
            )
        )
        pos += 9 + size
    return out


def _one_call() -> tuple[Http2Connection, _Transport, Stream]:
    """A connection that received one whole unary call (its writes so far cleared) and that call."""
    calls: list[Stream] = []
    connection = Http2Connection(Http2Limits(), lambda path: False, calls.append)
    transport = _Transport()
    connection.connection_made(transport)
    block = hpack.Encoder().encode([*REQUEST, ("content-type", "application/grpc")])
    message = b"\x00\x00\x00\x00\x03abc"
    connection.data_received(PREFACE + frame(HEADERS, END_HEADERS, 1, block) + frame(DATA, END_STREAM, 1, message))
    assert [stream.id for stream in calls] == [1]
    transport.writes.clear()
    return connection, transport, calls[0]


async def test_a_unary_answer_is_one_write() -> None:
    connection, transport, call = _one_call()
    connection.finish(call, 0, "", b"answer")
    assert len(transport.writes) == 1
    kinds = [(kind, flags & END_STREAM, payload) for kind, flags, _, payload in _frames(transport.writes[0])]
    assert [kind for kind, _, _ in kinds] == [HEADERS, DATA, HEADERS]
    assert kinds[1][2] == b"\x00\x00\x00\x00\x06answer" and kinds[2][1] == END_STREAM


async def test_an_answer_in_parts_held_back_by_the_window_is_sent_as_it_was() -> None:
    """A unary answer given as parts (ModelInfer's, the tensor a view of the model's array) is written without a
    join while the windows let it; the part the peer's windows hold back is copied, so a model that writes its
    array again afterwards (a reused output buffer) cannot change what is still to be sent."""
    connection, transport, call = _one_call()
    array = np.arange(200_000, dtype=np.uint8)  # over the peer's 65535-byte windows
    expected = b"head" + array.tobytes()
    connection.finish(call, 0, "", [b"head", memoryview(array.data)])
    array[:] = 7  # the model reuses its buffer
    opened = (1 << 20).to_bytes(4, "big")
    connection.data_received(frame(WINDOW_UPDATE, 0, 0, opened) + frame(WINDOW_UPDATE, 0, 1, opened))
    data = [payload for kind, _, _, payload in _frames(b"".join(transport.writes)) if kind == DATA]
    assert b"".join(data) == len(expected).to_bytes(5, "big") + expected


async def test_large_messages_are_set_aside_whole_and_charged_as_announced() -> None:
    """A message of 64 KiB or more is received into one buffer of its announced size, charged whole to the
    listener's held bytes when it begins, and handed on as a read-only view of that buffer (no copy); a small
    one after it in the same DATA frame is received as before."""
    calls: list[Stream] = []
    held = HeldBytes(1 << 30)
    connection = Http2Connection(Http2Limits(), lambda path: True, calls.append, held=held)
    connection.connection_made(_Transport())
    block = hpack.Encoder().encode([*REQUEST, ("content-type", "application/grpc")])
    large, small = bytes(range(256)) * 400, b"abc"  # 102400 and 3 bytes
    data = b"\x00" + len(large).to_bytes(4, "big") + large + b"\x00" + len(small).to_bytes(4, "big") + small
    connection.data_received(PREFACE + frame(HEADERS, END_HEADERS, 1, block) + frame(DATA, 0, 1, data[:7]))
    (stream,) = calls
    assert held.held == 5 + len(large)  # the whole announced message, from its first bytes
    for at in range(7, len(data), 16384):
        connection.data_received(frame(DATA, 0, 1, data[at : at + 16384]))
    first, second = await stream.next_message(), await stream.next_message()
    assert isinstance(first, memoryview) and first.readonly and bytes(first) == large
    assert second == small
    assert held.held == 0  # each given back as the handler took it


_SIZES = st.sampled_from([0, 3, 1000, 65531, 65535, 65536, 65541, 70000, 100_000])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    sizes=st.lists(_SIZES, min_size=1, max_size=4),
    cuts=st.lists(st.integers(1, 16384) | st.sampled_from([16385, 70_000, 250_000]), min_size=1, max_size=6),
    reads=st.lists(st.integers(1, 100_000), max_size=4),
    streaming=st.booleans(),
)
def test_messages_of_any_size_in_frames_cut_anywhere_come_out_whole(
    sizes: list[int], cuts: list[int], reads: list[int], streaming: bool
) -> None:
    """Whatever the messages' sizes (either side of the size from which a message's buffer is set aside whole),
    wherever the DATA frames cut them (large frames, taken in pieces, included) and wherever the reads cut the
    frames: a streaming call's handler gets each message as sent, in order, and a unary call's one message comes
    out whole; every held byte is given back once the messages are taken."""
    if not streaming:
        sizes = sizes[:1]
    messages = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    data = b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in messages)
    calls: list[Stream] = []
    held = HeldBytes(1 << 30)
    connection = Http2Connection(Http2Limits(), lambda path: streaming, calls.append, held=held)
    connection.connection_made(_Transport())
    block = hpack.Encoder().encode([*REQUEST, ("content-type", "application/grpc")])
    frames, at, turn = [frame(HEADERS, END_HEADERS, 1, block)], 0, 0
    while at < len(data):
        size = cuts[turn % len(cuts)]
        frames.append(frame(DATA, END_STREAM if at + size >= len(data) else 0, 1, data[at : at + size]))
        at, turn = at + size, turn + 1
    connection.data_received(PREFACE)
    if reads:  # the bytes of all the frames in reads of these sizes in turn
        sent, at, turn = b"".join(frames), 0, 0
        frames = []
        while at < len(sent):
            frames.append(sent[at : at + reads[turn % len(reads)]])
            at, turn = at + reads[turn % len(reads)], turn + 1
    for piece in frames:
        connection.data_received(piece)
    (stream,) = calls
    if streaming:

        async def taken() -> list[bytes]:
            out = []
            while (message := await stream.next_message()) is not None:
                out.append(bytes(message))
            return out

        assert asyncio.run(taken()) == messages
        connection.work_ended(stream)
        connection.finish(stream, 0)
    else:
        message = stream.take_only_message()
        assert message is not None and bytes(message) == messages[0]
        stream.working = False
        connection.finish(stream, 0)
    assert held.held == 0
