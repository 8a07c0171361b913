"""A lean HTTP/1.1 server: listens on one address and serves a handler through `connection`, checking the
connections' deadlines and caps.

Imports httptools (through `connection`), `errors`-free by design: it knows only bytes, limits, a handler
callable, an optional head check and an optional SSLContext (built by `security.tls`). Used by the HTTP, metrics,
SageMaker and Vertex AI listeners. Requests on one connection are answered in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from seawall.frontends.http.admission import ConnectionTable
from seawall.frontends.http.body import BodyBudget
from seawall.frontends.http.connection import HttpProtocol, Listener
from seawall.frontends.http.message import Handler as Handler
from seawall.frontends.http.message import HeadCheck as HeadCheck
from seawall.frontends.http.message import HttpRequest as HttpRequest
from seawall.frontends.http.message import HttpResponse as HttpResponse
from seawall.frontends.http.message import describe_caller as describe_caller
from seawall.frontends.http.message import error_response as error_response
from seawall.frontends.http.message import render_head as render_head
from seawall.options import Limits

#: How often a listener checks its connections' deadlines (the timeouts' resolution).
_SWEEP_SECS = 0.5
#: Seconds a client has to finish the TLS handshake.
_HANDSHAKE_SECS = 10.0


def parse_address(address: str) -> str:
    """`[::1]` → `::1`; a plain host is returned as is."""
    if address.startswith("[") and address.endswith("]"):
        return address[1:-1]
    return address


class HttpServer:
    """Listens on one address and serves `handler`; `start()` returns the bound (host, port).

    With `ssl_context` every connection is TLS (the context decides the versions and client certificates).
    `head_check` refuses requests on their head (see `HeadCheck`); `budget` is shared by the server's listeners
    (a listener without one gets its own). The timeouts and connection caps of `limits` apply per listener.
    """

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        address: str,
        port: int,
        reuse_port: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        head_check: HeadCheck | None = None,
        budget: BodyBudget | None = None,
    ) -> None:
        self._ssl = ssl_context
        self._address = parse_address(address)
        self._port = port
        self._reuse_port = reuse_port
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None  # checks deadlines; owned here, cancelled by stop()
        table = ConnectionTable(limits.http_max_connections, limits.http_max_connections_per_peer)
        budget = budget if budget is not None else BodyBudget(limits.http_max_inflight_body_bytes)
        self._listener = Listener(handler, head_check, limits, budget, table)
        self._connections = self._listener.connections  # open connections; touched on the event loop only
        self.budget = budget

    async def start(self) -> tuple[str, int]:
        """Bind and listen.

        Raises:
            OSError: the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpProtocol(self._listener),
            host=self._address,
            port=self._port,
            reuse_port=self._reuse_port or None,
            backlog=1024,
            ssl=self._ssl,
            ssl_handshake_timeout=_HANDSHAKE_SECS if self._ssl is not None else None,
        )
        sockname = self._server.sockets[0].getsockname()
        self._sweeper = loop.create_task(self._sweep())
        return str(sockname[0]), int(sockname[1])

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_SWEEP_SECS)
            now = loop.time()
            for connection in list(self._connections):
                connection.check_deadlines(now)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening, let in-flight requests finish (up to `grace` seconds), close every connection."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for connection in list(self._connections):
            connection.close()
        deadline = asyncio.get_running_loop().time() + grace
        while any(c.is_busy() for c in self._connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self._connections):
            connection.abort()
        await server.wait_closed()


class OverHttpServer:
    """The start/stop that every HTTP-style frontend (HTTP, metrics, SageMaker, Vertex AI) delegates to the
    HttpServer it builds in its constructor as `self._http`: two methods and no state, shared instead of copied."""

    _http: HttpServer

    async def start(self) -> tuple[str, int]:
        """Bind the listener; returns the bound (host, port).

        Raises:
            OSError: the address cannot be bound.
        """
        return await self._http.start()

    async def stop(self) -> None:
        """Stop listening and finish in-flight requests; idempotent."""
        await self._http.stop()
