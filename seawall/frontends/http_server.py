"""A lean HTTP/1.1 server: an asyncio Protocol over httptools that enforces `Limits` while it reads.

Imports httptools, `errors`-free by design: it knows only bytes, limits, a handler callable and an optional
SSLContext (built by `security.tls`). Used by the HTTP, metrics, SageMaker and Vertex AI listeners.
Requests on one connection are answered in order.
"""

from __future__ import annotations

import asyncio
import collections
import http
import logging
import socket
import ssl
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import httptools
import orjson

from seawall.options import Limits

logger = logging.getLogger(__name__)

#: Pipelined requests buffered per connection before the server stops reading from it.
_MAX_QUEUED = 8
#: Seconds a refused connection keeps draining the client's body, so the reply is not lost to a TCP reset.
_LINGER_SECS = 1.0
#: Below this many decompressed bytes the ratio limit is not applied (tiny bodies compress absurdly well).
_RATIO_FLOOR = 1 << 20
#: Seconds a client has to finish the TLS handshake.
_HANDSHAKE_SECS = 10.0
_REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}


@dataclass(slots=True)
class HttpRequest:
    """A complete request: `path` is the raw path without the query; header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    caller: str = ""  # "peer=<address>[ subject=<client certificate subject>]", for the audit log


def describe_caller(peer: object, certificate: object) -> str:
    """Who is calling, for the audit log: the peer address and, with mutual TLS, the certificate subject."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        text = f"peer={peer[0]}:{peer[1]}"
    else:
        text = f"peer={peer}" if peer else "peer=unknown"
    if isinstance(certificate, dict):
        subject = ",".join(f"{k}={v}" for rdn in certificate.get("subject", ()) for k, v in rdn)
        if subject:
            text += f" subject={subject}"
    return text


@dataclass(slots=True)
class HttpResponse:
    """A reply; `body` may be several buffers that are written without joining them."""

    status: int
    body: Sequence[bytes | memoryview] = ()
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


