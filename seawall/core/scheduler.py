"""Schedulers: queue requests of one model version and dispatch them to its instances.

Imports `core.backend`, `core.stats`, `core.types`, `errors`. One worker task per instance pulls from a
shared queue; with `dynamic_batching` a worker gathers queued requests into one execution.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from seawall.core.backend import MAX_PIPELINE_DEPTH, Execution, ModelConfig, ModelInstance
from seawall.core.stats import StatsRecorder
from seawall.core.types import InferRequest, InferResponse
from seawall.errors import InternalError, SeawallError, UnavailableError

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    request: InferRequest
    batch_size: int
    future: asyncio.Future[InferResponse]
    enqueued_ns: int
    deadline_ns: int  # 0: may wait forever
    idle_only: bool = False  # a BLS call from this model's own executions: only an idle instance may take it


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How many requests one execution may take, and how long the oldest may wait for more."""

    max_batch_size: int = 0  # 0: one request per execution
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_ns: int = 0
    default_timeout_ns: int = 0  # queue policy: 0 = none
    allow_timeout_override: bool = False

    @classmethod
    def from_config(cls, config: ModelConfig) -> BatchPolicy:
        if not config.HasField("dynamic_batching"):
            return cls()
        batching = config.dynamic_batching
        queue = batching.default_queue_policy
        return cls(
            max_batch_size=max(config.max_batch_size, 0),
            preferred_batch_sizes=tuple(sorted(batching.preferred_batch_size)),
            max_queue_delay_ns=batching.max_queue_delay_microseconds * 1000,
            default_timeout_ns=queue.default_timeout_microseconds * 1000,
            allow_timeout_override=queue.allow_timeout_override,
        )

    def timeout_ns(self, requested_ns: int) -> int:
        """The queue timeout of a request: the policy's, which a request may shorten (or replace when
        the policy allows overrides)."""
        if not requested_ns:
            return self.default_timeout_ns
        if self.allow_timeout_override or not self.default_timeout_ns:
            return requested_ns
        return min(requested_ns, self.default_timeout_ns)


