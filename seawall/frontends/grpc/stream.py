"""ModelStreamInfer: every request read from a stream is answered on it while later requests are already being
decoded and run (a bounded window per stream). The one response of a model that is not decoupled is written in
request order; a decoupled model's responses are written as they come, in order per request, the responses of
several requests interleaved.

Imports only asyncio and logging; the answer of one request comes from a callable the gRPC frontend passes in.
Every task belongs to the stream's TaskGroup, so cancelling the stream (the client closed or cancelled it)
cancels its requests, and nothing leaks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine
from typing import Any

logger = logging.getLogger(__name__)

#: requests of one stream in flight at once; beyond that the stream is not read (HTTP/2 flow control pushes back)
STREAM_WINDOW = 16

#: `await emit(message)` writes one message of a decoupled request; False once the client has gone
Emit = Callable[[Any], Awaitable[bool]]
#: `answer(request, emit, detach)`: returns the request's one response message; or calls `detach()` (its answer
#: does not hold back the next requests' answers), emits its messages itself, and returns None
Answer = Callable[[Any, Emit, Callable[[], None]], Coroutine[Any, Any, Any]]


async def serve_stream(requests: AsyncIterable[Any], context: Any, answer: Answer) -> None:
    """Answer each request of `requests` through `answer`, writing to `context`.

    `answer` must not raise for a request's own error: it returns (or emits) the error as a response message.
    """
    out: asyncio.Queue[Any] = asyncio.Queue(STREAM_WINDOW)  # messages to write, None: no more
    ordered: asyncio.Queue[asyncio.Future[Any] | None] = asyncio.Queue()  # one-response answers, in request order
    window = asyncio.Semaphore(STREAM_WINDOW)
    gone = asyncio.Event()  # the client can no longer be written to
    loop = asyncio.get_running_loop()

    async def emit(message: Any) -> bool:
        if gone.is_set():
            return False
        await out.put(message)
        return not gone.is_set()

    async def one(request: Any, slot: asyncio.Future[Any]) -> None:
        def detach() -> None:
            if not slot.done():
                slot.set_result(None)

        try:
            result = await answer(request, emit, detach)
            if not slot.done():
                slot.set_result(result)
        finally:
            if not slot.done():
                slot.set_result(None)
            window.release()

    async with asyncio.TaskGroup() as group:
        writer = group.create_task(_write(out, context, gone))
        orderer = group.create_task(_order(ordered, out))
        answers: set[asyncio.Task[None]] = set()
        async for request in requests:
            if gone.is_set():
                break  # the client is gone: stop reading
            await window.acquire()
            slot: asyncio.Future[Any] = loop.create_future()
            ordered.put_nowait(slot)
            task = group.create_task(one(request, slot))
            answers.add(task)
            task.add_done_callback(answers.discard)
        if answers:
            await asyncio.wait(answers)
        ordered.put_nowait(None)
        await orderer
        await out.put(None)
        await writer


async def _order(ordered: asyncio.Queue[asyncio.Future[Any] | None], out: asyncio.Queue[Any]) -> None:
    """Forward one-response answers to the writer in request order (detached ones resolve to None at once)."""
    while (slot := await ordered.get()) is not None:
        message = await slot
        if message is not None:
            await out.put(message)


async def _write(out: asyncio.Queue[Any], context: Any, gone: asyncio.Event) -> None:
    dropped = 0
    while (message := await out.get()) is not None:
        if gone.is_set():
            dropped += 1  # keep draining: nobody waiting to put may be left blocked
            continue
        try:
            await context.write(message)
        except Exception:  # grpc raises its internal ExecuteBatchError once the peer has gone
            # the client went away (cancelled, deadline): drop what is left; cancelling the call ends the rest
            gone.set()
            dropped += 1
    if dropped:
        logger.debug("stream closed by the client; %d response(s) not sent", dropped)
