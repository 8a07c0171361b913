"""How the dynamic batcher forms one batch from a model's queue, as Triton 2.51 does: as many queued requests as
fit `max_batch_size`, cut at the largest preferred batch size they reach; waiting up to `max_queue_delay` for more;
and, for a model whose only instance is busy, kept open for requests that arrive until it reaches a preferred size
or the instance frees (Triton's next payload).

Imports `core.request_queue`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from seawall.core.request_queue import BatchPolicy, Pending, PriorityQueue


async def gather(
    queue: deque[Pending] | PriorityQueue,
    policy: BatchPolicy,
    wakeup: asyncio.Event,
    is_busy: Callable[[], bool] | None = None,
) -> list[Pending]:
    """Take the next batch off `queue` (not empty). `wakeup` is set when a request arrives (and, with `is_busy`,
    when the instance frees). Cancelled while it waits, the requests it took go back to the head of the queue.
    """
    first = queue.popleft()
    batch = [first]
    limit = policy.max_batch_size
    if limit <= 0:
        return batch
    preferred = policy.preferred_batch_sizes
    size = first.batch_size
    deadline = first.enqueued_ns + policy.max_queue_delay_ns
    try:
        while True:
            # a BLS call of this model's own executions only heads a batch (of an idle instance)
            while queue and size + queue[0].batch_size <= limit and not queue[0].idle_only:
                item = queue.popleft()
                batch.append(item)
                size += item.batch_size
            if size >= limit or size in preferred:
                return batch
            cut = _preferred_cut(batch, preferred)
            if cut:
                for item in reversed(batch[cut:]):
                    queue.appendleft(item)
                return batch[:cut]
            if queue:  # the next one does not fit
                return batch
            if is_busy is not None and is_busy():
                wakeup.clear()
                await wakeup.wait()  # a request arrives, or the instance frees
                continue
            remaining = deadline - time.monotonic_ns()
            if remaining <= 0:
                return batch
            wakeup.clear()
            try:
                await asyncio.wait_for(wakeup.wait(), remaining / 1e9)
            except TimeoutError:
                return batch
    except asyncio.CancelledError:
        for item in reversed(batch):
            queue.appendleft(item)
        raise


def _preferred_cut(batch: list[Pending], preferred: tuple[int, ...]) -> int:
    """How many requests of `batch` make its largest preferred size (a prefix); 0 when none does."""
    cut, size = 0, 0
    for count, item in enumerate(batch, start=1):
        size += item.batch_size
        if size in preferred:
            cut = count
    return cut if cut < len(batch) else 0
