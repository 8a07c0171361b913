"""Busy polling: for a short window after an inference request arrived, the event loop polls for I/O instead of
sleeping in the kernel, so the stub's answer and the client's next request are picked up without a wake-up.

On the 2-core VMs this was measured on, a loop that sleeps between the hops of a request pays for it on every hop
(the wake-up, then caches cold after the other processes ran): add_sub over HTTP at c=1 cost the loop 281 µs of CPU
per request against 86 at c=32. Polling for 1 ms after each request (`--busy-poll-us`, 0: off) keeps the loop
warm while requests come, and an idle server sleeps again 1 ms after its last request.

Event loop thread only; the core calls `kick` when it admits a request.
"""

from __future__ import annotations

import asyncio
import time

#: `--busy-poll-us`'s default: the window after a request during which the loop polls
DEFAULT_WINDOW_US = 1000
#: a request admitted while at most this many are in flight (itself included) starts the window: under more load
#: the loop has work anyway, and where it has gaps (waiting on clients or stubs) polling would take the CPU that
#: they need (add_sub over gRPC at c=32 with a Python client: 11 % fewer requests/s when every request polled)
BUSY_POLL_INFLIGHT = 2


class BusyPoll:
    """While kicked within the last `window_us` µs, a callback re-schedules itself on every loop iteration, so
    uvloop polls its descriptors without blocking. `window_us` 0: never."""

    __slots__ = ("_loop", "_polling", "_until", "_window")

    def __init__(self, window_us: int = DEFAULT_WINDOW_US) -> None:
        self._window = window_us / 1e6
        self._until = 0.0
        self._polling = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def kick(self) -> None:
        """A request arrived: poll for the next `window_us` µs."""
        if self._window <= 0.0:
            return
        self._until = time.monotonic() + self._window
        loop = self._loop
        if loop is None or loop.is_closed():  # the first request, or the server run again on a new loop
            self._loop = loop = asyncio.get_running_loop()
            self._polling = False
        if not self._polling:
            self._polling = True
            loop.call_soon(self._poll)

    def _poll(self) -> None:
        loop = self._loop
        if loop is not None and time.monotonic() < self._until:  # (a closed loop runs no callbacks)
            loop.call_soon(self._poll)
        else:
            self._polling = False
