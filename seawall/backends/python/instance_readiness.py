"""A model's own readiness, as Triton's python backend asks it: a model that defines `is_ready()` is asked at every
model-readiness check (GET /v2/models/<m>/ready, gRPC ModelReady), in its stub, beside whatever runs there.

Imports `messages`, `process` and `process_io`. Runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from seawall.backends.python.messages import ReadyAnswer, ReadyCheck
from seawall.backends.python.process import StubProcess
from seawall.backends.python.process_io import escape_log

logger = logging.getLogger(__name__)

#: How long is_ready() may take before the check answers "not ready" (Triton's five seconds).
READY_CHECK_S = 5.0


class StubReadiness:
    """One instance's checks: one in flight at a time (concurrent callers share its answer), within READY_CHECK_S."""

    def __init__(self, instance_name: str) -> None:
        self._name = instance_name
        self.checks = False  # the model defines is_ready() (its stub said so in Ready)
        self._asks: dict[int, asyncio.Future[ReadyAnswer]] = {}
        self._ids = itertools.count(1)
        self._running: asyncio.Task[bool] | None = None

    async def check(self, process: StubProcess) -> bool:
        """True if the model defines no is_ready(); else what it answered. False (logged) if it raised, answered
        something else than a bool, or took longer than READY_CHECK_S."""
        if not self.checks:
            return True
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._ask(process))
            self._running.add_done_callback(self._done)
        return await asyncio.shield(self._running)

    def _done(self, task: asyncio.Task[bool]) -> None:
        if self._running is task:
            self._running = None

    async def _ask(self, process: StubProcess) -> bool:
        ask = next(self._ids)
        answer: asyncio.Future[ReadyAnswer] = asyncio.get_running_loop().create_future()
        self._asks[ask] = answer
        try:
            process.send(ReadyCheck(ask))
            found = await asyncio.wait_for(answer, READY_CHECK_S)
        except TimeoutError:
            logger.warning("model instance '%s': is_ready() did not answer in time: not ready", self._name)
            return False
        finally:
            self._asks.pop(ask, None)
        if found.error:
            logger.error("model instance '%s': is_ready() failed: %s", self._name, escape_log(found.error))
        return found.ready

    def on_answer(self, answer: ReadyAnswer) -> None:
        """A ReadyAnswer of the stub (an answer nobody waits for any more is dropped)."""
        waiting = self._asks.get(answer.ask)
        if waiting is not None and not waiting.done():
            waiting.set_result(answer)
