"""Heavy per-request CPU work off the event loop: decoding and encoding BYTES tensors of many elements (each
element is a Python object) runs in the loop's default executor (a bounded thread pool), so health checks and
other models keep being served while it runs.

Imports only `core.types`. Light work stays inline: a thread hop costs more than it saves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import ParamSpec, TypeVar

from seawall.core.types import Tensor

#: request bodies (HTTP) or messages (gRPC) larger than this are decoded in a worker thread
HEAVY_BODY_BYTES = 1 << 20
#: tensors holding more BYTES elements than this together are encoded or decoded in a worker thread
HEAVY_BYTES_ELEMENTS = 1 << 15

P = ParamSpec("P")
R = TypeVar("R")


async def run(heavy: bool, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`work(*args, **kwargs)`: inline when light, in the default executor when `heavy`."""
    if not heavy:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)


class StillRunning(asyncio.CancelledError):
    """The caller was cancelled while its work went on in a thread (`run_holding`): the lock it held is released
    when the work ends, not by the caller."""


async def run_holding(lock: asyncio.Lock, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`work(*args, **kwargs)` in the default executor for a caller that holds `lock` over what the work touches.
    Cancelled meanwhile, it raises StillRunning and releases `lock` once the work has ended (the thread cannot be
    stopped); otherwise, and on the work's own errors, the caller still holds `lock`."""
    task = asyncio.ensure_future(asyncio.to_thread(work, *args, **kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.done():
            raise
        task.add_done_callback(lambda done: _release(lock, done))
        raise StillRunning() from None


async def run_alone(gate: asyncio.Lock, work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`work(*args, **kwargs)` in the default executor, one at a time per `gate`, for work whose memory is many
    times its input's: `gate` is held until the work has ended, also when the caller is cancelled meanwhile (the
    thread cannot be stopped, so what it holds counts until it returns)."""
    await gate.acquire()
    held = True
    try:
        return await run_holding(gate, work, *args, **kwargs)
    except StillRunning:
        held = False  # released when the work ends
        raise
    finally:
        if held:
            gate.release()


def _release(gate: asyncio.Lock, done: asyncio.Future[R]) -> None:
    gate.release()
    if not done.cancelled():
        done.exception()  # seen, also when the caller was cancelled


def bytes_elements(tensors: Iterable[Tensor]) -> int:
    """How many BYTES elements `tensors` hold together."""
    count = 0
    for tensor in tensors:  # a loop, not sum(generator): this runs on every request
        if tensor.datatype == "BYTES":
            count += int(tensor.data.size)
    return count


def is_heavy(tensors: Iterable[Tensor]) -> bool:
    """Whether encoding `tensors` is worth a worker thread."""
    return bytes_elements(tensors) > HEAVY_BYTES_ELEMENTS
