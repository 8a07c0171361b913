"""One python-backend model instance: initializes its stub and turns batches into shared-memory messages.

Imports this package's modules, `core.types` and `errors`. Runs on the event loop thread. The scheduler may run
`pipeline_depth` executions of one instance at once: each uses its own slot (a pair of shared regions), and
the stub runs them one after the other, so it never waits for the host between batches.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import seawall.core.offload as offload
from seawall.backends.python import ipc
from seawall.backends.python.calls import CallServer
from seawall.backends.python.instance_core import InstanceSpec, request_header
from seawall.backends.python.instance_readiness import StubReadiness
from seawall.backends.python.instance_streams import DecoupledStreams
from seawall.backends.python.messages import (
    BatchFailed,
    BatchResult,
    Cancel,
    Execute,
    Init,
    InitFailed,
    Ready,
    RequestHeader,
    ResponseEntry,
    StubMessage,
)
from seawall.backends.python.process import StubDied, StubProcess, StubSettings
from seawall.backends.python.process_io import escape_log
from seawall.backends.python.restarts import RestartBudget
from seawall.core.backend import DecoupledExecution, Execution, ModelCalls, ResponseSink, queued_depth
from seawall.core.custom_metrics import MetricsOwner, ModelMetrics
from seawall.core.types import InferRequest, InferResponse, Tensor
from seawall.errors import InternalError, SeawallError, UnavailableError

logger = logging.getLogger(__name__)

#: Batches whose inputs exceed a default-sized region use only this many slots: every slot's regions grow to
#: the largest batch it carried, and for big tensors the copies, not the round trips, are the cost.
LARGE_BATCH_SLOTS = 2
#: A BLS call's inputs of at least this many bytes in all reach the called model's stub as the caller's sealed
#: region itself (its fd handed on: the stub maps the same pages) instead of a copy into the slot's region; below
#: it the copy costs less than passing and mapping a region (~90 µs; a warm MiB copies in ~150 µs here).
HAND_ON_BYTES = 1 << 20


@dataclass(slots=True)
class _Slot:
    """One in-flight position: the stub's regions `index` (None until opened) and its last reply."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # held from writing inputs to reading outputs
    index: int | None = None
    reply: asyncio.Future[StubMessage] | None = None  # unread only if its execute was cancelled
    seq: int = 0  # the batch it carries now, and its requests (for `cancel`)
    requests: Sequence[InferRequest] = ()
    handed: bool = False  # the stub's input region of this slot is a call's sealed region (`_prepare`)


