"""`--grpc-server=lean` (the default): Seawall's own HTTP/2 stack under real clients, an HTTP/2 abuse suite, and
`--grpc-server=aio` still serving.

Each abuse case talks raw HTTP/2 on a socket (RFC 9113 frames, HPACK from the `hpack` package) and checks the
server's answer (GOAWAY with the RFC's error code, RST_STREAM, or bounded waiting) and that the server still
answers tritonclient afterwards: rapid reset (CVE-2023-44487), CONTINUATION flood (CVE-2024-27316), HPACK bomb,
SETTINGS and PING floods, a zero flow-control window, oversized frames and messages, the stream-count limit, and
the request bytes all connections may hold at once.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import hpack
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from tests.harness import ServerProcess, run_seawall, start_seawall

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS = 0x1, 0x4
FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x6, 0x7, 0x9, 0xB
PATH = "/inference.GRPCInferenceService/ModelInfer"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def add_sub_message() -> bytes:
    request = service_pb2.ModelInferRequest(model_name="add_sub")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[4])
        request.raw_input_contents.append(np.arange(4, dtype=np.float32).tobytes())
    body = request.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


class Raw:
    """A raw HTTP/2 client connection: frames out, frames in."""

    def __init__(self, address: str, settings: bytes = b"") -> None:
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.encoder = hpack.Encoder()
        self.buffer = b""
        self.closed = False
        self.send(PREFACE + frame(SETTINGS, 0, 0, settings))

    def send(self, data: bytes) -> bool:
        """False once the server has closed the connection."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def headers(self, stream: int, end_stream: bool = False, extra: list[tuple[str, str]] | None = None) -> bytes:
        block = self.encoder.encode(
            [(":method", "POST"), (":scheme", "http"), (":path", PATH), (":authority", "x"),
             ("content-type", "application/grpc"), ("te", "trailers"), *(extra or [])]
        )  # fmt: skip
        return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream, block)

    def frames(self, seconds: float, until: int | None = None) -> list[tuple[int, int, int, bytes]]:
        """Frames read for up to `seconds`, stopping early at a GOAWAY, at a frame of type `until`, or at the end."""
        out: list[tuple[int, int, int, bytes]] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            while len(self.buffer) >= 9 and len(self.buffer) >= 9 + int.from_bytes(self.buffer[:3], "big"):
                size = int.from_bytes(self.buffer[:3], "big")
                item = (
                    self.buffer[3],
                    self.buffer[4],
                    int.from_bytes(self.buffer[5:9], "big"),
                    self.buffer[9 : 9 + size],
                )
                self.buffer = self.buffer[9 + size :]
                out.append(item)
                if item[0] == GOAWAY or item[0] == until:
                    return out
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self.buffer += chunk
        return out

    def goaway(self, seconds: float = 10.0) -> int | None:
        """The error code of the server's GOAWAY, None if none came."""
        for kind, _, _, payload in self.frames(seconds, until=GOAWAY):
            if kind == GOAWAY:
                return int.from_bytes(payload[4:8], "big")
        return None

    def close(self) -> None:
        self.sock.close()


def assert_healthy(server: ServerProcess) -> None:
    assert server.is_ready()
    with grpcclient.InferenceServerClient(server.grpc) as client:
        inputs = [grpcclient.InferInput("INPUT0", [4], "FP32"), grpcclient.InferInput("INPUT1", [4], "FP32")]
        for tensor in inputs:
            tensor.set_data_from_numpy(np.arange(4, dtype=np.float32))
        result = client.infer("add_sub", inputs)
        assert result.as_numpy("OUTPUT0").tolist() == [0.0, 2.0, 4.0, 6.0]


@pytest.fixture(scope="module")
def lean() -> Iterator[ServerProcess]:
    server = start_seawall("--grpc-server=lean")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def small() -> Iterator[ServerProcess]:
    server = start_seawall("--grpc-server=lean", "--grpc-max-concurrent-streams=4", "--grpc-max-message-size=4096")
    yield server
    server.stop()


