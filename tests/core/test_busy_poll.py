"""BusyPoll on a real asyncio event loop: kicked, the loop always has a callback ready (so it polls its descriptors
without blocking) until the window has passed; then it has none, and an idle loop sleeps again."""

from __future__ import annotations

import asyncio
import time

from seawall.core.busy_poll import BusyPoll


def _ready(loop: asyncio.AbstractEventLoop) -> int:
    return len(loop._ready)  # type: ignore[attr-defined]  # what the loop runs next without waiting for I/O


async def _idle_for(seconds: float) -> None:
    """Let the loop run for `seconds` (sleeping in its selector when nothing else is ready)."""
    await asyncio.sleep(seconds)


def test_a_kick_keeps_the_loop_polling_for_the_window_then_lets_it_sleep() -> None:
    async def main() -> tuple[int, int, float]:
        loop = asyncio.get_running_loop()
        poll = BusyPoll(20_000)  # 20 ms
        started = time.monotonic()
        poll.kick()
        await _idle_for(0.005)
        during = _ready(loop)  # the poll callback is queued again on every iteration
        polled_for = 0.0
        while _ready(loop):  # it stops by itself
            await asyncio.sleep(0)
            polled_for = time.monotonic() - started
        await _idle_for(0.005)
        return during, _ready(loop), polled_for

    during, after, polled_for = asyncio.run(main())
    assert during >= 1 and after == 0
    assert 0.015 <= polled_for < 1.0


def test_a_kick_while_polling_extends_the_window_and_window_zero_never_polls() -> None:
    async def main() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        poll = BusyPoll(10_000)
        started = time.monotonic()
        poll.kick()
        await _idle_for(0.007)
        poll.kick()  # 7 ms in: polls until ~17 ms
        while _ready(loop):
            await asyncio.sleep(0)
        extended = time.monotonic() - started
        off = BusyPoll(0)
        off.kick()
        return extended, _ready(loop)

    extended, ready_after_off = asyncio.run(main())
    assert extended >= 0.015
    assert ready_after_off == 0


def test_a_server_run_again_on_a_new_loop_polls_there() -> None:
    poll = BusyPoll(5_000)

    async def kicked() -> int:
        poll.kick()
        await asyncio.sleep(0.001)
        return _ready(asyncio.get_running_loop())

    assert asyncio.run(kicked()) >= 1  # its loop closes while it still polls
    assert asyncio.run(kicked()) >= 1  # the next loop polls too, not the closed one
