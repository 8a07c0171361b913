"""ModelStreamInfer: every request read from a stream is answered on it, in request order, while later
requests are already being decoded and run (a bounded window per stream).

Imports only asyncio and logging; the answer of one request comes from a callable the gRPC frontend passes in.
Every task belongs to the stream's TaskGroup, so cancelling the stream cancels its requests and nothing leaks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Callable, Coroutine
from typing import Any

logger = logging.getLogger(__name__)

#: requests of one stream in flight at once; beyond that the stream is not read (HTTP/2 flow control pushes back)
STREAM_WINDOW = 16

Answer = Callable[[Any], Coroutine[Any, Any, Any]]


async def serve_stream(requests: AsyncIterable[Any], context: Any, answer: Answer) -> None:
    """Answer each request of `requests` with `await answer(request)`, written to `context` in request order.

    `answer` must not raise for a request's own error: it returns the error as a response message.
    """
    pending: asyncio.Queue[asyncio.Task[Any] | None] = asyncio.Queue(STREAM_WINDOW)
    async with asyncio.TaskGroup() as group:
        writer = group.create_task(_write_in_order(pending, context))
        async for request in requests:
            if writer.done():
                break  # the client is gone: stop reading
            await pending.put(group.create_task(answer(request)))
        await pending.put(None)


async def _write_in_order(pending: asyncio.Queue[asyncio.Task[Any] | None], context: Any) -> None:
    while (task := await pending.get()) is not None:
        response = await task
        try:
            await context.write(response)
        except Exception:  # grpc raises its internal ExecuteBatchError once the peer has gone
            # the client went away (cancelled, deadline): drop what is left; cancelling the call ends the rest
            logger.debug("stream closed by the client; %d response(s) not sent", pending.qsize() + 1)
            return
