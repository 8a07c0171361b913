"""gRPC calls over the lean HTTP/2 connection (`http2`): a server that runs grpc method handlers (the same
`RpcMethodHandler`s grpc.aio is given, from `service.build_handlers`) with a small context object offering what
those handlers use (abort, write, invocation_metadata, peer, auth_context).

Imports `http2`, `frontends.held` and the standard library only (the handlers come in from the caller).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import socket
import ssl
import time
from collections.abc import Mapping
from typing import Any, cast

from seawall.frontends.grpc.frames import NO_ERROR, Stream
from seawall.frontends.grpc.http2 import Http2Connection
from seawall.frontends.grpc.limits import Http2Limits
from seawall.frontends.grpc.output import Message
from seawall.frontends.held import HeldBytes

logger = logging.getLogger(__name__)

_OK, _CANCELLED, _UNKNOWN, _DEADLINE, _UNIMPLEMENTED, _INTERNAL = 0, 1, 2, 4, 12, 13
#: headers grpc itself consumes; the rest is the call's metadata
_RESERVED = frozenset(("content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"))
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")


class _Abort(Exception):  # noqa: N818 (control flow of context.abort)
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Context:
    """The part of grpc.aio's ServicerContext the handlers use."""

    __slots__ = ("_stream", "_connection", "_serialize")

    def __init__(self, stream: Stream, connection: Http2Connection, serialize: Any) -> None:
        self._stream = stream
        self._connection = connection
        self._serialize = serialize

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple((k, v) for k, v in self._stream.headers.items() if k[0] != ":" and k not in _RESERVED)

    async def abort(self, code: Any, details: str = "") -> None:
        raise _Abort(code.value[0] if hasattr(code, "value") else int(code), details)

    async def write(self, message: Any) -> None:
        data = self._serialize(message) if self._serialize is not None else message
        if not await self._stream.write(data):
            raise asyncio.CancelledError  # the peer reset the call: stop its work as grpc.aio does

    def peer(self) -> str:
        address = self._connection.transport.get_extra_info("peername")
        if not address:
            return "unknown"
        host, port = address[0], address[1]
        return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"

    def auth_context(self) -> dict[str, list[bytes]]:
        ssl_object = self._connection.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        return {"x509_subject": [x509_subject(der).encode()]} if der else {}

    def cancelled(self) -> bool:
        return self._stream.cancelled


def _deadline(headers: Mapping[str, str]) -> float | None:
    value = headers.get("grpc-timeout")
    if value is None:
        return None
    match = _TIMEOUT.match(value)
    return int(match.group(1)) * _TIMEOUT_UNITS[match.group(2)] if match else None


