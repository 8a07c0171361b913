"""The per-request inference pipeline: what happens to one request once it is bound to a served model.

`InferenceServer.model(name, version)` resolves a request's model to a `core.served.ServedModel` (what a
frontend needs to decode a request); its `infer` runs `InferencePipeline.infer`: shared-memory inputs,
validation, trace, response cache, scheduling, output selection, classification and shared-memory outputs. The
response a backend or the cache returns is never modified: the caller gets a new one.

Compiled with the request path (`seawall.native_build`); the served model stays interpreted (requests hold it by
weak reference, and its `stream` is an async generator). Imports other `core` modules, `errors` and `options`;
knows nothing about HTTP or gRPC.
"""

from __future__ import annotations

from seawall.core import reshape, tensor_io
from seawall.core.busy_poll import BUSY_POLL_INFLIGHT, BusyPoll
from seawall.core.ensemble import EnsembleScheduler
from seawall.core.lifecycle import ModelVersion
from seawall.core.model_config import ModelSpec
from seawall.core.response_cache import ResponseCache, infer_cached
from seawall.core.scheduler import Scheduler
from seawall.core.sequence import SequenceScheduler
from seawall.core.shm import SharedMemoryManager
from seawall.core.trace_file import TraceFile
from seawall.core.types import InferRequest, InferResponse, Tensor
from seawall.core.validation import check_request
from seawall.errors import DecoupledModelError, InvalidArgumentError, OverloadedError, UnavailableError
from seawall.options import Limits


class InferencePipeline:
    """What every request of one server shares: the admission gate, shared memory, traces, the response cache,
    the limits and the count of requests in flight. Owned by the `InferenceServer`; event loop thread only."""

    __slots__ = ("busy_poll", "inflight", "limits", "refusal", "response_cache", "shared_memory", "traces")

    def __init__(
        self,
        shared_memory: SharedMemoryManager,
        traces: TraceFile,
        limits: Limits,
        response_cache: ResponseCache | None,
        busy_poll: BusyPoll,
    ) -> None:
        self.shared_memory = shared_memory
        self.traces = traces
        self.limits = limits
        self.response_cache = response_cache  # None: the server has no cache (--cache-config)
        self.refusal: str | None = "Server is not live"  # why requests are refused now; None: accepting
        self.inflight = 0  # requests accepted and not yet answered
        self.busy_poll = busy_poll  # kicked by a request admitted at low load

    def check_open(self) -> None:
        """Raises: UnavailableError (the server is not live, or is shutting down)."""
        if self.refusal is not None:
            raise UnavailableError(self.refusal)

    def admit(self) -> None:
        """Count one more request in flight (`inflight`; the caller takes it back off when answered).

        Raises: OverloadedError (`--max-inflight-requests` are in flight already).
        """
        limit = self.limits.max_inflight_requests
        if limit and self.inflight >= limit:
            raise OverloadedError(
                f"the server has {limit} inference requests in flight (--max-inflight-requests); retry later"
            )
        self.inflight += 1
        if self.inflight <= BUSY_POLL_INFLIGHT:
            self.busy_poll.kick()

    def cache_for(self, entry: ModelVersion) -> ResponseCache | None:
        """The response cache, if `entry`'s responses go through it."""
        enabled = entry.config is not None and entry.config.response_cache.enable
        return self.response_cache if enabled else None

    async def infer(
        self,
        entry: ModelVersion,
        spec: ModelSpec,
        scheduler: Scheduler | SequenceScheduler | EnsembleScheduler,
        request: InferRequest,
    ) -> InferResponse:
        """Validate `request` against `spec` (`entry`'s), schedule it on an instance, return a new response.

        Raises:
            UnavailableError: the server is not live or is shutting down.
            OverloadedError: `--max-inflight-requests` are in flight, or the model's queue is full.
            InvalidArgumentError: inputs do not match the config (name, datatype, shape, byte size), or bad
                shared-memory, classification or timeout parameters.
            NotFoundError: an unknown shared-memory region.
            DecoupledModelError: the model is decoupled (its responses are served by `stream` only).
            SeawallError: the model's own error for this request, with its code.
        """
        self.check_open()
        if scheduler.decoupled:
            raise DecoupledModelError(f"model '{entry.name}' has a decoupled transaction policy: stream its responses")
        if reads_shm(request):
            await tensor_io.read_shm_inputs(request, self.shared_memory, self.limits)
        batch_size = check_request(request, spec)
        if spec.reshaped:
            request = reshape.model_request(request, spec)
        self.admit()
        traces = self.traces
        trace = traces.begin(request.model_name, entry.version, request.id)
        try:
            if trace is not None:
                trace.stamp("QUEUE_START")
            timeout = timeout_ns(request)
            cache = self.cache_for(entry)
            if cache is not None:
                response = await infer_cached(
                    cache,
                    request,
                    entry.version,
                    entry.stats,
                    lambda: scheduler.enqueue(request, batch_size, timeout),
                )
            else:
                response = await scheduler.enqueue(request, batch_size, timeout)
        finally:
            self.inflight -= 1
            if trace is not None:
                traces.end(trace)
        # as `answer`, inline: no coroutine more per request on the hot path
        outputs = response.outputs if not spec.reshaped else reshape.wire_outputs(response.outputs, spec)
        if request.outputs:
            wanted = {o.name for o in request.outputs}
            outputs = [t for t in outputs if t.name in wanted]
            if any(o.parameters for o in request.outputs):
                outputs = await self._requested_outputs(entry, spec, request, outputs)
        return InferResponse(request.model_name, str(entry.version), outputs, request.id, response.parameters)

    async def answer(
        self, entry: ModelVersion, spec: ModelSpec, request: InferRequest, response: InferResponse
    ) -> InferResponse:
        """A new response to `request` from the model's: the requested outputs, with their parameters applied."""
        outputs = response.outputs
        if request.outputs:
            wanted = {o.name for o in request.outputs}
            outputs = [t for t in outputs if t.name in wanted]
            if any(o.parameters for o in request.outputs):
                outputs = await self._requested_outputs(entry, spec, request, outputs)
        return InferResponse(request.model_name, str(entry.version), outputs, request.id, response.parameters)

    async def _requested_outputs(
        self, entry: ModelVersion, spec: ModelSpec, request: InferRequest, outputs: list[Tensor]
    ) -> list[Tensor]:
        """`outputs` with the classification and shared-memory parameters of the requested outputs applied."""
        outputs = tensor_io.classify_outputs(request.outputs, outputs, entry.labels, spec.max_batch_size > 0)
        return await tensor_io.write_shm_outputs(request.outputs, outputs, self.shared_memory)


def reads_shm(request: InferRequest) -> bool:
    """Some input of `request` is in a shared-memory region (a loop, not any(generator): every request asks)."""
    for tensor in request.inputs:
        if tensor.parameters and tensor_io.SHM_REGION in tensor.parameters:
            return True
    return False


def timeout_ns(request: InferRequest) -> int:
    """The request's queue timeout (`timeout` parameter, microseconds) in nanoseconds; 0 = none.

    Raises: InvalidArgumentError (not a non-negative integer).
    """
    timeout = request.parameters.get("timeout")
    if timeout is None:
        return 0
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise InvalidArgumentError("'timeout' parameter must be a non-negative integer of microseconds")
    return timeout * 1000
