"""Streamed replies of one HTTP/1.1 connection (`HttpStream`, for `generate_stream`'s Server-Sent Events): the
head, then each chunk once the client has drained the earlier ones, then the last chunk; the producer is closed in
every case. `connection.HttpProtocol` mixes `StreamedReplies` in and provides the hook at the end of the class.

Imports the listener's own `message` module.
"""

from __future__ import annotations

import asyncio
import logging

import httptools

from seawall.frontends.http.message import HttpResponse, HttpStream, render_head

logger = logging.getLogger("seawall.frontends.http.connection")


class StreamedReplies:
    """`_answer_stream` and `_send_chunks`, over the connection's state (set by `HttpProtocol.__init__`)."""

    # the connection's state this side reads and updates
    _transport: asyncio.Transport | None
    _parser: httptools.HttpRequestParser | None
    _loop: asyncio.AbstractEventLoop
    _closing: bool
    _final: HttpResponse | None  # a refusal written once the queued requests are answered
    _task: asyncio.Task[None] | None
    _write_paused: bool
    _drained: asyncio.Future[None] | None

    async def _answer_stream(self, response: HttpStream, keep_alive: bool) -> None:
        """Send a streamed reply chunk by chunk, waiting for the client to drain each before asking for the next,
        then go on with the next request. Losing the connection cancels this task; the generator is closed in
        every case, which stops what produces the chunks. A generator that fails midway cannot change the status
        any more: the body is cut short (no last chunk) and the connection is dropped."""
        keep_alive = keep_alive and not (self._closing and self._final is None)
        try:
            keep_alive = await self._send_chunks(response, keep_alive)
        finally:
            self._drained = None
            if response.chunks is not None:
                try:
                    await response.chunks.aclose()
                except Exception:
                    logger.exception("unhandled error while closing a streamed reply")
            self._task = None  # only now: the next request must not start while this one is being closed
        self._after_reply(keep_alive)

    async def _send_chunks(self, response: HttpStream, keep_alive: bool) -> bool:
        """Write the head, every chunk and the last chunk; False when the connection cannot be used any more.

        An HTTP/1.0 client cannot read a chunked body: it gets the bare body, ended by closing the connection. The
        version is read from the parser (the last request parsed, so the request queue costs nothing more): it is
        this request's unless a client pipelines requests of both versions on one connection."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        chunked = self._parser is not None and self._parser.get_http_version() == "1.1"
        keep_alive = keep_alive and chunked
        head = render_head(response, None, keep_alive)
        transport.write(head if chunked else head.replace(b"Transfer-Encoding: chunked\r\n", b""))
        try:
            if response.chunks is not None:
                async for chunk in response.chunks:
                    if self._transport is None:
                        return False
                    if chunk and chunked:  # an empty chunk would end the body
                        transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    elif chunk:
                        transport.write(chunk)
                    while self._write_paused and self._transport is not None:
                        self._drained = self._loop.create_future()
                        await self._drained
        except Exception:
            logger.exception("unhandled error while streaming a reply; the connection is dropped")
            transport.abort()
            return False
        if self._transport is None:
            return False
        if chunked:
            transport.write(b"0\r\n\r\n")
        return keep_alive

    # what the connection does once a reply is written (HttpProtocol implements it) ---------------------------
    def _after_reply(self, keep_alive: bool) -> None:
        raise NotImplementedError
