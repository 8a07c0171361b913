"""Streamed replies (`HttpStream`) of the HTTP listener, in process with a handler of the test's own: chunks go out
as they are produced, a client that does not read stops the producer (backpressure), a client that leaves closes
the producer, a producer that fails midway cuts the body short, and the listener keeps serving through all of it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager

from seawall.frontends.http.message import HttpRequest, HttpResponse, HttpStream
from seawall.frontends.http.server import HttpServer
from seawall.options import Limits

CHUNK = b"x" * 16384
COUNT = 4096  # 64 MiB in all


@asynccontextmanager
async def serving(chunks: Callable[[], AsyncGenerator[bytes, None]]) -> AsyncIterator[tuple[str, int]]:
    """A listener whose POST /stream streams `chunks()` and whose other paths answer 200 "ok"."""

    async def handler(request: HttpRequest) -> HttpResponse:
        if request.path == "/stream":
            return HttpStream(200, "text/event-stream; charset=utf-8", chunks())
        return HttpResponse(200, (b"ok",), "text/plain")

    server = HttpServer(handler, Limits(), "127.0.0.1", 0)
    address = await server.start()
    try:
        yield address
    finally:
        await server.stop(grace=1)


async def connect(
    address: tuple[str, int], receive_buffer: int = 0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, address)
    return await asyncio.open_connection(sock=sock, limit=receive_buffer or 2**16)


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    size = int(await asyncio.wait_for(reader.readuntil(b"\r\n"), 30), 16)
    data = await asyncio.wait_for(reader.readexactly(size + 2), 30)
    assert data.endswith(b"\r\n")
    return data[:-2]


async def still_serving(address: tuple[str, int]) -> None:
    reader, writer = await connect(address)
    writer.write(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await read_head(reader)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    writer.close()


async def test_chunks_follow_the_head_and_the_connection_is_reused() -> None:
    async def chunks() -> AsyncGenerator[bytes, None]:
        for text in (b"data: 1\n\n", b"", b"data: 2\n\n"):  # an empty buffer is skipped, not a last chunk
            yield text

    async with serving(chunks) as address:
        reader, writer = await connect(address)
        for _ in range(2):
            writer.write(b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            head = await read_head(reader)
            assert head == (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            assert [await read_chunk(reader) for _ in range(3)] == [b"data: 1\n\n", b"data: 2\n\n", b""]
        writer.write(b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(), 30)
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and rest.endswith(b"\r\n\r\nok")
        writer.close()


async def test_a_client_that_does_not_read_holds_the_producer() -> None:
    produced = 0

    async def chunks() -> AsyncGenerator[bytes, None]:
        nonlocal produced
        for _ in range(COUNT):
            produced += 1
            yield CHUNK

    async with serving(chunks) as address:
        reader, writer = await connect(address, receive_buffer=4096)
        writer.write(b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        last, steady = -1, 0
        for _ in range(400):  # until production has stopped for 20 looks in a row
            await asyncio.sleep(0.02)
            steady = steady + 1 if produced == last else 0
            last = produced
            if steady >= 20:
                break
        assert steady >= 20 and produced < COUNT // 2, produced  # held by the socket buffers, not run to the end
        await read_head(reader)
        received = 0
        while chunk := await read_chunk(reader):
            assert chunk == CHUNK
            received += 1
        assert received == produced == COUNT
        writer.close()
        await still_serving(address)


async def test_a_client_that_leaves_closes_the_producer() -> None:
    closed = asyncio.Event()
    sent = 0

    async def chunks() -> AsyncGenerator[bytes, None]:
        nonlocal sent
        try:
            while True:  # an endless stream: only the client's leaving ends it
                sent += 1
                yield b"data: %d\n\n" % sent
                await asyncio.sleep(0.001)
        finally:
            closed.set()

    async with serving(chunks) as address:
        reader, writer = await connect(address)
        writer.write(b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        await read_head(reader)
        assert await read_chunk(reader) == b"data: 1\n\n"
        writer.transport.abort()
        await asyncio.wait_for(closed.wait(), 30)
        await still_serving(address)


async def test_a_producer_that_fails_cuts_the_body_short() -> None:
    async def chunks() -> AsyncGenerator[bytes, None]:
        yield b"data: 1\n\n"
        raise RuntimeError("the producer broke")

    async with serving(chunks) as address:
        reader, writer = await connect(address)
        writer.write(b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        await read_head(reader)
        assert await read_chunk(reader) == b"data: 1\n\n"
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed without the last chunk
        writer.close()
        await still_serving(address)


async def test_an_http_1_0_client_gets_the_bare_body_then_the_close() -> None:
    async def chunks() -> AsyncGenerator[bytes, None]:
        for text in (b"data: 1\n\n", b"data: 2\n\n"):
            yield text

    async with serving(chunks) as address:
        reader, writer = await connect(address)
        writer.write(b"POST /stream HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(), 30)
        assert reply == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nConnection: close\r\n\r\n"
            b"data: 1\n\ndata: 2\n\n"
        )
        writer.close()
        await still_serving(address)