def error_response(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    """The `{"error": message}` reply every failure uses."""
    return HttpResponse(status, (orjson.dumps({"error": message}),), "application/json", headers or [])


def render_head(response: HttpResponse, length: int, keep_alive: bool) -> bytes:
    """Status line and headers of `response` for a body of `length` bytes."""
    reason = _REASONS.get(response.status, b"Unknown")
    lines = [b"HTTP/1.1 %d %s\r\n" % (response.status, reason)]
    if response.content_type:
        lines.append(b"Content-Type: %s\r\n" % response.content_type.encode("latin-1"))
    lines.append(b"Content-Length: %d\r\n" % length)
    for name, value in response.headers:
        lines.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
    if not keep_alive:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


class _Refusal(Exception):
    """A request refused while it is being read; the connection answers and then closes."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status)
        self.response = response


class _BodyReader:
    """Collects one request body within the limits, decompressing gzip/deflate incrementally."""

    def __init__(self, limits: Limits, encoding: str) -> None:
        self._limits = limits
        self._parts: list[bytes] = []
        self._size = 0  # decoded bytes kept
        self._wire = 0  # bytes received
        self._chunks = 0
        self._inflater = None
        if encoding in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(wbits=31)
        elif encoding == "deflate":
            self._inflater = zlib.decompressobj(wbits=15)

    def chunk(self) -> None:
        self._chunks += 1
        if self._chunks > self._limits.max_chunks:
            raise _Refusal(error_response(413, f"request body has more than {self._limits.max_chunks} chunks"))

    def feed(self, data: bytes) -> None:
        self._wire += len(data)
        if self._inflater is None:
            self._keep(data)
            return
        budget = self._limits.max_request_bytes - self._size
        try:
            out = self._inflater.decompress(data, budget + 1)
        except zlib.error:
            raise _Refusal(error_response(400, "failed to decompress the request body")) from None
        self._keep(out)
        ratio_cap = self._limits.max_decompression_ratio * self._wire
        if self._size > _RATIO_FLOOR and self._size > ratio_cap:
            raise _Refusal(error_response(413, "decompressed request body exceeds the allowed compression ratio"))

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limits.max_request_bytes:
            raise _Refusal(
                error_response(413, f"request body exceeds the limit of {self._limits.max_request_bytes} bytes")
            )
        if data:
            self._parts.append(data)

    def body(self) -> bytes:
        if self._inflater is not None and not self._inflater.eof and self._wire:
            raise _Refusal(error_response(400, "failed to decompress the request body: truncated data"))
        if len(self._parts) == 1:
            return self._parts[0]
        return b"".join(self._parts)


class HttpProtocol(asyncio.Protocol):
    """One connection: parse with httptools, queue complete requests, answer them one at a time in order."""

    def __init__(self, handler: Handler, limits: Limits, connections: set[HttpProtocol]) -> None:
        self._handler = handler
        self._limits = limits
        self._connections = connections  # owned by HttpServer; this protocol adds/removes itself
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()  # kept: get_running_loop() costs a getpid() call (3.11)
        self._caller = ""  # set once the connection is made
        self._queue: collections.deque[tuple[HttpRequest, bool]] = collections.deque()
        self._task: asyncio.Task[None] | None = None  # the request being answered; cancelled on close
        self._write_paused = False
        self._closing = False
        self._queued_bytes = 0  # body bytes held by queued requests
        self._in_head = True  # between requests or inside a request's head
        self._head_bytes = 0  # bytes received while in the head; httptools buffers them unbounded
        self._reset_message()

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: _BodyReader | None = None

    # asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._connections.add(self)
        self._caller = describe_caller(transport.get_extra_info("peername"), transport.get_extra_info("peercert"))
        sock = self._transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._connections.discard(self)
        self._queue.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()
        self._next()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # draining a refused request's body
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
            if self._in_head and self._head_bytes > self._limits.max_header_bytes + 8192:
                raise _Refusal(error_response(431, f"request headers exceed {self._limits.max_header_bytes} bytes"))
        except _Refusal as refusal:
            self._refuse(refusal.response)
        except httptools.HttpParserUpgrade:
            self._closing = True  # answer what was queued, then close; upgrades are not supported
        except httptools.HttpParserError as exc:
            # httptools wraps exceptions raised in callbacks; the refusal is the context
            cause = exc.__context__
            if isinstance(cause, _Refusal):
                self._refuse(cause.response)
            else:
                if cause is not None:
                    logger.error("error while reading a request: %r", cause)
                self._refuse(error_response(400, "malformed HTTP request"))

    # httptools callbacks --------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        # repeated headers are joined as RFC 9110 allows for list-valued fields
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def _count_header_bytes(self, count: int) -> None:
        self._header_bytes += count
        if self._header_bytes > self._limits.max_header_bytes:
            raise _Refusal(error_response(431, f"request headers exceed {self._limits.max_header_bytes} bytes"))

    def on_headers_complete(self) -> None:
        self._in_head = False
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._limits.max_request_bytes:
            raise _Refusal(
                error_response(413, f"request body exceeds the limit of {self._limits.max_request_bytes} bytes")
            )
        encoding = self._headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise _Refusal(error_response(501, "Unsupported compression type", [("Accept-Encoding", "gzip, deflate")]))
        self._body = _BodyReader(self._limits, encoding)
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_chunk_header(self) -> None:
        if self._body is not None:
            self._body.chunk()

    def on_body(self, data: bytes) -> None:
        if self._body is not None:
            self._body.feed(data)

    def on_message_complete(self) -> None:
        body = self._body.body() if self._body is not None else b""
        path = self._url.split(b"?", 1)[0].split(b"#", 1)[0]
        try:
            text = path.decode()
        except UnicodeDecodeError:
            text = "/\x00"  # routes nowhere: 404
        method = self._parser.get_method().decode("latin-1")
        request = HttpRequest(method, text, self._headers, body, self._caller)
        self._in_head = True
        self._head_bytes = 0
        self._queue.append((request, self._parser.should_keep_alive()))
        self._queued_bytes += len(body)
        if self._is_backlogged() and self._transport is not None:
            self._transport.pause_reading()
        self._next()

    # answering -------------------------------------------------------------------------------------
    def _next(self) -> None:
        if self._task is not None or self._write_paused or not self._queue:
            if self._closing and self._task is None and not self._queue and self._transport is not None:
                self._transport.close()
            return
        request, keep_alive = self._queue.popleft()
        self._queued_bytes -= len(request.body)
        self._task = self._loop.create_task(self._answer(request, keep_alive))

    def _is_backlogged(self) -> bool:
        return len(self._queue) >= _MAX_QUEUED or self._queued_bytes > self._limits.max_request_bytes

    async def _answer(self, request: HttpRequest, keep_alive: bool) -> None:
        try:
            response = await self._handler(request)
        except Exception:
            logger.exception("unhandled error answering %s %r", request.method, request.path)
            response = error_response(500, "internal error")
        self._task = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._write(response, keep_alive, with_body=request.method != "HEAD")
        if not keep_alive:
            self._closing = True
            self._queue.clear()
            transport.close()
            return
        if not self._is_backlogged() and not self._write_paused and not self._closing:
            transport.resume_reading()
        self._next()

    def _write(self, response: HttpResponse, keep_alive: bool, with_body: bool = True) -> None:
        if self._transport is None:
            return
        length = sum(len(part) for part in response.body)
        head = render_head(response, length, keep_alive)
        if not with_body:  # HEAD: the length is announced, the body is not sent
            self._transport.write(head)
        elif length < 4096:
            self._transport.write(head + b"".join(response.body))
        else:
            self._transport.writelines([head, *response.body])

    def _refuse(self, response: HttpResponse) -> None:
        """Answer a request that cannot be read, then stop reading; close once the client had time to read."""
        transport = self._transport
        self._closing = True
        self._queue.clear()
        if transport is None or transport.is_closing():
            return
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._write(response, keep_alive=False)
        if transport.can_write_eof():
            transport.write_eof()
            # keep discarding the body so the kernel does not reset the connection before the client reads
            asyncio.get_running_loop().call_later(_LINGER_SECS, transport.close)
        else:
            transport.close()

    def close(self) -> None:
        """Close once the current request is answered (used on shutdown)."""
        self._closing = True
        self._queue.clear()
        if self._task is None and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def is_busy(self) -> bool:
        return self._task is not None


def parse_address(address: str) -> str:
    """`[::1]` → `::1`; a plain host is returned as is."""
    if address.startswith("[") and address.endswith("]"):
        return address[1:-1]
    return address


class HttpServer:
    """Listens on one address and serves `handler`; `start()` returns the bound (host, port).

    With `ssl_context` every connection is TLS (the context decides the versions and client certificates).
    """

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        address: str,
        port: int,
        reuse_port: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._handler = handler
        self._ssl = ssl_context
        self._limits = limits
        self._address = parse_address(address)
        self._port = port
        self._reuse_port = reuse_port
        self._server: asyncio.Server | None = None
        self._connections: set[HttpProtocol] = set()  # open connections; touched on the event loop only

    async def start(self) -> tuple[str, int]:
        """Bind and listen.

        Raises:
            OSError: the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpProtocol(self._handler, self._limits, self._connections),
            host=self._address,
            port=self._port,
            reuse_port=self._reuse_port or None,
            backlog=1024,
            ssl=self._ssl,
            ssl_handshake_timeout=_HANDSHAKE_SECS if self._ssl is not None else None,
        )
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening, let in-flight requests finish (up to `grace` seconds), close every connection."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for connection in list(self._connections):
            connection.close()
        deadline = asyncio.get_running_loop().time() + grace
        while any(c.is_busy() for c in self._connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self._connections):
            connection.abort()
        await server.wait_closed()