def test_tritonclient_sync_and_aio(lean: ServerProcess) -> None:
    assert_healthy(lean)

    async def run() -> None:
        async with aioclient.InferenceServerClient(lean.grpc) as client:
            assert await client.is_server_live()
            metadata = await client.get_model_metadata("add_sub")
            assert metadata.name == "add_sub"
            with pytest.raises(InferenceServerException, match="unknown"):
                await client.get_model_metadata("no_such_model")

    asyncio.run(run())
    assert_healthy(lean)


def test_rapid_reset_is_answered_with_goaway(lean: ServerProcess) -> None:
    raw = Raw(lean.grpc)
    message = add_sub_message()
    burst = b"".join(
        raw.headers(stream) + frame(DATA, END_STREAM, stream, message) + frame(RST_STREAM, 0, stream, b"\0\0\0\x08")
        for stream in range(1, 2 * 3000, 2)
    )
    raw.send(burst)
    assert raw.goaway() == ENHANCE_YOUR_CALM
    raw.close()
    assert_healthy(lean)


def test_continuation_flood_is_cut_short(lean: ServerProcess) -> None:
    raw = Raw(lean.grpc)
    raw.send(frame(HEADERS, 0, 1, raw.encoder.encode([(":method", "POST"), (":path", PATH)])))
    sent = 0
    while sent < 10000 and raw.send(frame(CONTINUATION, 0, 1, b"\x00\x01a\x7f\x80" + b"b" * 995)):
        sent += 1
    assert raw.goaway() == ENHANCE_YOUR_CALM
    raw.close()
    assert_healthy(lean)


def test_hpack_bomb_is_refused(lean: ServerProcess) -> None:
    raw = Raw(lean.grpc)
    # one 4000-byte header added to the dynamic table, then referenced 200 times: 800 kB decoded from ~4 kB
    insert = b"\x40\x06x-bomb" + b"\x7f\x81\x1e" + b"z" * 4000  # literal with incremental indexing, len 4000
    block = raw.encoder.encode([(":method", "POST"), (":path", PATH)]) + insert + b"\xbe" * 200
    raw.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    assert raw.goaway() == COMPRESSION_ERROR
    raw.close()
    assert_healthy(lean)


@pytest.mark.parametrize("kind", [SETTINGS, PING])
def test_control_frame_floods_are_answered_with_goaway(lean: ServerProcess, kind: int) -> None:
    raw = Raw(lean.grpc)
    one = frame(SETTINGS, 0, 0) if kind == SETTINGS else frame(PING, 0, 0, b"12345678")
    raw.send(one * 5000)  # never reading the ACKs
    assert raw.goaway() == ENHANCE_YOUR_CALM
    raw.close()
    assert_healthy(lean)


def test_the_server_advertises_a_max_frame_size_of_4_mib(lean: ServerProcess) -> None:
    """As Triton's gRPC server does: a client sends a large request in a few frames, not one per 16 KiB."""
    raw = Raw(lean.grpc)
    (settings,) = [p for kind, flags, _, p in raw.frames(5.0, until=SETTINGS) if kind == SETTINGS and not flags]
    values = {int.from_bytes(settings[i : i + 2], "big"): int.from_bytes(settings[i + 2 : i + 6], "big")
              for i in range(0, len(settings), 6)}  # fmt: skip
    assert values[0x5] == 4 * 1024 * 1024
    raw.close()


