"""One HTTP/1.1 connection: an asyncio Protocol over httptools whose reading side (`reader.RequestReader`, mixed
in) enforces `Limits` and refuses requests on their head; this side is the state machine: it admits the
connection, answers pipelined requests in order, writes refusals and keeps the deadlines its listener checks.
Streamed replies are written by `streamed.StreamedReplies`, mixed in too.

Imports httptools, `options` and the listener's own modules (`reader`, `streamed`, `message`, `body`,
`admission`); `server` is the only user.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import socket
from dataclasses import dataclass, field
from typing import cast

import httptools

from seawall.frontends.http.admission import ConnectionTable, peer_key
from seawall.frontends.http.body import RETRY_AFTER_SECS, BodyBudget
from seawall.frontends.http.message import (
    Handler,
    HeadCheck,
    HttpRequest,
    HttpResponse,
    HttpStream,
    describe_caller,
    error_response,
    render_head,
)
from seawall.frontends.http.reader import RequestReader
from seawall.frontends.http.streamed import StreamedReplies
from seawall.options import Limits

logger = logging.getLogger(__name__)

#: Pipelined requests buffered per connection before the server stops reading from it.
_MAX_QUEUED = 8
#: A refused connection keeps discarding the client's input, so the reply is not lost to a TCP reset, until the
#: client has sent nothing for this many seconds...
_LINGER_SECS = 1.0
#: ... or for at most this long.
_LINGER_MAX_SECS = 10.0


class _Phase(enum.Enum):
    """What a connection waits for, which decides the deadline that applies (checked by the listener's sweep)."""

    IDLE = "idle"  # a keep-alive connection between requests: --http-idle-timeout-secs
    HEAD = "head"  # a request's head: --http-header-timeout-secs
    BODY = "body"  # a request's body: --http-min-body-rate in each --http-body-timeout-secs window
    BUSY = "busy"  # requests are being answered: the handler's own time, no deadline
    LINGER = "linger"  # refused and answered: input is discarded until the client stops sending


@dataclass(slots=True)
class Listener:
    """What the connections of one listener share; owned by HttpServer, touched on the event loop only."""

    handler: Handler
    head_check: HeadCheck | None
    limits: Limits
    budget: BodyBudget
    table: ConnectionTable
    connections: set[HttpProtocol] = field(default_factory=set)


class HttpProtocol(RequestReader, StreamedReplies, asyncio.Protocol):
    """One connection: parse with httptools, queue complete requests, answer them one at a time in order.

    A request whose head is refused (route, restriction, length, budget) is answered at once and its body is never
    stored; the connection then closes. Losing the connection drops every buffer it holds.
    """

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._limits = listener.limits
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()  # kept: get_running_loop() costs a getpid() call (3.11)
        self._caller = ""  # set once the connection is made
        self._peer = ""  # the ConnectionTable key; "" while not admitted
        self._queue: collections.deque[tuple[HttpRequest, bool, int]] = collections.deque()  # request, keep-alive,
        # budget bytes it holds
        self._task: asyncio.Task[None] | None = None  # the request being answered; cancelled on close
        self._task_charge = 0  # budget bytes held by the request being answered
        self._final: HttpResponse | None = None  # a refusal written once the queued requests are answered
        self._linger = True  # after `_final`, discard the client's input for a while before closing
        self._linger_since = 0.0
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None  # awaited by a streamed reply while writing is paused
        self._write_paused_since = 0.0  # start of the current window while writing is paused
        self._write_mark = 0  # bytes waiting to be sent at the start of that window
        self._reading_paused = False  # paused by the backlog (not by a slow reader)
        self._closing = False
        self._queued_bytes = 0  # body bytes held by queued requests
        self._in_head = True  # between requests or inside a request's head
        self._in_message = False  # between on_message_begin and on_message_complete
        self._head_bytes = 0  # bytes received while in the head; httptools buffers them unbounded
        self._quiet_bytes = 0  # bytes received in the body section without a parser event (trailers, extensions)
        self._received = 0  # bytes received on this connection
        self._phase = _Phase.HEAD
        self._phase_since = self._loop.time()
        self._window_base = 0  # `_received` when the current body window started
        self._reset_message()

    def _enter(self, phase: _Phase) -> None:
        self._phase = phase
        self._phase_since = self._loop.time()
        self._window_base = self._received

    # asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        peer = transport.get_extra_info("peername")
        key = peer_key(peer)
        refused = self._listener.table.admit(key)
        if refused:  # cheap: no parsing, no state; the client may read why
            self._closing = True
            self._parser = None
            self._write(error_response(503, refused, [("Retry-After", str(RETRY_AFTER_SECS))]), keep_alive=False)
            self._transport.close()
            return
        self._peer = key
        self._listener.connections.add(self)
        self._caller = describe_caller(peer, transport.get_extra_info("peercert"))
        sock = self._transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._enter(_Phase.HEAD)

    def connection_lost(self, exc: Exception | None) -> None:
        # drop everything this connection holds now: the parser and this protocol reference each other, and
        # waiting for the cycle collector kept aborted uploads in memory
        self._closing = True
        self._parser = None
        if self._peer:
            self._listener.table.release(self._peer)
            self._peer = ""
        self._listener.connections.discard(self)
        budget = self._listener.budget
        for _, _, charge in self._queue:
            budget.release(charge)
        self._queue.clear()
        self._queued_bytes = 0
        self._release_message()
        self._release_task()
        self._final = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None
        self._transport = None

    def _release_message(self) -> None:
        """Drop the body being read and give its budget back."""
        if self._body is not None:
            self._listener.budget.release(self._body.charged)
        self._reset_message()

    def _release_task(self) -> None:
        self._listener.budget.release(self._task_charge)
        self._task_charge = 0

    def pause_writing(self) -> None:
        self._write_paused = True
        self._write_paused_since = self._loop.time()
        if self._transport is not None:
            self._write_mark = self._transport.get_write_buffer_size()
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._transport is not None and not self._reading_paused:
            self._transport.resume_reading()
        self._next()

    # what the reader hands over ---------------------------------------------------------------------------
    def _head_started(self) -> None:
        if self._phase is not _Phase.HEAD:  # a new connection's header time runs from the connection
            self._enter(_Phase.HEAD)

    def _body_started(self) -> None:
        self._enter(_Phase.BODY)

    def _request_read(self, request: HttpRequest, keep_alive: bool, charge: int) -> None:
        self._enter(_Phase.BUSY)
        self._queue.append((request, keep_alive, charge))
        self._queued_bytes += len(request.body)
        if self._is_backlogged() and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()
        self._next()

    # answering -------------------------------------------------------------------------------------
    def _next(self) -> None:
        if self._task is not None or self._write_paused or not self._queue:
            if self._task is None and not self._queue:
                if self._closing:
                    self._finish()
                elif not self._in_message and self._phase is _Phase.BUSY:
                    self._enter(_Phase.IDLE)
            return
        request, keep_alive, charge = self._queue.popleft()
        self._queued_bytes -= len(request.body)
        self._task_charge = charge
        self._task = self._loop.create_task(self._answer(request, keep_alive))

    def _is_backlogged(self) -> bool:
        return len(self._queue) >= _MAX_QUEUED or self._queued_bytes > self._limits.max_request_bytes

    async def _answer(self, request: HttpRequest, keep_alive: bool) -> None:
        try:
            response = await self._listener.handler(request)
        except Exception:
            logger.exception("unhandled error answering %s %r", request.method, request.path)
            response = error_response(500, "internal error")
        finally:
            self._release_task()
        with_body = request.method != "HEAD"
        request.body = b""  # the body is not kept while the reply is written (a coroutine keeps its arguments)
        if response.__class__ is HttpStream:
            await self._answer_stream(response, keep_alive)
            return
        self._task = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        # a pending refusal follows on this connection, so a kept-alive reply does not announce the close
        self._write(response, keep_alive and not (self._closing and self._final is None), with_body)
        self._after_reply(keep_alive)

    def _after_reply(self, keep_alive: bool) -> None:
        """A reply is written: close the connection, or read again if the backlog held reading and answer the
        next request."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if not keep_alive:
            self._closing = True
            self._final = None
            self._drop_queue()
            transport.close()
            return
        if self._reading_paused and not self._is_backlogged():
            self._reading_paused = False
            self._enter(self._phase)  # the client was not reading because we were not
            if not self._write_paused:
                transport.resume_reading()
        self._next()

    def _drop_queue(self) -> None:
        for _, _, charge in self._queue:
            self._listener.budget.release(charge)
        self._queue.clear()
        self._queued_bytes = 0

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

    def _refuse(self, response: HttpResponse, linger: bool = True) -> None:
        """Answer a request that cannot be read once the requests before it are answered, then close. Nothing more
        is parsed or stored; with `linger`, the client's remaining input is discarded for a while so the reply is
        not lost to a TCP reset."""
        if self._closing:
            return
        self._closing = True
        self._release_message()
        self._final = response
        self._linger = linger
        transport = self._transport
        if transport is not None and self._reading_paused and not transport.is_closing():
            self._reading_paused = False
            transport.resume_reading()  # keep draining the client's input
        self._next()

    def _finish(self) -> None:
        """Everything is answered and the connection is closing: write the refusal if any, then close."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._phase is _Phase.LINGER:
            return
        final, self._final = self._final, None
        if final is None:
            transport.close()
            return
        self._write(final, keep_alive=False)
        if self._linger and transport.can_write_eof():
            transport.write_eof()
            self._enter(_Phase.LINGER)  # the listener's sweep closes it
            self._linger_since = self._phase_since
        else:
            transport.close()

    def check_deadlines(self, now: float) -> None:
        """Close a connection whose client is too slow for the phase it is in (called by the listener's sweep)."""
        transport = self._transport
        if transport is None:
            return
        limits = self._limits
        window = limits.http_body_timeout_secs
        if self._write_paused and now - self._write_paused_since > window:
            waiting = transport.get_write_buffer_size()
            if self._write_mark - waiting < max(1, limits.http_min_body_rate * window):
                transport.abort()  # the client does not read its replies (a closing transport waits for them too)
                return
            self._write_paused_since, self._write_mark = now, waiting
        if transport.is_closing():
            return
        elapsed = now - self._phase_since
        if self._phase is _Phase.LINGER:
            if now - self._linger_since > _LINGER_MAX_SECS or (
                elapsed > _LINGER_SECS and self._received == self._window_base
            ):
                transport.close()
            elif elapsed > _LINGER_SECS:
                self._enter(_Phase.LINGER)
            return
        if self._reading_paused or self._closing:
            return
        if self._phase is _Phase.IDLE and elapsed > limits.http_idle_timeout_secs:
            transport.close()
        elif self._phase is _Phase.HEAD and elapsed > limits.http_header_timeout_secs:
            if self._in_message:
                timeout = limits.http_header_timeout_secs
                self._refuse(error_response(408, f"request headers not received within {timeout} seconds"), False)
            else:
                transport.close()  # nothing was sent: nothing to answer
        elif self._phase is _Phase.BODY and elapsed >= window:
            if self._received - self._window_base < max(1, limits.http_min_body_rate * window):
                rate = limits.http_min_body_rate
                message = f"request body not received at {rate} bytes per second within {window} seconds"
                self._refuse(error_response(408, message), False)
            else:
                self._enter(_Phase.BODY)

    def close(self) -> None:
        """Close once the current request is answered (used on shutdown)."""
        self._closing = True
        self._drop_queue()
        if self._task is None and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def is_busy(self) -> bool:
        return self._task is not None