class PythonModelInstance:
    """A ModelInstance backed by one stub process."""

    def __init__(
        self,
        spec: InstanceSpec,
        settings: StubSettings,
        report_unavailable: Callable[[str], None],
        metrics: ModelMetrics | None = None,
        calls: ModelCalls | None = None,
    ) -> None:
        self._spec = spec
        self._call_server = CallServer(spec.model_name, spec.model_version, calls)  # BLS calls of its stubs
        self._settings = settings
        self._report_unavailable = report_unavailable
        self._metrics = metrics  # the model version's custom metrics: an owner per stub this instance starts
        self._owner: MetricsOwner | None = None
        self._ready = False  # set once initialize succeeded; deaths after that restart the stub
        self._failed = False  # down for good: restarts exhausted or failed
        self._stopped = False
        self._restarts = RestartBudget()  # a crashed stub is started again, within limits (restarts.py)
        self._restart: asyncio.Task[None] | None = None
        self._readiness = StubReadiness(spec.instance_name)  # the model's is_ready(), if it has one
        self._process = self._new_process()
        self._streams = DecoupledStreams(spec, lambda process, seq: seq <= self._seq and process is self._process)
        self._seq = 0
        self._stub_done_ns = 0  # when the stub finished its latest batch (a later one waited until then)
        self._picks = 0
        self._slots = self._new_slots()

    def _new_process(self) -> StubProcess:
        """A stub process (not started), with a fresh owner of custom metrics (a dead stub's are released)."""
        if self._owner is not None:
            self._owner.close()
        self._owner = None if self._metrics is None else self._metrics.owner(self._spec.instance_name)
        spec = self._spec
        names = (f"model={spec.model_name}", f"version={spec.model_version}", f"instance={spec.instance_name}")
        process = StubProcess(spec.instance_name, self._settings, self._on_death, self._owner, names)
        process.on_call = lambda message: self._call_server.serve(process, message)
        process.on_ready_answer = self._readiness.on_answer
        if spec.decoupled:
            process.on_response = lambda message: self._streams.on_response(process, message)
        return process

    @property
    def pipeline_depth(self) -> int:
        """Executions the scheduler may run on this instance at once (the stub queues them)."""
        return queued_depth(self._spec.dynamic_batching)

    def _new_slots(self) -> list[_Slot]:
        return [_Slot(index=0)] + [_Slot() for _ in range(self.pipeline_depth - 1)]

    @property
    def name(self) -> str:
        return self._spec.instance_name

    def is_healthy(self) -> bool:
        """True while the instance serves, or will once its crashed stub has been started again."""
        return self._ready and not self._failed and not self._stopped

    def _on_death(self, reason: str) -> None:
        self._streams.end_all(UnavailableError(f"model instance '{self.name}' crashed"))
        if not self._ready or self._failed or self._stopped or self._restart is not None:
            return  # a death during (re)initialization surfaces as that call's error
        if (down := self._restarts.crashed(self.name)) is not None:
            self._fail(down)
            return
        logger.warning("model instance '%s': starting its stub process again", self.name)
        self._restart = asyncio.get_running_loop().create_task(self._start_again())

    def _fail(self, reason: str) -> None:
        self._failed = True
        logger.error("%s; the instance stays down", reason)
        self._report_unavailable(reason)

    async def _start_again(self) -> None:
        try:
            await self._process.stop(graceful=False)
            self._process = self._new_process()
            self._slots = self._new_slots()  # the new stub has only slot 0's regions; old slots stay with old callers
            await self._initialize()
        except Exception as exc:  # an OSError from spawning included: the instance must not look healthy
            reason = exc.message if isinstance(exc, SeawallError) else type(exc).__name__
            self._fail(f"model instance '{self.name}' crashed and could not be started again: {reason}")
        finally:
            self._restart = None

    async def start(self) -> None:
        """Spawn the stub, load model.py and run initialize(args).

        Raises:
            InternalError: initialize raised (message: exception type and text) or the stub died.
            UnavailableError: the stub did not answer within stub-timeout-seconds.
        """
        await self._initialize()
        self._ready = True

    async def _initialize(self) -> None:
        spec = self._spec
        files, pins = (spec.model_file, spec.version_dir, spec.model_dir), [dict(pins) for pins in spec.pins]
        init = Init(spec.worker or "model", spec.model_name, *files, pins, dict(spec.args), None)
        try:
            await self._process.start()
            if spec.model_region is not None:  # a backend worker's model bytes, before its Init
                self._process.regions.pass_call_region(spec.model_region(), b"m")
            reply = await self._spec.initialize(self._process.call(init), self._settings.timeout_s)
        except UnavailableError:
            await self._process.stop(graceful=False)
            raise
        except StubDied as exc:
            await self._process.stop(graceful=False)
            raise InternalError(f"model instance '{self.name}' stopped during initialization") from exc
        if type(reply) is not Ready:
            failed = reply if type(reply) is InitFailed else InitFailed("unknown error", "")
            await self._process.stop(graceful=False)
            raise self._spec.initialize_failed(failed.error, failed.trace)
        self._readiness.checks = reply.checks_readiness

    async def check_ready(self) -> bool:
        """The model's own readiness: its `is_ready()` asked in its stub (see `StubReadiness`); True if it defines
        none (the version's state alone decides, a stub being started again included)."""
        if not self._readiness.checks:
            return True
        if not self.is_healthy() or not self._process.is_alive:
            return False  # nobody to ask
        return await self._readiness.check(self._process)

    async def stop(self) -> None:
        """Run finalize() and end the stub process (a restart under way is abandoned); idempotent."""
        self._stopped = True
        if self._restart is not None:
            self._restart.cancel()
            await asyncio.gather(self._restart, return_exceptions=True)
        await self._process.stop(graceful=self._ready and self._process.is_alive)
        self._streams.end_all(UnavailableError(f"model instance '{self.name}' was unloaded"))
        await self._call_server.stop()

    async def execute(self, requests: Sequence[InferRequest]) -> Execution:
        """Run one batch in the stub: one message out, one message back (in a free slot).

        Raises:
            UnavailableError: the instance crashed (before or during this batch) and is down.
            InternalError: execute() raised or returned the wrong number of responses.
        """
        process, slot, message = await self._batch(requests)
        owned = True  # this call releases the slot's lock (else the decoding out of its region does, when it ends)
        try:
            try:
                slot.seq, slot.requests = message.seq, requests
                sent = time.monotonic_ns()
                slot.reply, awaited = process.submit_awaited(message, requests)
                reply = await awaited  # a cancelled batch leaves slot.reply to the stub's answer
                slot.requests = ()  # answered: nothing to cancel, and an idle slot must not keep tensors alive
            except StubDied as died:  # (one name per exception type: compiled code types each name once)
                raise UnavailableError(f"model instance '{self.name}' crashed") from died
            waited = self._waited(sent, reply)
            try:
                memory = process.regions.outputs[slot.index or 0]
                if _reply_bytes(reply) > offload.HEAVY_BODY_BYTES:
                    collect = self._collect
                    return await offload.run_holding(slot.lock, collect, requests, message.seq, reply, memory, waited)
                return self._collect(requests, message.seq, reply, memory, waited)  # light: no coroutine more
            except ipc.ProtocolError as exc:
                process.abort(f"bad result: {exc}")
                raise UnavailableError(f"model instance '{self.name}' crashed") from exc
        except offload.StillRunning:
            owned = False  # cancelled while a thread reads the region: the stub must not overwrite it meanwhile
            raise
        finally:
            if owned:
                slot.lock.release()

    def cancel(self, request: InferRequest) -> None:
        """The client of `request` (running here) went away: the model's `request.is_cancelled()` turns true."""
        for slot in self._slots:
            for item, running in enumerate(slot.requests):
                if running is request and slot.reply is not None and not slot.reply.done():
                    self._process.send(Cancel(slot.seq, item))
                    return

    async def execute_decoupled(
        self, requests: Sequence[InferRequest], sinks: Sequence[ResponseSink]
    ) -> DecoupledExecution:
        """Run one batch of a decoupled model: its responses come as Response messages, routed to `sinks`; this
        returns once execute() returned.

        Raises:
            UnavailableError: the instance crashed (before or during this batch) and is down.
            InternalError: execute() raised or returned something else than None.
        """
        process, slot, message = await self._batch(requests)
        try:
            keys: list[tuple[int, int]] = []
            try:
                keys = self._streams.open(process, message.seq, requests, sinks)
                slot.seq, slot.requests = message.seq, ()
                slot.reply, awaited = process.submit_awaited(message)
                reply = await awaited
                slot.requests = ()  # answered: nothing to cancel, and an idle slot must not keep tensors alive
            except StubDied as exc:
                self._streams.forget(keys)
                raise UnavailableError(f"model instance '{self.name}' crashed") from exc
            if type(reply) is BatchFailed and reply.seq == message.seq:
                self._streams.forget(keys)  # the stub closed every sender: the scheduler ends each with the error
                if not reply.trace and not all(sink.cancelled for sink in sinks):
                    # a stream may have ended already: its client never sees this error, the log must
                    logger.error("model instance '%s': execute failed: %s", self.name, escape_log(reply.error))
                raise self._spec.batch_failed(reply.error, reply.trace)
            if type(reply) is not BatchResult or reply.seq != message.seq or reply.responses:
                self._streams.forget(keys)
                process.abort("bad result of a decoupled batch")
                raise UnavailableError(f"model instance '{self.name}' crashed")
            return DecoupledExecution([None] * len(requests), (reply.started_ns, reply.finished_ns))
        finally:
            slot.lock.release()

    async def _batch(self, requests: Sequence[InferRequest]) -> tuple[StubProcess, _Slot, Execute]:
        """The batch's inputs written into a slot, its message, and the stub it was written for (a restart
        replaces `self._process`; the batch stays with its stub). The slot's lock is held: the caller releases it
        once the reply is read (a plain coroutine and a try/finally, not a context manager: this runs per batch).

        Raises:
            UnavailableError: the instance is down, or its stub crashed or was restarted before the batch went.
        """
        if self._restart is not None:
            await asyncio.shield(self._restart)
        process = self._process
        if not self.is_healthy() or not process.is_alive:
            raise UnavailableError(f"model instance '{self.name}' is not available")
        inputs = [tensor for request in requests for tensor in request.inputs]
        payloads = await offload.run(True, _payloads, inputs) if offload.is_heavy(inputs) else _payloads(inputs)
        offsets, total = ipc.layout(payloads)
        slot = self._pick(self._slots if total <= self._settings.shm_default_bytes else self._slots[:LARGE_BATCH_SLOTS])
        await slot.lock.acquire()
        try:
            if slot.reply is not None and not slot.reply.done():
                await asyncio.wait([slot.reply])  # a cancelled batch still owns the regions until answered
            if process is not self._process:
                raise StubDied("restarted")
            return process, slot, self._prepare(process, requests, slot, payloads, offsets, total)
        except BaseException as exc:
            slot.lock.release()
            if isinstance(exc, StubDied):
                raise UnavailableError(f"model instance '{self.name}' crashed") from exc
            raise

    def _pick(self, slots: list[_Slot]) -> _Slot:
        """A free slot, else the next in turn (only direct callers outnumber the scheduler's workers)."""
        for slot in slots:
            if not slot.lock.locked():
                return slot
        self._picks += 1
        return slots[self._picks % len(slots)]

    def _prepare(
        self,
        process: StubProcess,
        requests: Sequence[InferRequest],
        slot: _Slot,
        payloads: list[ipc.Payload],
        offsets: list[int],
        total: int,
    ) -> Execute:
        """Write the inputs into the slot's input region (growing it first if needed); build the message.

        Raises:
            StubDied: a region could not be handed to the stub.
        """
        handed = _handed_inputs(requests, total) if slot.index is not None else None
        if handed is not None:
            offsets = handed[2]
        headers: list[RequestHeader] = []
        index = 0
        for request in requests:
            descriptors: list[ipc.Descriptor] = []
            for tensor in request.inputs:
                descriptors.append([tensor.name, tensor.datatype, tensor.shape, offsets[index], len(payloads[index])])
                index += 1
            headers.append(request_header(request, descriptors))
        self._seq += 1
        inputs_size = outputs_size = 0
        if slot.index is None:
            slot.index, inputs_size, outputs_size = process.regions.open_slot(total)
        if handed is not None:  # the stub maps the call's pages: nothing to copy
            process.regions.hand_inputs(slot.index, handed[0])
            slot.handed, inputs_size = True, handed[1]
            return Execute(self._seq, slot.index, headers, inputs_size, outputs_size)
        memory = process.regions.inputs[slot.index]
        # a slot that carried smaller batches, or kept ones, or whose stub maps a call's region
        if total > len(memory) or _inputs_kept(slot.reply) or slot.handed:
            inputs_size = ipc.grown_size(total, len(memory), self._settings.shm_growth_bytes)
            process.regions.replace_inputs(slot.index, inputs_size)
            memory = process.regions.inputs[slot.index]
            slot.handed = False
        ipc.write_payloads(memory, offsets, payloads)
        return Execute(self._seq, slot.index, headers, inputs_size, outputs_size)

    def _waited(self, sent: int, reply: StubMessage) -> int:
        """How long a batch sent at `sent` waited in the stub behind earlier ones: the stub answers in order, so
        it waited until the previous batch was done (never past the moment the stub took it up)."""
        if type(reply) is not BatchResult:
            return 0
        previous, self._stub_done_ns = self._stub_done_ns, max(self._stub_done_ns, reply.finished_ns)
        return max(0, min(previous, reply.started_ns) - sent)

    def _collect(
        self, requests: Sequence[InferRequest], seq: int, reply: StubMessage, outputs: mmap.mmap, waited: int = 0
    ) -> Execution:
        if type(reply) is BatchFailed and reply.seq == seq:
            raise self._spec.batch_failed(reply.error, reply.trace)
        if type(reply) is not BatchResult or reply.seq != seq:
            raise ipc.ProtocolError("reply does not answer the batch")
        entries = reply.responses
        if len(entries) != len(requests):
            raise ipc.ProtocolError("wrong number of results")
        results = [self._response(request, entry, outputs) for request, entry in zip(requests, entries, strict=True)]
        return Execution(results, (reply.execute_started_ns, reply.execute_finished_ns), waited)

    def _response(self, request: InferRequest, entry: ResponseEntry, memory: mmap.mmap) -> InferResponse | SeawallError:
        if entry.error_code is not None:
            return self._spec.response_error(entry.error_code, entry.error_message)
        if request.callers and _announced_bytes(entry) >= HAND_ON_BYTES:
            # a BLS call's large outputs: the one copy out of the region goes into a sealed region, which goes
            # back to the calling stub whole (calls.py)
            return self._spec.response(request, ipc.read_sealed(memory, entry.outputs), entry.parameters)
        # the one copy out of the region
        outputs = (ipc.read_tensor(memory, d, copy=True) for d in entry.outputs)
        return self._spec.response(request, outputs, entry.parameters)