@pytest.mark.parametrize(
    "kind,size,code",
    [
        (DATA, 4 * 1024 * 1024 + 1, FRAME_SIZE_ERROR),  # over the SETTINGS_MAX_FRAME_SIZE advertised
        (DATA, (1 << 24) - 1, FRAME_SIZE_ERROR),
        (SETTINGS, 16385, FRAME_SIZE_ERROR),  # only DATA frames may be larger than 16 KiB
        (PING, 1 << 20, FRAME_SIZE_ERROR),
        (0x21, 20_000, FRAME_SIZE_ERROR),  # an unknown kind
        (HEADERS, 16385, ENHANCE_YOUR_CALM),  # a header block over the 16 KiB it may be
        (CONTINUATION, 1 << 20, ENHANCE_YOUR_CALM),
    ],
)
def test_oversized_frame_is_refused_before_its_payload_is_read(
    lean: ServerProcess, kind: int, size: int, code: int
) -> None:
    """The frame's header alone is enough: the server answers GOAWAY without waiting for (or holding) a payload it
    would not take."""
    raw = Raw(lean.grpc)
    head = raw.headers(1) if kind != CONTINUATION else frame(HEADERS, 0, 1, raw.encoder.encode([(":method", "POST")]))
    raw.send(head + size.to_bytes(3, "big") + bytes((kind, 0)) + (1).to_bytes(4, "big") + b"x" * 100)
    assert raw.goaway() == code
    raw.close()
    assert_healthy(lean)


def test_zero_window_holds_only_its_own_stream(lean: ServerProcess) -> None:
    raw = Raw(lean.grpc, settings=(4).to_bytes(2, "big") + (0).to_bytes(4, "big"))  # INITIAL_WINDOW_SIZE 0
    raw.send(raw.headers(1) + frame(DATA, END_STREAM, 1, add_sub_message()))
    seen = raw.frames(1.0)
    assert not any(kind == DATA for kind, _, _, _ in seen)  # the reply waits for the window
    assert_healthy(lean)  # other clients are served meanwhile
    raw.send(frame(WINDOW_UPDATE, 0, 1, (1 << 20).to_bytes(4, "big")))
    seen = raw.frames(10.0, until=HEADERS) if not any(k == HEADERS for k, _, _, _ in seen) else seen
    seen += raw.frames(10.0, until=HEADERS)
    trailers = [p for kind, flags, _, p in seen if kind == HEADERS and flags & END_STREAM]
    assert trailers and dict(hpack.Decoder().decode(trailers[-1]))["grpc-status"] == "0"
    raw.close()
    assert_healthy(lean)


def test_streams_beyond_the_limit_are_refused(small: ServerProcess) -> None:
    raw = Raw(small.grpc, settings=(4).to_bytes(2, "big") + (0).to_bytes(4, "big"))  # replies cannot drain
    message = add_sub_message()
    raw.send(b"".join(raw.headers(s) + frame(DATA, END_STREAM, s, message) for s in (1, 3, 5, 7, 9, 11)))
    refused = [s for kind, _, s, p in raw.frames(3.0) if kind == RST_STREAM and p == REFUSED_STREAM.to_bytes(4, "big")]
    assert refused == [9, 11]
    raw.close()
    assert_healthy(small)


def test_message_over_the_size_limit(small: ServerProcess) -> None:
    with grpcclient.InferenceServerClient(small.grpc) as client:
        tensor = grpcclient.InferInput("INPUT0", [8192], "FP32")
        tensor.set_data_from_numpy(np.zeros(8192, dtype=np.float32))
        with pytest.raises(InferenceServerException) as error:
            client.infer("identity", [tensor])
        assert "RESOURCE_EXHAUSTED" in str(error.value.status())
    assert_healthy(small)


MIB = 1 << 20
#: six 0.9 MiB requests fit, a seventh does not; above the 4 MiB a stream's window lets a client send at once
HELD_ARGS = ("--grpc-server=lean", f"--grpc-max-message-size={MIB}", f"--grpc-max-inflight-request-bytes={6 * MIB}")


def _identity_message(size: int) -> bytes:
    request = service_pb2.ModelInferRequest(model_name="identity")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, size // 4])
    request.raw_input_contents.append(bytes(size))
    body = request.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


def _reading(address: str) -> Raw:
    """A raw connection whose windows take whole answers (1 GiB for the connection and each stream)."""
    raw = Raw(address, settings=(4).to_bytes(2, "big") + (1 << 30).to_bytes(4, "big"))
    raw.send(frame(WINDOW_UPDATE, 0, 0, ((1 << 30) - 65535).to_bytes(4, "big")))
    return raw


