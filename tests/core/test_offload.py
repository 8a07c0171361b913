"""`offload.run_alone`: work one at a time per gate, in worker threads, the gate held until the work has ended
even when its caller is cancelled, errors passed to the caller; `offload.run_holding`, its core, for a lock the
caller already holds."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from seawall.core import offload


class _Work:
    """Blocking work that records how many copies of it run at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.most = 0
        self.ended = 0
        self._lock = threading.Lock()

    def __call__(self, value: int) -> int:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
            self.ended += 1
        return value * 2


async def test_work_under_one_gate_runs_one_at_a_time() -> None:
    gate, work = asyncio.Lock(), _Work(0.05)
    results = await asyncio.gather(*(offload.run_alone(gate, work, value) for value in range(4)))
    assert (results, work.most, gate.locked()) == ([0, 2, 4, 6], 1, False)
    # without the gate the same work overlaps (the measure above can see overlap)
    await asyncio.gather(*(offload.run(True, work, value) for value in range(4)))
    assert work.most > 1


async def test_a_cancelled_caller_leaves_the_gate_held_until_its_work_ends() -> None:
    gate, work = asyncio.Lock(), _Work(0.3)
    first = asyncio.ensure_future(offload.run_alone(gate, work, 1))
    await asyncio.sleep(0.1)  # the work is running in its thread
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert gate.locked() and work.ended == 0  # still parsing: still counted
    assert await offload.run_alone(gate, work, 2) == 4  # waited for the first work to end
    assert (work.ended, work.most, gate.locked()) == (2, 1, False)


async def test_a_caller_cancelled_while_waiting_takes_nothing() -> None:
    gate, work = asyncio.Lock(), _Work(0.2)
    running = asyncio.ensure_future(offload.run_alone(gate, work, 1))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(offload.run_alone(gate, work, 2))
    await asyncio.sleep(0.05)
    waiting.cancel()
    assert await running == 2
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (work.ended, gate.locked()) == (1, False)


async def test_an_error_reaches_the_caller_and_frees_the_gate() -> None:
    gate = asyncio.Lock()

    def fail() -> None:
        raise ValueError("bad document")

    with pytest.raises(ValueError, match="bad document"):
        await offload.run_alone(gate, fail)
    assert not gate.locked()


async def test_run_holding_leaves_the_lock_to_its_caller_unless_cancelled_during_the_work() -> None:
    lock, work = asyncio.Lock(), _Work(0.2)
    await lock.acquire()
    assert await offload.run_holding(lock, work, 3) == 6 and lock.locked()  # the caller's to release
    with pytest.raises(TypeError):
        await offload.run_holding(lock, work, None)  # type: ignore[arg-type]
    assert lock.locked()  # an error of the work: still the caller's
    caller = asyncio.ensure_future(offload.run_holding(lock, work, 1))
    await asyncio.sleep(0.05)  # the work is running in its thread
    caller.cancel()
    with pytest.raises(offload.StillRunning):
        await caller
    assert lock.locked() and work.ended == 2  # the thread still runs: nothing else may touch what it touches
    deadline = time.monotonic() + 5
    while lock.locked() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert not lock.locked() and work.ended == 3  # released once the work ended
