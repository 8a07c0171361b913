"""Schedulers: queue requests of one model version and dispatch them to its instances.

Imports `core.backend`, `core.execution`, `core.request_queue`, `core.stats`, `core.types`, `errors`. One worker
task per instance pulls from a shared queue; with `dynamic_batching` a worker gathers queued requests into one
execution (`core/execution.py` runs it).

Decoupled models: a request comes with a `ResponseSink` (`submit_stream`); the instance's `execute_decoupled`
puts the model's responses there, and its return (the model's execute returned) is what statistics count, as
Triton's python backend reports them. Cancellation: a request whose caller is cancelled (the awaiting task of
`enqueue`, or the sink's reader) leaves the queue at once, counted as CANCELED; one that is running is
reported to its instance (`cancel`, or the sink's cancel callbacks), and counted as CANCELED when it returns.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from seawall.core.backend import ModelConfig, ModelInstance, ResponseSink, pipeline_depth
from seawall.core.batcher import gather
from seawall.core.execution import ResponseOrder, execute_batch, execute_decoupled
from seawall.core.rate_limiter import InstanceGate, RateLimiter
from seawall.core.request_queue import BatchPolicy, Pending, PriorityQueue, drain, fail
from seawall.core.stats import StatsRecorder
from seawall.core.types import InferRequest, InferResponse
from seawall.errors import SeawallError, UnavailableError


class Scheduler:
    """Queues requests for one model version and runs them on its instances.

    Owns one worker task per instance; `stop()` fails queued work and cancels the workers.
    Event loop thread only.
    """

    def __init__(
        self,
        instances: Sequence[ModelInstance],
        policy: BatchPolicy,
        stats: StatsRecorder,
        decoupled: bool = False,
        rate_limiter: tuple[RateLimiter, ModelConfig] | None = None,
    ) -> None:
        self._instances = list(instances)
        self.decoupled = decoupled  # requests come through `submit_stream`, instances have `execute_decoupled`
        self._policy = policy
        self._stats = stats
        # a plain FIFO, or a FIFO per priority level that also enforces the levels' max_queue_size
        self._queue: deque[Pending] | PriorityQueue = deque() if policy.is_plain else PriorityQueue(policy)
        # the next batch of a batching model with one instance forms while that instance is busy (Triton's next
        # payload; core/batcher.py); with several, or with queue policies, requests wait here for an idle instance
        self._prefetch = policy.max_batch_size > 1 and not policy.has_queue_policies and len(self._instances) == 1
        self._hold = policy.holds_in_queue and not self._prefetch
        self._next: list[Pending] = []  # that next batch once complete, until the instance frees
        self._wakeup = asyncio.Event()  # set on enqueue: the worker gathering a batch waits on it for more
        self._idle: deque[tuple[asyncio.Future[None], int]] = deque()  # parked workers (waiter, id(instance))
        # id(instance) → its workers woken or working: a request wakes a worker of an instance at 0 (idle) first,
        # and pipelines into a busy instance only when none is idle
        self._claims: dict[int, int] = {id(instance): 0 for instance in self._instances}
        self._spread = len(self._instances) > 1  # one instance: plain FIFO wake-ups (the add_sub hot path)
        self._loop: asyncio.AbstractEventLoop | None = None  # kept: get_running_loop() costs a getpid() (3.11)
        self._gathering = asyncio.Lock()  # one batch forms at a time; a free worker then forms the next
        self._single = policy.max_batch_size <= 1  # every batch is one request: `gather` has nothing to form
        self._workers: list[asyncio.Task[None]] = []
        self._busy = 0  # requests handed to an instance and not yet answered
        self._running: dict[int, int] = {}  # id(instance) → executions it is running (event loop thread)
        self._stopped = False
        self._caller_key = f"{stats.name}/{stats.version}"  # how BLS requests name this model in `callers`
        self._rate_limiter = rate_limiter  # the server's, and this model's config (its instance groups)
        self._gates: dict[int, InstanceGate] = {}  # id(instance) → what it needs of the rate limiter
        self._order = ResponseOrder() if policy.preserve_ordering and not decoupled else None

    def start(self) -> None:
        """Start serving.

        Raises:
            InvalidArgumentError: the rate limiter could never give an instance the resources it needs.
        """
        self._loop = asyncio.get_running_loop()
        if self._rate_limiter is not None:
            limiter, config = self._rate_limiter
            self._gates = limiter.register(config, self._instances)
        # An instance may take a few executions at once (`pipeline_depth`, e.g. the python backend's stub
        # queues the next batch while it runs one): a worker per position keeps it from idling between batches.
        # Under the rate limiter an instance asks for its resources one execution at a time.
        self._workers = [
            asyncio.create_task(self._work(instance))
            for instance in self._instances
            for _ in range(1 if self._gates else pipeline_depth(instance))
        ]

    async def stop(self, drain_secs: float = 0.0) -> None:
        """Refuse new work, let queued and running requests finish for up to `drain_secs`, then fail
        what is left and cancel the workers; idempotent."""
        self._stopped = True
        await drain(lambda: bool(self._queue or self._busy or self._next) and self._has_healthy_instance(), drain_secs)
        self._fail_queued(UnavailableError("model is being unloaded"))
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        self._fail_queued(UnavailableError("model is being unloaded"))  # what a cancelled gather put back
        if self._rate_limiter is not None:
            self._rate_limiter[0].unregister(self._gates)
            self._gates = {}

    def inflight(self) -> int:
        """Requests queued or executing."""
        return len(self._queue) + self._busy

    def _has_healthy_instance(self) -> bool:
        for instance in self._instances:  # a loop, not any(generator): every request asks
            if instance.is_healthy():
                return True
        return False

    async def enqueue(self, request: InferRequest, batch_size: int, timeout_ns: int = 0) -> InferResponse:
        """Queue `request` and wait for its response; it is refused if still queued after its timeout.

        Raises:
            UnavailableError: the scheduler is stopped, no instance is healthy, or the queue timeout expired.
            OverloadedError: the request's priority level is full (`max_queue_size`).
            SeawallError: the model's error for this request.
        """
        if self._stopped or not self._has_healthy_instance():
            raise UnavailableError(f"model '{self._stats.name}' is not ready: no healthy instance")
        future: asyncio.Future[InferResponse] = (self._loop or asyncio.get_running_loop()).create_future()
        pending = self._pending(request, batch_size, timeout_ns, future)
        if request.callers and self._caller_key in request.callers:
            self._refuse_cycle()
            pending.idle_only = True
        self._queue.append(pending)  # raises OverloadedError when the request's level is full
        self._stats.pending += 1
        self._wakeup.set()
        if pending.idle_only:
            self._wake_all()  # the one woken might belong to a busy instance, which must leave it to an idle one
        else:
            self._wake_one()
        try:
            return await future
        except asyncio.CancelledError:
            self._cancel(pending)
            raise

    def submit_stream(self, request: InferRequest, batch_size: int, timeout_ns: int, sink: ResponseSink) -> None:
        """Queue a request of a decoupled model; its responses, or its error, go to `sink` (cancelling the sink
        cancels the request).

        Raises:
            UnavailableError: the scheduler is stopped or no instance is healthy.
            OverloadedError: the request's priority level is full (`max_queue_size`).
        """
        if self._stopped or not self._has_healthy_instance():
            raise UnavailableError(f"model '{self._stats.name}' is not ready: no healthy instance")
        future: asyncio.Future[Any] = (self._loop or asyncio.get_running_loop()).create_future()
        pending = self._pending(request, batch_size, timeout_ns, future, sink)
        self._queue.append(pending)  # raises OverloadedError when the request's level is full
        sink.on_cancel(lambda: self._cancel(pending))
        self._stats.pending += 1
        self._wakeup.set()
        self._wake_one()

    def _pending(
        self,
        request: InferRequest,
        batch_size: int,
        timeout_ns: int,
        future: asyncio.Future[Any],
        sink: ResponseSink | None = None,
    ) -> Pending:
        """`request` as it waits in the queue: its priority level and queue deadline."""
        policy = self._policy
        level = policy.level_of(request) if policy.priority_levels else 0
        timeout = policy.timeout_ns(timeout_ns, level)
        now = time.monotonic_ns()
        return Pending(request, batch_size, future, now, now + timeout if timeout else 0, sink, level=level)

    def _cancel(self, pending: Pending) -> None:
        """The caller of `pending` went away: drop it if still queued (counted now), else tell its instance."""
        now = time.monotonic_ns()
        if pending.instance is None:
            try:
                self._queue.remove(pending)
            except ValueError:  # being gathered into a batch: `_run` drops and counts it
                if not pending.future.done():
                    pending.future.cancel()
                return
            self._stats.pending -= 1
            self._stats.record_failure("CANCELED", now - pending.enqueued_ns)
            if not pending.future.done():
                pending.future.cancel()
            return
        if pending.sink is None:
            cancel = getattr(pending.instance, "cancel", None)
            if cancel is not None:
                cancel(pending.request)

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
        return bool((self._hold or head.deadline_ns or head.idle_only) and self._running.get(id(instance), 0))

    def _wake_all(self) -> None:
        while self._idle:
            waiter, key = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._claims[key] += 1

    def _wake_one(self) -> None:
        """Resume one parked worker (waking them all would resume every pipelined worker per request): one of an
        idle instance if there is one, else of the least busy (the pipeline of a busy instance is for when no
        instance is idle; one instance: the longest parked)."""
        idle = self._idle
        if self._spread:
            claims = self._claims
            best: tuple[asyncio.Future[None], int] | None = None
            least = 0
            for entry in idle:
                load = claims[entry[1]]
                if (best is None or load < least) and not entry[0].done():
                    best, least = entry, load
                    if not load:
                        break
            if best is not None:
                idle.remove(best)
                best[0].set_result(None)
                claims[best[1]] += 1
                return
        while idle:
            waiter, key = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._claims[key] += 1
                return

    async def _work(self, instance: ModelInstance) -> None:
        loop = asyncio.get_running_loop()
        key = id(instance)
        claims = self._claims
        claims[key] += 1  # a worker counts as working, not idle, from its start until it parks
        try:
            await self._serve(instance, key, loop)
        finally:
            claims[key] -= 1

    async def _serve(self, instance: ModelInstance, key: int, loop: asyncio.AbstractEventLoop) -> None:
        claims = self._claims
        while instance.is_healthy():
            if self._next and not self._running.get(key):
                batch, self._next = self._next, []
                await self._dispatch(instance, key, batch)
                continue
            # A request with a queue timeout waits in this queue, not in an instance's pipeline, so that its
            # timeout still means "time until an instance starts it": only an idle instance may take it.
            if not self._queue or self._next or self._must_wait(instance):
                # a parked worker must not keep its last batch alive: its requests hold their input tensors
                # (views of a BLS call's sealed region, say: one 64 MiB mapping per parked worker otherwise)
                batch = []
                waiter: asyncio.Future[None] = loop.create_future()
                claims[key] -= 1
                self._idle.append((waiter, key))
                try:
                    await waiter  # whoever wakes it counts it as working again
                except asyncio.CancelledError:
                    if not waiter.done() or waiter.cancelled():
                        claims[key] += 1  # parked when cancelled: the finally of _work takes it back off
                    raise
                continue
            if self._single:  # no batch to form: the head of the queue is the batch (no lock, no coroutine)
                batch = [self._queue.popleft()]
                await (self._run(instance, batch) if not self._gates else self._dispatch(instance, key, batch))
                continue
            async with self._gathering:  # with pipelined workers, two gathers would split one batch
                # another worker of this instance may have started a batch while this one waited for the lock
                healthy = instance.is_healthy()
                if healthy and self._queue and not self._must_wait(instance):
                    busy = (lambda: bool(self._running.get(key))) if self._prefetch else None
                    batch = await gather(self._queue, self._policy, self._wakeup, busy)
                else:
                    batch = []
            if not healthy:
                break
            if batch and self._prefetch and self._running.get(key):
                self._next = batch  # complete while the instance is still busy: it goes when the instance frees
            elif batch:
                await self._dispatch(instance, key, batch)
        # this instance is gone: pass a wake-up it may have taken on, and if no instance is left, nobody
        # will serve what is queued
        if self._queue:
            self._wake_one()
        if not self._has_healthy_instance():
            self._fail_queued(UnavailableError(f"model '{self._stats.name}' is not ready: no healthy instance"))

    async def _dispatch(self, instance: ModelInstance, key: int, batch: list[Pending]) -> None:
        gate = self._gates.get(key) if self._gates else None
        if gate is None:
            await self._run(instance, batch)
        else:
            await self._run_limited(instance, batch, gate)

    async def _run(self, instance: ModelInstance, batch: list[Pending]) -> None:
        start = time.monotonic_ns()
        self._stats.pending -= len(batch)
        live = [p for p in batch if not p.future.done()]  # a cancelled client leaves a cancelled future
        if len(live) < len(batch):
            for pending in batch:
                if pending.future.cancelled():
                    self._stats.record_failure("CANCELED", start - pending.enqueued_ns)
        expired = [p for p in live if p.deadline_ns and p.deadline_ns < start]
        for pending in expired:
            self._stats.record_failure("REJECTED", start - pending.enqueued_ns)
            fail(pending, UnavailableError("Request timeout expired"))
        if expired:
            live = [p for p in live if not p.future.done()]
        if not live:
            return
        self._busy += len(live)
        self._running[id(instance)] = self._running.get(id(instance), 0) + 1
        try:
            if self.decoupled:
                await execute_decoupled(instance, live, self._stats, start)
            elif self._order is not None:
                await self._order.execute(instance, live, self._stats, start)
            else:
                await execute_batch(instance, live, self._stats, start)
        finally:
            self._busy -= len(live)
            self._running[id(instance)] -= 1
            if self._queue and (
                self._hold or self._queue[0].deadline_ns or self._queue[0].idle_only
            ):  # waits for an idle one
                self._wake_all()
            if self._prefetch:
                self._wakeup.set()  # the next batch, kept open while the instance ran, may go now
                if self._next:
                    self._wake_all()

    async def _run_limited(self, instance: ModelInstance, batch: list[Pending], gate: InstanceGate) -> None:
        """`_run` once the rate limiter gives `instance` its resources (the batch stays pending until then)."""
        assert self._rate_limiter is not None
        limiter = self._rate_limiter[0]
        try:
            await limiter.acquire(gate)
        except asyncio.CancelledError:  # stopped while waiting: nobody will run the batch
            self._stats.pending -= len(batch)
            for pending in batch:
                if not pending.future.done():
                    fail(pending, UnavailableError("model is being unloaded"))
            raise
        try:
            await self._run(instance, batch)
        finally:
            limiter.release(gate)

    async def run_on(self, instance: ModelInstance, requests: Sequence[InferRequest]) -> None:
        """Run `requests` (batch 1 each) as one execution of `instance`, past the queue, recorded in the
        statistics as any other (model warmup, before the scheduler starts: Triton counts warmup there too).

        Raises:
            SeawallError: the first request's error.
        """
        loop = asyncio.get_running_loop()
        now = time.monotonic_ns()
        batch = [Pending(request, 1, loop.create_future(), now, 0) for request in requests]
        self._stats.pending += len(batch)
        await self._run(instance, batch)
        errors = [p.future.exception() for p in batch]
        for error in errors:
            if isinstance(error, SeawallError):
                raise error

    def _fail_queued(self, error: SeawallError) -> None:
        taken, self._next = self._next, []
        while self._queue:
            taken.append(self._queue.popleft())
        for pending in taken:
            self._stats.pending -= 1
            if not pending.future.done():
                fail(pending, error)