class Scheduler:
    """Queues requests for one model version and runs them on its instances.

    Owns one worker task per instance; `stop()` fails queued work and cancels the workers.
    Event loop thread only.
    """

    def __init__(self, instances: Sequence[ModelInstance], policy: BatchPolicy, stats: StatsRecorder) -> None:
        self._instances = list(instances)
        self._policy = policy
        self._stats = stats
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()  # set on enqueue: the worker gathering a batch waits on it for more
        self._idle: deque[asyncio.Future[None]] = deque()  # parked workers; each enqueued request wakes one
        self._loop: asyncio.AbstractEventLoop | None = None  # kept: get_running_loop() costs a getpid() (3.11)
        self._gathering = asyncio.Lock()  # one batch forms at a time; a free worker then forms the next
        self._workers: list[asyncio.Task[None]] = []
        self._busy = 0  # requests handed to an instance and not yet answered
        self._running: dict[int, int] = {}  # id(instance) → executions it is running (event loop thread)
        self._stopped = False
        self._caller_key = f"{stats.name}/{stats.version}"  # how BLS requests name this model in `callers`

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # An instance may take a few executions at once (`pipeline_depth`, e.g. the python backend's stub
        # queues the next batch while it runs one): a worker per position keeps it from idling between batches.
        self._workers = [
            asyncio.create_task(self._work(instance))
            for instance in self._instances
            for _ in range(_pipeline_depth(instance))
        ]

    async def stop(self, drain_secs: float = 0.0) -> None:
        """Refuse new work, let queued and running requests finish for up to `drain_secs`, then fail
        what is left and cancel the workers; idempotent."""
        self._stopped = True
        deadline = time.monotonic() + drain_secs
        while (self._queue or self._busy) and time.monotonic() < deadline and self._has_healthy_instance():
            await asyncio.sleep(0.005)
        self._fail_queued(UnavailableError("model is being unloaded"))
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def inflight(self) -> int:
        """Requests queued or executing."""
        return len(self._queue) + self._busy

    def _has_healthy_instance(self) -> bool:
        return any(i.is_healthy() for i in self._instances)

    async def enqueue(self, request: InferRequest, batch_size: int, timeout_ns: int = 0) -> InferResponse:
        """Queue `request` and wait for its response; it is refused if still queued after its timeout.

        Raises:
            UnavailableError: the scheduler is stopped, no instance is healthy, or the queue timeout expired.
            SeawallError: the model's error for this request.
        """
        if self._stopped or not self._has_healthy_instance():
            raise UnavailableError(f"model '{self._stats.name}' is not ready: no healthy instance")
        future: asyncio.Future[InferResponse] = (self._loop or asyncio.get_running_loop()).create_future()
        now = time.monotonic_ns()
        timeout = self._policy.timeout_ns(timeout_ns)
        pending = _Pending(request, batch_size, future, now, now + timeout if timeout else 0)
        if request.callers and self._caller_key in request.callers:
            self._refuse_cycle()
            pending.idle_only = True
        self._queue.append(pending)
        self._stats.pending += 1
        self._wakeup.set()
        if pending.idle_only:
            self._wake_all()  # the one woken might belong to a busy instance, which must leave it to an idle one
        else:
            self._wake_one()
        return await future

    def _refuse_cycle(self) -> None:
        """A BLS call made (directly or through other models) by this model's own executions: it may only run on
        an idle instance, never behind the executions waiting for it, so with none idle it fails now instead of
        waiting forever (Triton waits: a deadlock).

        Raises: UnavailableError (every instance is busy).
        """
        if not any(i.is_healthy() and not self._running.get(id(i), 0) for i in self._instances):
            name = self._stats.name
            raise UnavailableError(
                f"BLS call to model '{name}' from its own execution cannot run: every instance of model '{name}' "
                "is busy (waiting would deadlock); add instances to its instance_group"
            )

    def _must_wait(self, instance: ModelInstance) -> bool:
        """The queue's head may only go to an idle instance (a queue timeout, or a BLS call of this model's own
        executions), and `instance` is running a batch."""
        head = self._queue[0]
        return bool((head.deadline_ns or head.idle_only) and self._running.get(id(instance), 0))

    def _wake_all(self) -> None:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _wake_one(self) -> None:
        """Resume one parked worker (waking them all would resume every pipelined worker per request)."""
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _work(self, instance: ModelInstance) -> None:
        loop = asyncio.get_running_loop()
        while instance.is_healthy():
            # A request with a queue timeout waits in this queue, not in an instance's pipeline, so that its
            # timeout still means "time until an instance starts it": only an idle instance may take it.
            if not self._queue or self._must_wait(instance):
                waiter: asyncio.Future[None] = loop.create_future()
                self._idle.append(waiter)
                await waiter
                continue
            async with self._gathering:  # with pipelined workers, two gathers would split one batch
                if not instance.is_healthy():
                    break
                # another worker of this instance may have started a batch while this one waited for the lock
                batch = await self._gather() if self._queue and not self._must_wait(instance) else []
            if batch:
                await self._run(instance, batch)
        # this instance is gone: pass a wake-up it may have taken on, and if no instance is left, nobody
        # will serve what is queued
        if self._queue:
            self._wake_one()
        if not self._has_healthy_instance():
            self._fail_queued(UnavailableError(f"model '{self._stats.name}' is not ready: no healthy instance"))

    async def _gather(self) -> list[_Pending]:
        """Take the next request, and with dynamic batching as many more as fit (waiting up to the delay)."""
        first = self._queue.popleft()
        batch = [first]
        limit = self._policy.max_batch_size
        if limit <= 0:
            return batch
        size = first.batch_size
        deadline = first.enqueued_ns + self._policy.max_queue_delay_ns
        while True:
            # a BLS call of this model's own executions only heads a batch (of an idle instance)
            while self._queue and size + self._queue[0].batch_size <= limit and not self._queue[0].idle_only:
                item = self._queue.popleft()
                batch.append(item)
                size += item.batch_size
            if size >= limit or size in self._policy.preferred_batch_sizes or self._queue:
                return batch
            remaining = deadline - time.monotonic_ns()
            if remaining <= 0:
                return batch
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining / 1e9)
            except TimeoutError:
                return batch

    async def _run(self, instance: ModelInstance, batch: list[_Pending]) -> None:
        start = time.monotonic_ns()
        self._stats.pending -= len(batch)
        live = [p for p in batch if not p.future.done()]  # a cancelled client leaves a done future
        expired = [p for p in live if p.deadline_ns and p.deadline_ns < start]
        for pending in expired:
            self._stats.record_failure("REJECTED", start - pending.enqueued_ns)
            pending.future.set_exception(UnavailableError("Request timeout expired"))
        if expired:
            live = [p for p in live if not p.future.done()]
        if not live:
            return
        reason = "OTHER"  # an error the model returned for one request
        self._busy += len(live)
        self._running[id(instance)] = self._running.get(id(instance), 0) + 1
        requests = [p.request for p in live]
        dispatched = time.monotonic_ns()  # compute_input: handing the batch to the instance
        try:
            results = await instance.execute(requests)
            if len(results) != len(live):
                raise InternalError("backend returned a wrong number of responses")
        except SeawallError as error:
            reason, results = "BACKEND", Execution([error] * len(live))
        except Exception:
            logger.exception("model '%s' instance '%s' failed", self._stats.name, instance.name)
            reason, results = "BACKEND", Execution([InternalError("internal error")] * len(live))
        finally:
            self._busy -= len(live)
            self._running[id(instance)] -= 1
            if self._queue and (self._queue[0].deadline_ns or self._queue[0].idle_only):  # waits for an idle one
                self._wake_all()
        executed = time.monotonic_ns()
        # a pipelining backend says when the batch really ran: its wait behind earlier batches is queue time
        # (only when the batch answered a request: a batch of errors keeps the scheduler's measurement)
        ran = results.compute_ns if any(isinstance(r, InferResponse) for r in results) else None
        began, ended = ran if ran is not None and dispatched <= ran[0] <= ran[1] <= executed else (dispatched, executed)
        for pending, result in zip(live, results, strict=True):
            if pending.future.done():
                continue
            now = time.monotonic_ns()
            if isinstance(result, SeawallError):
                self._stats.record_failure(reason, now - pending.enqueued_ns)
                pending.future.set_exception(result)
            else:
                self._stats.record_success(
                    request_ns=now - pending.enqueued_ns,
                    queue_ns=start - pending.enqueued_ns + began - dispatched,
                    input_ns=dispatched - start,
                    infer_ns=ended - began,
                    output_ns=now - ended,
                )
                pending.future.set_result(result)
        self._stats.record_execution(
            sum(p.batch_size for p in live),
            input_ns=dispatched - start,
            infer_ns=ended - began,
            output_ns=time.monotonic_ns() - ended,
        )

    def _fail_queued(self, error: SeawallError) -> None:
        while self._queue:
            pending = self._queue.popleft()
            self._stats.pending -= 1
            if not pending.future.done():
                pending.future.set_exception(error)


def _pipeline_depth(instance: ModelInstance) -> int:
    """How many executions `instance` accepts at once: its `pipeline_depth` when 1 to 8, else 1."""
    depth = instance.pipeline_depth
    return depth if type(depth) is int and 1 <= depth <= MAX_PIPELINE_DEPTH else 1
