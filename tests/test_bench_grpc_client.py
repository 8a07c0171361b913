"""The benchmark's gRPC client (`bench.grpc_client`) against frames a server may send that Seawall's and Triton's
do not in the bench: padding, priority fields, trailers cut into HEADERS + CONTINUATION, Huffman-coded and
table-indexed headers, a small window and frame size, PING. Frames are fed to the protocol directly."""

from __future__ import annotations

import asyncio
import struct

import hpack

from bench import grpc_client as http2
from bench.grpc_client import GrpcConnection, frame


class _Transport:
    def __init__(self) -> None:
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


def _frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(kind, flags, stream, payload) of each frame the client wrote after its preface."""
    out, position = [], 24
    while position < len(data):
        word, flags, stream = struct.unpack_from(">IBI", data, position)
        start = position + 9
        position = start + (word >> 8)
        out.append((word & 0xFF, flags, stream, bytes(data[start:position])))
    return out


def test_padding_priority_continuation_huffman_small_windows_and_ping() -> None:
    body = b"\0" + (3000).to_bytes(4, "big") + bytes(3000)  # one 3000-byte gRPC message
    encoder = hpack.Encoder()  # Huffman-coded, and indexed the second time a header comes

    async def exchange() -> tuple[bool, int, list[tuple[int, int, int, bytes]]]:
        client, transport = GrpcConnection("x:1", body, "/p"), _Transport()
        client.connection_made(transport)  # type: ignore[arg-type]
        settings = struct.pack(">HIHI", 0x4, 1000, 0x5, 16384)  # a 1000-byte stream window
        client.data_received(frame(http2.SETTINGS, 0, 0, settings) + frame(http2.PING, 0, 0, b"12345678"))
        call = asyncio.ensure_future(client.call())
        await asyncio.sleep(0)
        sent_first = sum(len(p) for k, _, _, p in _frames(transport.written) if k == http2.DATA)
        assert sent_first == 1000  # the stream's window, not the connection's 65535
        client.data_received(frame(http2.WINDOW_UPDATE, 0, 1, (5000).to_bytes(4, "big")))
        head = encoder.encode([(":status", "200"), ("content-type", "application/grpc")])
        padded = bytes([3]) + bytes(5) + head + bytes(3)  # pad length, priority (5 bytes), block, padding
        reply = b"\0" + (10).to_bytes(4, "big") + bytes(10)
        data = bytes([7]) + reply + bytes(7)  # padded DATA
        trailers = encoder.encode([("grpc-status", "0"), ("grpc-message", "")])
        client.data_received(
            frame(http2.HEADERS, http2.END_HEADERS | http2.PADDED | http2.PRIORITY, 1, padded)
            + frame(http2.DATA, http2.PADDED, 1, data)
            + frame(http2.HEADERS, http2.END_STREAM, 1, trailers[:2])  # END_STREAM here, the block ends in CONTINUATION
        )
        await asyncio.sleep(0)
        assert not call.done()  # the trailers are not whole yet
        client.data_received(frame(http2.CONTINUATION, http2.END_HEADERS, 1, trailers[2:]))
        return await call, client.received, _frames(transport.written)

    ok, received, frames = asyncio.run(exchange())
    assert ok and received == 15  # the message without the padding
    assert (http2.PING, http2.ACK, 0, b"12345678") in frames and (http2.SETTINGS, http2.ACK, 0, b"") in frames
    sent = [p for k, _, s, p in frames if k == http2.DATA and s == 1]
    assert b"".join(sent) == body and [len(p) for p in sent] == [1000, 2005]
    assert [f for k, f, s, _ in frames if k == http2.DATA][-1] == http2.END_STREAM


def test_a_failed_call_is_told_from_its_trailers() -> None:
    async def exchange() -> bool:
        client = GrpcConnection("x:1", b"\0\0\0\0\0", "/p")
        client.connection_made(_Transport())  # type: ignore[arg-type]
        call = asyncio.ensure_future(client.call())
        await asyncio.sleep(0)
        block = hpack.Encoder().encode([(":status", "200"), ("grpc-status", "5"), ("grpc-message", "not found")])
        client.data_received(frame(http2.HEADERS, http2.END_HEADERS | http2.END_STREAM, 1, block))  # trailers only
        return await call

    assert asyncio.run(exchange()) is False
