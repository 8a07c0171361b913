"""One execution: hand a batch of requests to an instance, answer each request, record the statistics.

Imports `core.backend`, `core.request_queue`, `core.stats`, `core.types` and `errors`. The scheduler decides
which batch runs where (`core/scheduler.py`); these functions run it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from seawall.core.backend import DecoupledExecution, Execution, ModelInstance
from seawall.core.request_queue import Pending
from seawall.core.stats import StatsRecorder
from seawall.core.types import InferResponse
from seawall.errors import InternalError, SeawallError

logger = logging.getLogger("seawall.core.scheduler")


def answer(pending: Pending, result: InferResponse | SeawallError) -> None:
    """Give a request its response, or its error, now."""
    if pending.future.done():  # the client went away meanwhile
        return
    if isinstance(result, SeawallError):
        pending.future.set_exception(result)
    else:
        pending.future.set_result(result)


#: how `execute_batch` hands each request its result: `answer`, or a scheduler's reorder buffer
Deliver = Callable[[Pending, InferResponse | SeawallError], None]


async def execute_batch(
    instance: ModelInstance, live: list[Pending], stats: StatsRecorder, start: int, deliver: Deliver = answer
) -> None:
    """Run `live` (taken from the queue at `start`) as one execution of `instance`; `deliver` each result."""
    for pending in live:
        pending.instance = instance
    reason = "OTHER"  # an error the model returned for one request
    requests = [p.request for p in live]
    dispatched = time.monotonic_ns()  # compute_input: handing the batch to the instance
    try:
        results = await instance.execute(requests)
        if len(results) != len(live):
            raise InternalError("backend returned a wrong number of responses")
    except SeawallError as error:
        reason, results = "BACKEND", Execution([error] * len(live))
    except Exception:
        logger.exception("model '%s' instance '%s' failed", stats.name, instance.name)
        reason, results = "BACKEND", Execution([InternalError("internal error")] * len(live))
    executed = time.monotonic_ns()
    # the backend says when the model's code ran (compute_infer; before it compute_input, after it
    # compute_output) and how long the batch waited behind earlier ones inside the instance (queue time);
    # only when the batch answered a request: a batch of errors keeps the scheduler's measurement
    ran = results.compute_ns if _answers_any(results) else None
    waited = 0
    if ran is not None and dispatched <= ran[0] <= ran[1] <= executed:
        began, ended = ran
        waited = results.waited_ns if 0 <= results.waited_ns <= began - dispatched else 0
    else:
        began, ended = dispatched, executed
    for pending, result in zip(live, results, strict=True):
        if pending.future.done():
            if pending.future.cancelled():  # the client went away while it ran
                stats.record_failure("CANCELED", time.monotonic_ns() - pending.enqueued_ns)
            continue
        now = time.monotonic_ns()
        if isinstance(result, SeawallError):
            stats.record_failure(reason, now - pending.enqueued_ns)
        else:
            stats.record_success(
                request_ns=now - pending.enqueued_ns,
                queue_ns=start - pending.enqueued_ns + waited,
                input_ns=began - start - waited,
                infer_ns=ended - began,
                output_ns=now - ended,
            )
        deliver(pending, result)
    stats.record_execution(
        sum(p.batch_size for p in live),
        input_ns=began - start - waited,
        infer_ns=ended - began,
        output_ns=time.monotonic_ns() - ended,
    )


def _answers_any(results: Execution) -> bool:
    """Some result is a response, not an error (a loop, not any(generator): every execution asks)."""
    for result in results:
        if isinstance(result, InferResponse):
            return True
    return False


class ResponseOrder:
    """`preserve_ordering`: each batch's results are held until every batch dispatched before it has been
    answered; the instance is free meanwhile. Event loop thread only."""

    def __init__(self) -> None:
        self._held: deque[tuple[list[bool], list[tuple[Pending, InferResponse | SeawallError]]]] = deque()

    async def execute(self, instance: ModelInstance, live: list[Pending], stats: StatsRecorder, start: int) -> None:
        """`execute_batch`, answered in dispatch order."""
        done: list[bool] = [False]
        results: list[tuple[Pending, InferResponse | SeawallError]] = []
        self._held.append((done, results))
        try:
            await execute_batch(instance, live, stats, start, lambda p, r: results.append((p, r)))
        finally:
            done[0] = True
            while self._held and self._held[0][0][0]:
                for pending, result in self._held.popleft()[1]:
                    answer(pending, result)


async def execute_decoupled(instance: ModelInstance, live: list[Pending], stats: StatsRecorder, start: int) -> None:
    """`execute_batch` for a decoupled model: the batch's responses go to its sinks; statistics count the
    execution."""
    reason = "OTHER"
    for pending in live:
        pending.instance = instance
    sinks = [p.sink for p in live]
    dispatched = time.monotonic_ns()
    try:
        execute = getattr(instance, "execute_decoupled", None)
        if execute is None:
            raise InternalError(f"the backend of model '{stats.name}' does not serve decoupled models")
        results: DecoupledExecution = await execute([p.request for p in live], sinks)
        if len(results) != len(live):
            raise InternalError("backend returned a wrong number of results")
    except SeawallError as error:
        reason, results = "BACKEND", DecoupledExecution([error] * len(live))
    except Exception:
        logger.exception("model '%s' instance '%s' failed", stats.name, instance.name)
        reason, results = "BACKEND", DecoupledExecution([InternalError("internal error")] * len(live))
    executed = time.monotonic_ns()
    ran = results.compute_ns
    began, ended = ran if ran is not None and dispatched <= ran[0] <= ran[1] <= executed else (dispatched, executed)
    for pending, result in zip(live, results, strict=True):
        sink = pending.sink
        assert sink is not None
        now = time.monotonic_ns()
        if result is not None:
            sink.fail(result)
        if sink.cancelled and not sink.final:
            stats.record_failure("CANCELED", now - pending.enqueued_ns)
        elif result is not None:
            stats.record_failure(reason, now - pending.enqueued_ns)
        else:
            stats.record_success(
                request_ns=now - pending.enqueued_ns,
                queue_ns=start - pending.enqueued_ns + began - dispatched,
                input_ns=dispatched - start,
                infer_ns=ended - began,
                output_ns=now - ended,
            )
        if not pending.future.done():
            pending.future.set_result(None)
    stats.record_execution(
        sum(p.batch_size for p in live),
        input_ns=dispatched - start,
        infer_ns=ended - began,
        output_ns=time.monotonic_ns() - ended,
    )