class LeanServer:
    """Serves `handlers` ({"/service/method": RpcMethodHandler}) over lean HTTP/2, plain or TLS."""

    def __init__(
        self,
        handlers: Mapping[str, Any],
        limits: Http2Limits,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float = 0.0,
        handshake_timeout: float = 0.0,
    ) -> None:
        self._handlers = dict(handlers)
        self._limits = limits
        self._ssl = ssl_context
        self._idle_timeout = idle_timeout
        self._handshake_timeout = handshake_timeout
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[Http2Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._held = HeldBytes(limits.max_held_bytes)  # request bytes of all connections
        self._loop: asyncio.AbstractEventLoop | None = None  # kept: get_running_loop() costs a getpid() (3.11)

    def _is_streaming(self, path: str) -> bool:
        handler = self._handlers.get(path)
        return handler is not None and handler.request_streaming

    def _connection(self) -> Http2Connection:
        holder: list[Http2Connection] = []

        def on_call(stream: Stream) -> None:
            connection, loop = holder[0], self._loop
            assert loop is not None  # connections come only once `start` has run
            task = loop.create_task(self._run(connection, stream))
            stream.task = task
            self._tasks.add(task)
            # a task cancelled before its first step (a RST_STREAM in the same read as the request) never runs
            # `_run`'s `finally`: its stream would hold a slot of the connection's limit for good
            task.add_done_callback(functools.partial(self._ended, connection, stream))

        connection = Http2Connection(self._limits, self._is_streaming, on_call, self._connections.discard, self._held)
        holder.append(connection)
        self._connections.add(connection)
        return connection

    async def start(self, host: str, port: int, reuse_port: bool = False) -> int:
        """Bind and serve; return the bound port.

        Raises:
            OSError: the address could not be bound.
        """
        self._loop = loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._connection,
            host or None,
            port,
            ssl=self._ssl,
            ssl_handshake_timeout=(self._handshake_timeout or None) if self._ssl else None,
            reuse_port=reuse_port or None,
            backlog=1024,
        )
        self._reaper = loop.create_task(self._reap())
        # untyped: typeshed says a tuple, uvloop gives a list, and compiled code checks declared types
        sockets: Any = cast(Any, self._server).sockets
        sock: socket.socket = sockets[0]
        return int(sock.getsockname()[1])

    async def _reap(self) -> None:
        """Close connections that never spoke HTTP/2 in time or sat idle with no call too long."""
        while True:
            await asyncio.sleep(0.1)
            try:
                self._sweep(time.monotonic())
            except Exception:  # the sweep must go on for the other connections
                logger.exception("gRPC connection sweep failed")

    def _sweep(self, now: float) -> None:
        for connection in list(self._connections):
            age = now - connection.started
            if connection.transport is None:  # in its TLS handshake (asyncio aborts it at the handshake timeout)
                if age > self._handshake_timeout + 60:
                    self._connections.discard(connection)  # the handshake failed: connection_made never came
                continue
            connection.tick(now)
            if not connection.preface_received and age > self._handshake_timeout > 0:
                connection.transport.close()
            elif self._idle_timeout and now - connection.last_activity > self._idle_timeout:
                if not connection.active_streams():
                    connection.go_away(NO_ERROR, "idle")

    def calls(self) -> int:
        """Calls whose work is running (their tasks), on every connection."""
        return len(self._tasks)

    def held_bytes(self) -> int:
        """Request bytes the connections hold (received, not yet answered or taken)."""
        return self._held.held

    def open_streams(self) -> int:
        """Streams held against the connections' stream limits (open, or reset with work still running)."""
        return sum(connection.active_streams() for connection in self._connections)

    async def stop(self, grace: float) -> None:
        """Refuse new calls (GOAWAY), give running ones `grace` seconds, then close every connection."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        if self._reaper is not None:
            self._reaper.cancel()
        for connection in list(self._connections):
            connection.go_away(NO_ERROR, "server stopping")
        deadline = time.monotonic() + grace
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
        for task in list(self._tasks):
            task.cancel()
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)

    async def _run(self, connection: Http2Connection, stream: Stream) -> None:
        handler = self._handlers.get(stream.headers.get(":path", ""))
        status, message = _OK, ""
        answer = None
        try:
            if handler is None:
                status, message = _UNIMPLEMENTED, "Method not found!"
            elif not stream.headers.get("content-type", "").startswith("application/grpc"):
                status, message = _UNKNOWN, "bad content-type"
            elif (timeout := _deadline(stream.headers)) is not None:
                try:
                    async with asyncio.timeout(timeout):
                        answer = await self._call(connection, stream, handler)
                except TimeoutError:
                    status, message = _DEADLINE, "Deadline Exceeded"
            else:
                answer = await self._call(connection, stream, handler)
        except _Abort as abort:
            status, message = abort.code, abort.message
        except asyncio.CancelledError:
            status, message = _CANCELLED, "Cancelled"
        except (ValueError, OverflowError) as exc:  # the request's framing
            status, message = (8 if isinstance(exc, OverflowError) else _UNIMPLEMENTED), str(exc)
        except Exception:
            logger.exception("gRPC call %s failed", stream.headers.get(":path"))
            status, message = _UNKNOWN, "Unexpected error"
        finally:
            connection.finish(stream, status, message, answer if status == _OK else None)
            connection.work_ended(stream)

    def _ended(self, connection: Http2Connection, stream: Stream, task: asyncio.Task[None]) -> None:
        """The call's task is done, however it ended: its stream is answered (CANCELLED unless it was) and
        released."""
        self._tasks.discard(task)
        connection.finish(stream, _CANCELLED, "Cancelled")
        connection.work_ended(stream)

    async def _call(self, connection: Http2Connection, stream: Stream, handler: Any) -> Message | None:
        """Run the call; a unary call's serialized answer is returned (sent with its trailers), a streaming call
        writes its own."""
        deserialize, serialize = handler.request_deserializer, handler.response_serializer
        context = Context(stream, connection, serialize)
        if handler.request_streaming:
            result = handler.stream_stream(stream.messages(deserialize), context)
            if hasattr(result, "__aiter__"):
                async for response in result:
                    await context.write(response)
            else:
                await result
            return None
        data = stream.take_only_message()
        if data is None:
            messages = stream.take_messages()
            if len(messages) != 1 or stream.body:
                raise _Abort(_INTERNAL, "expected exactly one request message")
            data = messages[0]
        try:
            request = deserialize(data) if deserialize is not None else data
        except Exception:
            raise _Abort(_INTERNAL, "Exception deserializing request!") from None
        response = await handler.unary_unary(request, context)
        answer: Message = serialize(response) if serialize is not None else response
        return answer


def x509_subject(der: bytes) -> str:
    """The subject of a DER certificate in RFC 4514 form, control characters as `\\XX`, as grpc core reports it."""
    from cryptography import x509

    text = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return "".join(f"\\{ord(c):02X}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)