def _ended(raw: Raw, streams: tuple[int, ...], seconds: float = 10.0) -> list[tuple[int, int, int, bytes]]:
    """The HEADERS frames that end `streams` (their trailers), read until all came or `seconds` passed."""
    out: list[tuple[int, int, int, bytes]] = []
    deadline = time.monotonic() + seconds
    while {s for _, _, s, _ in out} != set(streams) and time.monotonic() < deadline:
        out += [f for f in raw.frames(0.2) if f[0] == HEADERS and f[1] & END_STREAM]
    return out


def _data_frames(stream: int, data: bytes, end: bool) -> bytes:
    parts = [data[at : at + 16384] for at in range(0, len(data), 16384)]
    last = len(parts) - 1
    return b"".join(frame(DATA, END_STREAM if end and i == last else 0, stream, p) for i, p in enumerate(parts))


def test_request_bytes_held_at_once_are_bounded_for_all_connections() -> None:
    """Unary requests that never end (their windows reopen as they arrive) cannot make the server hold more than
    --grpc-max-inflight-request-bytes, whatever the number of streams or connections: the call whose bytes do
    not fit is answered UNAVAILABLE and reset, the others are untouched, and the bytes come back when they go."""
    server = start_seawall(*HELD_ARGS)
    try:
        part = _identity_message(900_000)[:-1]  # all but its last byte: the calls wait for the rest
        first, second = _reading(server.grpc), _reading(server.grpc)
        held = (1, 3, 5, 7, 9, 11)
        first.send(b"".join(first.headers(s) + _data_frames(s, part, False) for s in held))
        assert not [f for f in first.frames(1.0) if f[0] in (HEADERS, RST_STREAM)]  # all held, nothing refused
        second.send(second.headers(1) + _data_frames(1, part, False))  # another connection: over the limit
        answer = second.frames(10.0, until=RST_STREAM)
        blocks = [p for kind, _, s, p in answer if kind == HEADERS and s == 1]
        decoded = dict(hpack.Decoder().decode(blocks[-1]))
        assert decoded["grpc-status"] == "14"
        assert decoded["grpc-message"] == (
            f"the server holds too many request bytes at once (limit {6 * MIB} bytes); retry later"
        )
        assert (RST_STREAM, 1, (0).to_bytes(4, "big")) in [(k, s, p) for k, _, s, p in answer]
        # the held calls are untouched: their last bytes complete them
        first.send(b"".join(frame(DATA, END_STREAM, s, b"\x00") for s in held))
        done = _ended(first, held)
        assert sorted(s for _, _, s, _ in done) == list(held)
        assert {dict(hpack.Decoder().decode(block))["grpc-status"] for *_, block in done} == {"0"}
        # the refused call's connection goes on: a call on it is served once there is room
        second.send(second.headers(3) + frame(DATA, END_STREAM, 3, add_sub_message()))
        served = _ended(second, (3,))
        assert [dict(hpack.Decoder().decode(block))["grpc-status"] for *_, block in served] == ["0"]
        first.close()
        second.close()
        # answered or gone, the bytes are given back: six more fit again, over one connection
        again = _reading(server.grpc)
        whole = _identity_message(900_000)
        again.send(b"".join(again.headers(s) + _data_frames(s, whole, True) for s in held))
        assert sorted(s for _, _, s, _ in _ended(again, held)) == list(held)
        again.close()
        assert_healthy(server)
    finally:
        server.stop()