def _inputs_kept(reply: asyncio.Future[StubMessage] | None) -> bool:
    """Whether the model of a slot's last batch (`reply`) still holds something over the slot's input region: its
    model then keeps seeing those bytes (as on Triton), so the slot's next batch goes into a fresh region."""
    if reply is None or not reply.done() or reply.cancelled() or reply.exception() is not None:
        return False
    answer = reply.result()
    return (type(answer) is BatchResult or type(answer) is BatchFailed) and answer.inputs_kept


def _handed_inputs(requests: Sequence[InferRequest], total: int) -> tuple[int, int, list[int]] | None:
    """A batch of one request of HAND_ON_BYTES or more whose inputs all lie in one sealed call region (a BLS call
    to this model): the region's fd, size and the inputs' offsets in it (`ipc.tensor_views`); else None."""
    return None if len(requests) != 1 or total < HAND_ON_BYTES else ipc.tensor_views(requests[0].inputs)


def _announced_bytes(entry: ResponseEntry, datatype: str = "") -> int:
    """The bytes a response's descriptors (of `datatype` only, if given) announce (validated later, when read)."""
    total = 0
    for descriptor in entry.outputs:
        if len(descriptor) == 5 and (not datatype or descriptor[1] == datatype):
            size = descriptor[4]
            total += size if type(size) is int else 0
    return total


def _payloads(inputs: Sequence[Tensor]) -> list[ipc.Payload]:
    return [ipc.to_payload(tensor.datatype, tensor.data) for tensor in inputs]


def _reply_bytes(reply: StubMessage) -> int:
    """The BYTES output bytes a reply announces (its descriptors are validated later, when read)."""
    return sum(_announced_bytes(entry, "BYTES") for entry in reply.responses) if type(reply) is BatchResult else 0
