"""The `http2_frames` fuzz target: arbitrary client bytes, after the connection preface, into the lean HTTP/2
stack (`frontends.grpc.http2` and `lean`) over a real loopback TCP connection, served by the real gRPC service over
a real in-process core with the example add_sub model (its model.py run inline on the event loop, so that one
input is one deterministic run).

One input: connect, send PREFACE + the bytes, let the server read them and run the calls they start (a bounded
number of event-loop turns), check what it answered, close, and check that it let go of everything. A crash is:
- an error logged by Seawall (a state-machine bug costs the connection: "HTTP/2 connection failed"; a handler
  failing on the request: "gRPC call ... failed");
- an answer that is not valid HTTP/2 (frames, HPACK), a frame after GOAWAY, a RST_STREAM NO_ERROR on a stream the
  server had not ended (a call cut without its status);
- streams or call tasks still held once the connection is gone (a leaked slot of the stream limit).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import hpack
import numpy as np
from tritonclient.grpc import service_pb2

from seawall.app import open_server
from seawall.frontends.grpc.frames import DEFAULT_FRAME
from seawall.frontends.grpc.lean import LeanServer
from seawall.frontends.grpc.limits import Http2Limits
from seawall.frontends.grpc.reader import MAX_FRAME
from seawall.frontends.grpc.service import build_handlers
from seawall.options import Limits, Options, RepositoryOptions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x4, 0x8, 0x20
SERVICE = "/inference.GRPCInferenceService/"
#: small limits, so that short inputs reach them
HTTP2_LIMITS = Http2Limits(
    max_concurrent_streams=4,
    max_message_bytes=1024,
    max_header_list_bytes=2048,
    window_bytes=1 << 16,
    control_frames_per_second=64,
    keepalive_time=0.0,
)
SETTLE_TURNS = 200  # event-loop turns for the server to read the input and finish the calls that can finish
MIN_TURNS = 8  # ... at least (reading the input takes a turn or two)
RELEASE_TURNS = 2000  # ... and to let go of everything once the client has gone


class _Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.errors.append(self.format(record))


class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class _Harness:
    """The server, started once per process on a private event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.stack = AsyncExitStack()
        self.repository = tempfile.mkdtemp(prefix="seawall-fuzz-http2-")
        self.log = _Collected()
        self.lean = self.loop.run_until_complete(self._start())
        atexit.register(self.close)

    async def _start(self) -> LeanServer:
        shutil.copytree(EXAMPLES / "add_sub", Path(self.repository) / "add_sub")
        with open(Path(self.repository) / "add_sub" / "config.pbtxt", "a") as config:
            config.write('\nparameters { key: "SEAWALL_IN_PROCESS" value { string_value: "inline" } }\n')
        options = Options(
            repository=RepositoryOptions(paths=(self.repository,)),
            limits=Limits(grpc_max_message_bytes=HTTP2_LIMITS.max_message_bytes, grpc_max_concurrent_streams=4),
        )
        core = await self.stack.enter_async_context(open_server(options))
        handlers = build_handlers(core, options)
        paths = {f"/{service}/{name}": h for service, methods in handlers.items() for name, h in methods.items()}
        lean = LeanServer(paths, HTTP2_LIMITS)
        self.port = await lean.start("127.0.0.1", 0)
        self.stack.push_async_callback(lean.stop, 0.0)
        return lean

    def close(self) -> None:
        self.loop.run_until_complete(self.stack.aclose())
        self.loop.close()
        shutil.rmtree(self.repository, ignore_errors=True)

    async def run(self, data: bytes) -> None:
        """One input; AssertionError on a crash. Seawall's log records are collected (not printed) meanwhile."""
        self.log.errors.clear()
        seawall_logger = logging.getLogger("seawall")
        seawall_logger.addHandler(self.log)
        propagate, seawall_logger.propagate = seawall_logger.propagate, False
        try:
            await self._run(data)
        finally:
            seawall_logger.removeHandler(self.log)
            seawall_logger.propagate = propagate

    async def _run(self, data: bytes) -> None:
        transport, client = await self.loop.create_connection(_Client, "127.0.0.1", self.port)
        try:
            transport.write(PREFACE + data)
            for turn in range(SETTLE_TURNS):
                await asyncio.sleep(0)
                if turn >= MIN_TURNS and not self.lean.calls():
                    break
            answered = _check_answer(bytes(client.received))
            if not self.lean.calls() and answered is not None:  # settled, and the connection goes on
                held, expected = self.lean.open_streams(), _open_streams(data, answered)
                assert held <= expected, f"{held} stream(s) held, at most {expected} open: a slot leaked"
        finally:
            transport.close()
            await client.lost
        for _ in range(RELEASE_TURNS):
            if not self.lean.calls() and not self.lean.open_streams():
                break
            await asyncio.sleep(0)
        assert not self.lean.calls(), f"{self.lean.calls()} call task(s) still running after the client left"
        assert not self.lean.open_streams(), f"{self.lean.open_streams()} stream(s) still held after the client left"
        assert not self.lean.held_bytes(), f"{self.lean.held_bytes()} request byte(s) still held after the client left"
        assert not self.log.errors, "\n".join(self.log.errors)