def _pattern_request(size: int, seed: int) -> tuple[bytes, bytes]:
    """A serialized identity ModelInferRequest of `size` bytes of a pattern (different per `seed`), and those bytes."""
    content = ((np.arange(size // 4, dtype=np.uint64) + seed) * 2654435761 % (1 << 32)).astype(np.uint32).tobytes()
    request = service_pb2.ModelInferRequest(model_name="identity", id=str(seed))
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, size // 4])
    request.raw_input_contents.append(content)
    return request.SerializeToString(), content


def _pattern_message(size: int) -> tuple[bytes, bytes]:
    """A gRPC message (prefix included) of an identity request of `size` bytes of a pattern, and those bytes."""
    body, content = _pattern_request(size, 0)
    return b"\x00" + len(body).to_bytes(4, "big") + body, content


def _in_pieces(stream: int, data: bytes, sizes: tuple[int, ...]) -> bytes:
    """`data` as DATA frames of the given sizes in turn (the last one ends the stream)."""
    frames, at, turn = [], 0, 0
    while at < len(data):
        size = sizes[turn % len(sizes)]
        frames.append(frame(DATA, END_STREAM if at + size >= len(data) else 0, stream, data[at : at + size]))
        at, turn = at + size, turn + 1
    return b"".join(frames)


def _outputs(answer: list[tuple[int, int, int, bytes]], stream: int) -> bytes:
    """The raw output of the ModelInferResponse that `answer`'s DATA frames carry on `stream`."""
    data = b"".join(p for kind, _, s, p in answer if kind == DATA and s == stream)
    response = service_pb2.ModelInferResponse.FromString(data[5 : 5 + int.from_bytes(data[1:5], "big")])
    return bytes(response.raw_output_contents[0])


# first DATA frames: the whole prefix and some bytes (the message's buffer is set aside at once), only part of
# the prefix (it grows frame by frame), exactly the prefix; then frames of sizes that cut the reads anywhere
@pytest.mark.parametrize(
    "sizes", [(16384,), (3, 16384), (5, 1, 7000, 16384), (4100, 9, 12345), (250_000,), (70_000, 9, 100_000)]
)
def test_a_large_unary_message_in_frames_of_any_size_is_served_whole(
    lean: ServerProcess, sizes: tuple[int, ...]
) -> None:
    message, content = _pattern_message(200_000)
    raw = _reading(lean.grpc)
    raw.send(raw.headers(1) + _in_pieces(1, message, sizes) + raw.headers(3) + _in_pieces(3, message, sizes[::-1]))
    answer: list[tuple[int, int, int, bytes]] = []
    deadline = time.monotonic() + 10.0
    while sum(1 for k, f, _, _ in answer if k == HEADERS and f & END_STREAM) < 2 and time.monotonic() < deadline:
        answer += raw.frames(0.2)
    decoder, status = hpack.Decoder(), {}  # one decoder per connection, blocks in order
    for kind, flags, stream, payload in answer:
        if kind == HEADERS:
            fields = dict(decoder.decode(payload))
            if flags & END_STREAM:
                status[stream] = fields["grpc-status"]
    assert status == {1: "0", 3: "0"}
    assert _outputs(answer, 1) == content and _outputs(answer, 3) == content
    raw.close()
    assert_healthy(lean)


@pytest.mark.parametrize("extra", ["second message", "short"])
def test_a_large_unary_call_with_more_or_fewer_bytes_than_one_message_is_refused(
    lean: ServerProcess, extra: str
) -> None:
    """A unary call's message buffer is set aside at its announced size: a second message after it, or an end
    before all its bytes came, gets what Triton answers any such call (INTERNAL), and the server goes on."""
    message, _ = _pattern_message(100_000)
    body = message + message[:10] if extra == "second message" else message[:-1]
    raw = _reading(lean.grpc)
    raw.send(raw.headers(1) + _in_pieces(1, body, (16384,)))
    ends = _ended(raw, (1,))
    assert [dict(hpack.Decoder().decode(p)) for *_, p in ends] == [
        {":status": "200", "content-type": "application/grpc", "grpc-status": "13",
         "grpc-message": "expected exactly one request message"}
    ]  # fmt: skip
    raw.close()
    assert_healthy(lean)


@pytest.mark.parametrize(
    "sizes", [(16384,), (16000, 3, 16384), (16384, 7, 9, 12345), (300_000,), (70_000, 3, 200_000), (100_005,)]
)
def test_large_stream_messages_cut_anywhere_are_each_served_whole(lean: ServerProcess, sizes: tuple[int, ...]) -> None:
    """ModelStreamInfer messages of 64 KiB and more are received into buffers of their announced size: DATA
    frames that end one message and begin the next, or split the next one's prefix, give each message whole and
    in order, interleaved with a small one."""
    bodies = [_pattern_request(size, seed) for seed, size in enumerate((100_000, 70_000, 240, 65_536 + 8))]
    data = b"".join(b"\x00" + len(body).to_bytes(4, "big") + body for body, _ in bodies)
    raw = _reading(lean.grpc)
    path = "/inference.GRPCInferenceService/ModelStreamInfer"
    block = raw.encoder.encode(
        [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
         ("content-type", "application/grpc"), ("te", "trailers")]
    )  # fmt: skip
    raw.send(frame(HEADERS, END_HEADERS, 1, block) + _in_pieces(1, data, sizes))
    answer: list[tuple[int, int, int, bytes]] = []
    deadline = time.monotonic() + 10.0
    while not any(k == HEADERS and f & END_STREAM for k, f, _, _ in answer) and time.monotonic() < deadline:
        answer += raw.frames(0.2)
    stream = b"".join(p for kind, _, s, p in answer if kind == DATA and s == 1)
    replies = []
    while stream:
        size = int.from_bytes(stream[1:5], "big")
        replies.append(service_pb2.ModelStreamInferResponse.FromString(stream[5 : 5 + size]))
        stream = stream[5 + size :]
    assert [r.error_message for r in replies] == [""] * 4
    got = {r.infer_response.id: bytes(r.infer_response.raw_output_contents[0]) for r in replies}
    assert got == {str(seed): content for seed, (_, content) in enumerate(bodies)}
    raw.close()
    assert_healthy(lean)


def test_a_stream_gives_back_each_message_as_it_is_taken() -> None:
    """ModelStreamInfer requests that together exceed the limit are served: each message is given back when the
    stream's handler takes it."""
    server = start_seawall(*HELD_ARGS)
    try:
        results: list[object] = []
        with grpcclient.InferenceServerClient(server.grpc) as client:
            client.start_stream(callback=lambda result, error: results.append(error or result))
            for n in range(24):  # 24 x 0.5 MiB through one stream, 6 MiB held at most
                tensor = grpcclient.InferInput("INPUT0", [1, MIB // 8], "FP32")
                tensor.set_data_from_numpy(np.full((1, MIB // 8), n, dtype=np.float32))
                client.async_stream_infer("identity", [tensor], request_id=str(n))
            client.stop_stream()
        assert not [r for r in results if isinstance(r, InferenceServerException)], results
        assert sorted(int(r.get_response().id) for r in results) == list(range(24))
    finally:
        server.stop()


def test_compressed_request_is_unimplemented(lean: ServerProcess) -> None:
    raw = Raw(lean.grpc)
    message = add_sub_message()
    compressed = b"\x01" + message[1:]  # the compressed flag, with no grpc-encoding the server accepts
    raw.send(raw.headers(1, extra=[("grpc-encoding", "gzip")]) + frame(DATA, END_STREAM, 1, compressed))
    blocks = [p for kind, flags, _, p in raw.frames(10.0, until=HEADERS) if kind == HEADERS]
    decoded = dict(hpack.Decoder().decode(blocks[-1]))
    assert decoded["grpc-status"] == "12" and decoded["grpc-message"] == "compressed messages are not supported"
    raw.close()
    assert_healthy(lean)


def test_unknown_stack_is_refused() -> None:
    result = run_seawall("--model-repository=examples/models", "--grpc-server=nghttp2")
    assert result.returncode != 0
    assert 'Bad option: "--grpc-server".\ninvalid argument for --grpc-server' in result.stderr + result.stdout


def test_aio_stack_is_still_selectable() -> None:
    server = start_seawall("--grpc-server=aio")
    try:
        assert_healthy(server)

        async def run() -> None:
            async with aioclient.InferenceServerClient(server.grpc) as client:
                with pytest.raises(InferenceServerException, match="unknown"):
                    await client.get_model_metadata("no_such_model")

        asyncio.run(run())
        assert_healthy(server)
    finally:
        server.stop()
