"""The sequence batcher (`sequence_batching`): requests of one sequence run in order, with their control inputs and
implicit state, on the slot the sequence holds.

Imports `core.backend`, `core.request_queue`, `core.sequence_policy`, `core.sequence_slots`, `core.stats`,
`core.types`, `errors`. Which sequence holds which slot (and the backlog) is `core.sequence_slots`'s bookkeeping;
this module runs the requests: queueing, batching, control inputs and states, statistics, the idle timeout.

A sequence (a `sequence_id` whose first request has `sequence_start`) holds a slot until its END request ran or it
was idle for `max_sequence_idle_microseconds`, and all its requests run on its slot's instance (as in Triton, whose
batchers are per instance: a model may keep a sequence's state in the instance). One execution takes at most one
request per sequence. Direct strategy: an instance has `max(1, max_batch_size)` slots. Oldest strategy: an instance
has `max_candidate_sequences` slots; an execution takes the sequences whose next request is oldest, at most
`max_batch_size`, waiting up to `max_queue_delay_microseconds` for a preferred size.
A START for a new sequence with every slot taken waits (the backlog) for one to free, as in Triton.

Each request gets its control tensors (START/END/READY/CORRID) and the state inputs (the initial state at START);
the state outputs of its response are kept for the next request of the sequence, and answered to the client only
when the configuration lists them as outputs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from seawall.core.backend import Execution, ModelInstance
from seawall.core.request_queue import drain
from seawall.core.sequence_policy import SequencePolicy
from seawall.core.sequence_slots import LiveSequence, Pending, SlotTable
from seawall.core.stats import StatsRecorder
from seawall.core.types import InferRequest, InferResponse, Tensor
from seawall.errors import InternalError, InvalidArgumentError, SeawallError, UnavailableError

logger = logging.getLogger(__name__)


#: shapes of client inputs whose null-request tensors one model keeps
_MAX_NULL_SHAPES = 16


class SequenceScheduler:
    """Schedules the requests of a sequence model version on its instances; owns one worker per instance and the
    idle-sequence reaper, which `stop()` cancels. Event loop thread only."""

    decoupled = False  # decoupled sequence models are refused at load

    def __init__(self, instances: Sequence[ModelInstance], policy: SequencePolicy, stats: StatsRecorder) -> None:
        self._instances = list(instances)
        self._policy = policy
        self._stats = stats
        self._slots = SlotTable(self._instances, policy.slots_per_instance)
        self._wakeup = asyncio.Event()  # a request arrived or a slot's request finished
        self._reaper: asyncio.TimerHandle | None = None  # the next look for idle sequences (none: none can be)
        self._null_inputs: dict[tuple[tuple[str, str, tuple[int, ...]], ...], list[Tensor]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # kept: get_running_loop() costs a getpid() (3.11)
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self._stopped = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._work(instance)) for instance in self._instances]

    async def stop(self, drain_secs: float = 0.0) -> None:
        """Refuse new requests, let queued and running ones finish for up to `drain_secs`, fail the rest; idempotent."""
        self._stopped = True
        await drain(lambda: bool(self.inflight()) and any(i.is_healthy() for i in self._instances), drain_secs)
        self._fail_all(UnavailableError("model is being unloaded"))
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def inflight(self) -> int:
        return self._slots.queued() + self._busy

    async def enqueue(self, request: InferRequest, batch_size: int, timeout_ns: int = 0) -> InferResponse:
        """Queue `request` behind the earlier requests of its sequence and wait for its response.

        Raises:
            InvalidArgumentError: a batch of more than one, no sequence id, one of the wrong type, or a request
                of an unknown sequence without START (Triton's messages).
            UnavailableError: the model is being unloaded or has no healthy instance.
            SeawallError: the model's error for this request.
        """
        policy = self._policy
        if self._stopped or not any(i.is_healthy() for i in self._instances):
            raise UnavailableError(f"model '{self._stats.name}' is not ready: no healthy instance")
        if policy.max_batch_size > 0 and batch_size != 1:
            raise InvalidArgumentError(
                f"inference request to model '{self._stats.name}' must specify batch-size 1 due to requirements of "
                "sequence batcher"
            )
        sequence_id = policy.sequence_id(request)
        start = request.parameters.get("sequence_start") is True
        end = request.parameters.get("sequence_end") is True
        sequence = self._slots.get(sequence_id)
        if not start and (sequence is None or (sequence.ended and not sequence.queue)):
            raise InvalidArgumentError(
                f"inference request for sequence {sequence_id} to model '{self._stats.name}' must specify the "
                "START flag on the first request of the sequence"
            )
        if sequence is None:
            sequence = self._slots.admit(sequence_id)
        future: asyncio.Future[InferResponse] = (self._loop or asyncio.get_running_loop()).create_future()
        pending = Pending(request, batch_size, start, end, future, time.monotonic_ns())
        sequence.queue.append(pending)
        self._stats.pending += 1
        self._wakeup.set()
        try:
            return await future
        except asyncio.CancelledError:
            if pending in sequence.queue:  # not running yet: it leaves the queue
                sequence.queue.remove(pending)
                self._stats.pending -= 1
                self._stats.record_failure("CANCELED", time.monotonic_ns() - pending.enqueued_ns)
                self._arm_reaper()  # its sequence may be idle now
            raise

    def _release(self, sequence: LiveSequence) -> None:
        """Free the slot of `sequence` (ended, idle or failed) for the oldest sequence of the backlog."""
        if self._slots.release(sequence):
            self._wakeup.set()

    async def _work(self, instance: ModelInstance) -> None:
        policy = self._policy
        while instance.is_healthy():
            ready = self._slots.ready(instance)
            if not ready:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if policy.max_queue_delay_ns and len(ready) < self._enough(instance):
                ready = await self._wait_for_more(instance, ready)
                if not ready:
                    continue
            batch = ready[: policy.batch_limit]
            for sequence in batch:
                sequence.running = True
            try:
                await self._run(instance, batch if policy.oldest else self._slots.in_slot_order(instance))
            finally:
                for sequence in batch:
                    sequence.running = False
                    self._after(sequence)
                self._wakeup.set()
                self._arm_reaper()  # a sequence of the batch may be idle now
            # one turn of the loop before the next batch: the callers of this one answer their clients and the
            # requests that came meanwhile are read, so the next batch holds more sequences (sequence bench, HTTP
            # JSON c=32: 4.25 against 3.3 requests per execution, 7610-8092 against 6135-6623 req/s; gRPC c=8
            # 3447-3982 against 3144-3441; dispatching at once kept HTTP JSON c=8 7 % ahead, 8032-8305 against
            # 7240-7795, but lost everywhere else)
            await asyncio.sleep(0)
        # the instance is gone: so are its sequences (their state may have lived in it)
        error = UnavailableError(f"model '{self._stats.name}' instance '{instance.name}' is not available")
        for sequence in self._slots.held(instance):
            self._fail(sequence, error)
            self._release(sequence)
        if not any(i.is_healthy() for i in self._instances):
            self._fail_all(UnavailableError(f"model '{self._stats.name}' is not ready: no healthy instance"))

    def _enough(self, instance: ModelInstance) -> int:
        """How many ready sequences end the wait for more: a preferred (or the largest) batch for oldest; for
        direct the instance's slots in use, or `minimum_slot_utilization` of its slots."""
        policy = self._policy
        if policy.oldest:
            return policy.preferred_batch_sizes[0] if policy.preferred_batch_sizes else policy.batch_limit
        held = len(self._slots.held(instance))
        if policy.minimum_slot_utilization > 0:
            held = min(held, max(1, int(policy.minimum_slot_utilization * policy.slots_per_instance + 0.999999)))
        return held

    async def _wait_for_more(self, instance: ModelInstance, ready: list[LiveSequence]) -> list[LiveSequence]:
        """Wait up to the queue delay (from the oldest ready request) for `_enough` sequences to be ready."""
        deadline = ready[0].queue[0].enqueued_ns + self._policy.max_queue_delay_ns
        while len(ready) < self._enough(instance):
            remaining = deadline - time.monotonic_ns()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining / 1e9)
            except TimeoutError:
                pass
            ready = self._slots.ready(instance)
        return self._slots.ready(instance)

    def _after(self, sequence: LiveSequence) -> None:
        """After a request of `sequence` ran: an ended sequence gives its slot up unless a new START is queued;
        queued requests that do not START it again are refused."""
        sequence.last_ns = time.monotonic_ns()
        if not sequence.ended:
            return
        while sequence.queue and not sequence.queue[0].start:
            pending = sequence.queue.popleft()
            self._stats.pending -= 1
            self._stats.record_failure("OTHER", time.monotonic_ns() - pending.enqueued_ns)
            if not pending.future.done():
                pending.future.set_exception(
                    InvalidArgumentError(
                        f"inference request for sequence {sequence.id} to model '{self._stats.name}' must specify "
                        "the START flag on the first request of the sequence"
                    )
                )
        if not sequence.queue:
            self._release(sequence)

    def _request(self, sequence: LiveSequence, pending: Pending) -> InferRequest:
        """The request the model gets for `pending` (the sequence's states reset at START)."""
        if pending.start:
            sequence.state = {s.input_name: s.initial for s in self._policy.states}
            sequence.ended = False
        sequence.ended = sequence.ended or pending.end
        return self._policy.model_request(pending.request, sequence.id, pending.start, pending.end, sequence.state)

    async def _run(self, instance: ModelInstance, batch: Sequence[LiveSequence | None]) -> None:
        start = time.monotonic_ns()
        live: list[tuple[LiveSequence, Pending]] = []
        requests: list[InferRequest | None] = []
        for sequence in batch:
            if sequence is None:
                requests.append(None)
                continue
            pending = sequence.queue.popleft()
            self._stats.pending -= 1
            live.append((sequence, pending))
            requests.append(self._request(sequence, pending))
        template = live[0][1].request  # a client's request: the inputs a null request gets zeros of
        padded = [r if r is not None else self._null_request(template) for r in requests]
        self._busy += len(live)
        dispatched = time.monotonic_ns()
        reason = "OTHER"
        try:
            answered = await instance.execute(padded)
            if len(answered) != len(padded):
                raise InternalError("backend returned a wrong number of responses")
            results = Execution((a for a, r in zip(answered, requests, strict=True) if r is not None))
        except SeawallError as error:
            reason, results = "BACKEND", Execution([error] * len(live))
        except Exception:
            logger.exception("model '%s' instance '%s' failed", self._stats.name, instance.name)
            reason, results = "BACKEND", Execution([InternalError("internal error")] * len(live))
        finally:
            self._busy -= len(live)
        executed = time.monotonic_ns()
        for (sequence, pending), result in zip(live, results, strict=True):
            now = time.monotonic_ns()
            if isinstance(result, SeawallError):
                self._stats.record_failure(reason, now - pending.enqueued_ns)
                if not pending.future.done():
                    pending.future.set_exception(result)
                continue
            result = self._keep_state(sequence, result)
            self._stats.record_success(
                request_ns=now - pending.enqueued_ns,
                queue_ns=start - pending.enqueued_ns,
                input_ns=dispatched - start,
                infer_ns=executed - dispatched,
                output_ns=now - executed,
            )
            if not pending.future.done():
                pending.future.set_result(result)
        self._stats.record_execution(
            sum(p.batch_size for _, p in live) + len(padded) - len(live),
            inferences=sum(p.batch_size for _, p in live),
            input_ns=dispatched - start,
            infer_ns=executed - dispatched,
            output_ns=time.monotonic_ns() - executed,
        )

    def _keep_state(self, sequence: LiveSequence, response: InferResponse) -> InferResponse:
        """Keep the state outputs of `response` for the sequence's next request; the client gets the others."""
        states = self._policy.states
        if not states:
            return response
        names = {s.output_name: s for s in states}
        outputs = []
        for tensor in response.outputs:
            state = names.get(tensor.name)
            if state is not None:
                sequence.state[state.input_name] = tensor.data
            if state is None or state.is_output:
                outputs.append(tensor)
        response.outputs = outputs
        return response

    def _null_request(self, template: InferRequest) -> InferRequest:
        """`SequencePolicy.null_request`, its input tensors made once per shape of the client's inputs (their
        arrays are read-only: every null request of that shape shares them)."""
        key = tuple((t.name, t.datatype, t.shape) for t in template.inputs)
        inputs = self._null_inputs.get(key)
        if inputs is None:
            inputs = self._policy.null_request(template).inputs
            for tensor in inputs:
                tensor.data.setflags(write=False)
            if len(self._null_inputs) < _MAX_NULL_SHAPES:
                self._null_inputs[key] = inputs
        return InferRequest(template.model_name, list(inputs), template.model_version)

    def _arm_reaper(self) -> None:
        """Make sure the reaper looks again by the time the idle timeout of a sequence idle from now expires.
        An armed reaper is never late for it: it was armed for a sequence idle since earlier."""
        if self._reaper is None and not self._stopped:
            loop = self._loop or asyncio.get_running_loop()
            self._reaper = loop.call_later(self._policy.idle_ns / 1e9, self._reap)

    def _reap(self) -> None:
        """Release the slots of sequences idle (nothing queued or running) for longer than the idle timeout, and
        come back when the next idle one expires."""
        self._reaper = None
        expired, next_ns = self._slots.idle(time.monotonic_ns(), self._policy.idle_ns)
        for sequence in expired:
            logger.debug("sequence %s of model '%s' idle: its slot is released", sequence.id, self._stats.name)
            self._release(sequence)
        if next_ns and not self._stopped:
            loop = self._loop or asyncio.get_running_loop()
            self._reaper = loop.call_later(max(next_ns - time.monotonic_ns(), 0) / 1e9, self._reap)

    def _fail(self, sequence: LiveSequence, error: SeawallError) -> None:
        while sequence.queue:
            pending = sequence.queue.popleft()
            self._stats.pending -= 1
            if not pending.future.done():
                pending.future.set_exception(error)

    def _fail_all(self, error: SeawallError) -> None:
        for sequence in self._slots.sequences():
            self._fail(sequence, error)
        self._slots.clear_backlog()