def _frames(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, stream, payload) of each whole frame of `data`, up to one over the size the server takes (4 MiB
    for DATA, the SETTINGS_MAX_FRAME_SIZE it advertises; 16 KiB for the other kinds)."""
    pos = 0
    while len(data) - pos >= 9:
        size = int.from_bytes(data[pos : pos + 3], "big")
        if size > (MAX_FRAME if data[pos + 3] == DATA else DEFAULT_FRAME) or len(data) - pos - 9 < size:
            return
        stream = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        yield data[pos + 3], data[pos + 4], stream, data[pos + 9 : pos + 9 + size]
        pos += 9 + size


def _open_streams(data: bytes, answered: tuple[set[int], set[int]]) -> int:
    """How many streams may still be open (RFC 9113 5.1: open or half-closed) once the server has settled: those
    the client started and did not reset, minus those the server reset, or ended after the client ended them."""
    server_ended, server_reset = answered
    started: set[int] = set()
    client_ended: set[int] = set()
    client_reset: set[int] = set()
    for kind, flags, stream, _ in _frames(data):
        if kind == HEADERS:
            started.add(stream)
        if kind in (HEADERS, DATA) and flags & END_STREAM:
            client_ended.add(stream)
        elif kind == RST_STREAM:
            client_reset.add(stream)
    closed = client_reset | server_reset | (server_ended & client_ended)
    return len(started - closed)


def _check_answer(received: bytes) -> tuple[set[int], set[int]] | None:
    """The server's bytes parse as HTTP/2 frames with valid HPACK blocks; nothing follows a GOAWAY; a stream is
    reset with NO_ERROR only after its END_STREAM (the call's status went out first).

    Returns the streams the server ended and those it reset, None after a GOAWAY.
    """
    decoder = hpack.Decoder()
    ended: set[int] = set()
    reset: set[int] = set()
    pos, goaway = 0, False
    while len(received) - pos >= 9:
        size = int.from_bytes(received[pos : pos + 3], "big")
        if len(received) - pos - 9 < size:
            break
        kind, flags = received[pos + 3], received[pos + 4]
        stream = int.from_bytes(received[pos + 5 : pos + 9], "big")
        payload = received[pos + 9 : pos + 9 + size]
        pos += 9 + size
        assert not goaway, f"frame type {kind} after GOAWAY"
        assert size <= 16384, f"frame of {size} bytes over the peer's default SETTINGS_MAX_FRAME_SIZE"
        if kind == HEADERS:
            fields = dict(decoder.decode(payload))
            assert stream % 2 and stream not in ended, f"HEADERS on stream {stream} after its end"
            if flags & END_STREAM:
                assert "grpc-status" in fields, f"stream {stream} ended without grpc-status: {fields}"
                ended.add(stream)
        elif kind == DATA:
            assert stream and stream not in ended, f"DATA on stream {stream} after its end"
        elif kind == RST_STREAM:
            assert payload != bytes(4) or stream in ended, f"stream {stream} reset with NO_ERROR before its status"
            reset.add(stream)
        elif kind == GOAWAY:
            goaway = True
    assert pos == len(received), f"{len(received) - pos} bytes of a truncated frame"
    return None if goaway else (ended, reset)


_HARNESS: list[_Harness] = []


def http2_frames(data: bytes) -> None:
    """Client bytes after the preface into a real lean HTTP/2 server connection; AssertionError on a crash."""
    if not _HARNESS:
        _HARNESS.append(_Harness())
    harness = _HARNESS[0]
    harness.loop.run_until_complete(harness.run(data))


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def message(request: bytes) -> bytes:
    """A gRPC length-prefixed message, not compressed."""
    return b"\x00" + len(request).to_bytes(4, "big") + request


def encode(*fields: tuple[str, str]) -> bytes:
    """A header block of never-indexed literals: it decodes the same on any connection, whatever came before."""
    return bytes(hpack.Encoder().encode([hpack.NeverIndexedHeaderTuple(k, v) for k, v in fields]))


def request_block(method: str, *extra: tuple[str, str]) -> bytes:
    """The header block of a call to `method` of the inference service, as a gRPC client sends it."""
    return encode(
        (":method", "POST"), (":scheme", "http"), (":path", SERVICE + method), (":authority", "x"),
        ("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "5S"), *extra,
    )  # fmt: skip


def seeds() -> list[bytes]:
    """Client byte sequences that reach every part of the request path: unary and streaming calls, padding,
    priority, CONTINUATION, trailers, resets, window updates, SETTINGS, PING, GOAWAY."""
    request = service_pb2.ModelInferRequest(model_name="add_sub", id="1")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[4])
        request.raw_input_contents.append(np.arange(4, dtype=np.float32).tobytes())
    infer = message(request.SerializeToString())
    settings = frame(SETTINGS, 0, 0, (4).to_bytes(2, "big") + (1 << 20).to_bytes(4, "big"))
    unary = frame(HEADERS, END_HEADERS, 1, request_block("ModelInfer")) + frame(DATA, END_STREAM, 1, infer)
    block = request_block("ModelStreamInfer", ("x-meta", "1"))
    streaming = (
        frame(HEADERS, PADDED | PRIORITY_FLAG, 3, b"\x02" + bytes(4) + b"\x10" + block[:10] + b"\0\0")
        + frame(CONTINUATION, END_HEADERS, 3, block[10:])
        + frame(DATA, PADDED, 3, b"\x01" + infer + b"\0")
        + frame(WINDOW_UPDATE, 0, 3, (1000).to_bytes(4, "big"))
        + frame(DATA, 0, 3, infer)
        + frame(HEADERS, END_HEADERS | END_STREAM, 3, encode(("x-trailer", "t")))
    )
    live = frame(HEADERS, END_HEADERS, 5, request_block("ServerLive")) + frame(DATA, END_STREAM, 5, message(b""))
    reset = (
        frame(HEADERS, END_HEADERS, 7, request_block("ModelInfer"))
        + frame(DATA, END_STREAM, 7, infer)
        + frame(RST_STREAM, 0, 7, (8).to_bytes(4, "big"))
    )
    control = (
        frame(PING, 0, 0, bytes(8))
        + frame(PRIORITY, 0, 9, bytes(5))
        + frame(WINDOW_UPDATE, 0, 0, (1 << 16).to_bytes(4, "big"))
        + frame(SETTINGS, 1, 0)
        + frame(GOAWAY, 0, 0, bytes(8))
    )
    return [settings + unary, settings + unary + streaming + live + reset + control, streaming, reset + control]
