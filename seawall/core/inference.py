"""The per-request inference pipeline: what happens to one request once it is bound to a served model.

`InferenceServer.model(name, version)` resolves a request's model to a `ServedModel` (its config, input spec,
raw-input layout and limits: what a frontend needs to decode a request); `ServedModel.infer` then runs the
pipeline: shared-memory inputs, validation, trace, response cache, scheduling, output selection,
classification and shared-memory outputs. The response a backend or the cache returns is never modified: the
caller gets a new one.

Imports other `core` modules, `errors` and `options`; knows nothing about HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

from seawall.core import reshape, tensor_io
from seawall.core.backend import ModelConfig, ResponseSink
from seawall.core.ensemble import EnsembleScheduler
from seawall.core.lifecycle import ModelVersion
from seawall.core.model_config import ModelSpec
from seawall.core.response_cache import ResponseCache, infer_cached
from seawall.core.scheduler import Scheduler
from seawall.core.sequence import SequenceScheduler
from seawall.core.shm import SharedMemoryManager
from seawall.core.trace_file import TraceFile
from seawall.core.types import InferRequest, InferResponse, RawInputSpec, StreamResponse, Tensor
from seawall.core.validation import check_request
from seawall.errors import DecoupledModelError, InvalidArgumentError, OverloadedError, UnavailableError
from seawall.options import Limits


class InferencePipeline:
    """What every request of one server shares: the admission gate, shared memory, traces, the response cache,
    the limits and the count of requests in flight. Owned by the `InferenceServer`; event loop thread only."""

    __slots__ = ("inflight", "limits", "refusal", "response_cache", "shared_memory", "traces")

    def __init__(
        self,
        shared_memory: SharedMemoryManager,
        traces: TraceFile,
        limits: Limits,
        response_cache: ResponseCache | None,
    ) -> None:
        self.shared_memory = shared_memory
        self.traces = traces
        self.limits = limits
        self.response_cache = response_cache  # None: the server has no cache (--cache-config)
        self.refusal: str | None = "Server is not live"  # why requests are refused now; None: accepting
        self.inflight = 0  # requests accepted and not yet answered

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

    def cache_for(self, entry: ModelVersion) -> ResponseCache | None:
        """The response cache, if `entry`'s responses go through it."""
        enabled = entry.config is not None and entry.config.response_cache.enable
        return self.response_cache if enabled else None


class ServedModel:
    """One READY model version bound to its server's pipeline: what a frontend needs to decode a request for
    it, and `infer` to run one. Cheap to make (one per request); holds no state of its own."""

    __slots__ = ("__weakref__", "_entry", "_pipeline", "_scheduler", "spec")

    def __init__(self, entry: ModelVersion, pipeline: InferencePipeline) -> None:
        assert entry.spec is not None and entry.scheduler is not None  # READY versions have both
        self._entry = entry
        self._pipeline = pipeline
        self._scheduler: Scheduler | SequenceScheduler | EnsembleScheduler = entry.scheduler
        self.spec: ModelSpec = entry.spec  # the input and output spec requests are validated against

    @property
    def name(self) -> str:
        return self._entry.name

    @property
    def version(self) -> int:
        return self._entry.version

    @property
    def config(self) -> ModelConfig:
        """The completed configuration of this version."""
        config = self._entry.config
        assert config is not None
        return config

    @property
    def limits(self) -> Limits:
        """The tensor limits every frontend checks while decoding (see `core.raw.checked_shape`)."""
        return self._pipeline.limits

    @property
    def raw_input(self) -> RawInputSpec:
        """The layout of a raw binary request (the whole body is the model's only input)."""
        spec = self.spec
        if not spec.input_order:
            return RawInputSpec("", "", (), spec.max_batch_size, 0)
        first = spec.inputs[spec.input_order[0]]
        return RawInputSpec(first.name, first.datatype, first.dims, spec.max_batch_size, len(spec.input_order))

    async def infer(self, request: InferRequest) -> InferResponse:
        """Validate `request` against this model's config, schedule it on an instance, return a new response.

        Raises:
            UnavailableError: the server is not live or is shutting down.
            OverloadedError: `--max-inflight-requests` are in flight, or the model's queue is full.
            InvalidArgumentError: inputs do not match the config (name, datatype, shape, byte size), or bad
                shared-memory, classification or timeout parameters.
            NotFoundError: an unknown shared-memory region.
            DecoupledModelError: the model is decoupled (its responses are served by `stream` only).
            SeawallError: the model's own error for this request, with its code.
        """
        pipeline, entry, spec = self._pipeline, self._entry, self.spec
        pipeline.check_open()
        if self._scheduler.decoupled:
            raise DecoupledModelError(f"model '{entry.name}' has a decoupled transaction policy: stream its responses")
        if _reads_shm(request):
            await tensor_io.read_shm_inputs(request, pipeline.shared_memory, pipeline.limits)
        batch_size = check_request(request, spec)
        if spec.reshaped:
            request = reshape.model_request(request, spec)
        pipeline.admit()
        traces = pipeline.traces
        trace = traces.begin(request.model_name, entry.version, request.id)
        try:
            if trace is not None:
                trace.stamp("QUEUE_START")
            scheduler, timeout_ns = self._scheduler, _timeout_ns(request)
            cache = pipeline.cache_for(entry)
            if cache is not None:
                response = await infer_cached(
                    cache,
                    request,
                    entry.version,
                    entry.stats,
                    lambda: scheduler.enqueue(request, batch_size, timeout_ns),
                )
            else:
                response = await scheduler.enqueue(request, batch_size, timeout_ns)
        finally:
            pipeline.inflight -= 1
            if trace is not None:
                traces.end(trace)
        # as `_answer`, inline: no coroutine more per request on the hot path
        outputs = response.outputs if not spec.reshaped else reshape.wire_outputs(response.outputs, spec)
        if request.outputs:
            wanted = {o.name for o in request.outputs}
            outputs = [t for t in outputs if t.name in wanted]
            if any(o.parameters for o in request.outputs):
                outputs = await self._requested_outputs(request, outputs)
        return InferResponse(request.model_name, str(entry.version), outputs, request.id, response.parameters)

    async def _answer(self, request: InferRequest, response: InferResponse) -> InferResponse:
        """A new response to `request` from the model's: the requested outputs, with their parameters applied."""
        outputs = response.outputs
        if request.outputs:
            wanted = {o.name for o in request.outputs}
            outputs = [t for t in outputs if t.name in wanted]
            if any(o.parameters for o in request.outputs):
                outputs = await self._requested_outputs(request, outputs)
        return InferResponse(request.model_name, str(self._entry.version), outputs, request.id, response.parameters)

    @property
    def decoupled(self) -> bool:
        """The model may send any number of responses per request (`model_transaction_policy`)."""
        return self._scheduler.decoupled

    async def stream(self, request: InferRequest) -> AsyncGenerator[StreamResponse, None]:
        """Run `request` and yield its response stream, one `StreamResponse` per message, the last `final`.

        A model that is not decoupled yields one message; its errors are raised, as by `infer`, before any
        message. A decoupled model yields its messages as it sends them (a slow reader holds the model back,
        see `ResponseSink`); the errors of the request itself (validation, no ready instance) are raised before
        any message, those of its execution (the model raised, its instance crashed, the queue or request
        timeout expired) come as a final message with `error`. Closing the generator before the final message
        (`aclose()`, or cancelling the task that iterates it) cancels the request: dropped if still queued,
        `is_cancelled()` true in the model otherwise.

        A decoupled request's `timeout` parameter bounds the whole stream (Triton's bounds only its queue wait):
        a model that has not sent its final response by then ends the stream with an error.

        Raises: as `infer`.
        """
        if not self._scheduler.decoupled:
            yield StreamResponse(await self.infer(request), None, True)
            return
        pipeline, entry = self._pipeline, self._entry
        pipeline.check_open()
        if _reads_shm(request):
            await tensor_io.read_shm_inputs(request, pipeline.shared_memory, pipeline.limits)
        batch_size = check_request(request, self.spec)
        timeout_ns = _timeout_ns(request)
        deadline = time.monotonic() + timeout_ns / 1e9 if timeout_ns else None
        sink = ResponseSink()
        assert not isinstance(self._scheduler, SequenceScheduler)  # decoupled sequence models are refused
        pipeline.admit()
        try:
            self._scheduler.submit_stream(request, batch_size, timeout_ns, sink)
        except BaseException:
            pipeline.inflight -= 1
            raise
        traces = pipeline.traces
        trace = traces.begin(request.model_name, entry.version, request.id)
        if trace is not None:
            trace.stamp("QUEUE_START")
        try:
            while True:
                if deadline is None:
                    message = await sink.get()
                else:
                    try:
                        message = await asyncio.wait_for(sink.get(), max(deadline - time.monotonic(), 0.0))
                    except TimeoutError:
                        sink.cancel()
                        yield StreamResponse(None, UnavailableError("Request timeout expired"), True)
                        return
                response = message.response
                if response is not None:
                    message = StreamResponse(await self._answer(request, response), message.error, message.final)
                yield message
                if message.final:
                    return
        finally:
            if not sink.final:
                sink.cancel()  # the reader went away before the end: the request is cancelled
            pipeline.inflight -= 1
            if trace is not None:
                traces.end(trace)

    async def _requested_outputs(self, request: InferRequest, outputs: list[Tensor]) -> list[Tensor]:
        """`outputs` with the classification and shared-memory parameters of the requested outputs applied."""
        batching = self.spec.max_batch_size > 0
        outputs = tensor_io.classify_outputs(request.outputs, outputs, self._entry.labels, batching)
        return await tensor_io.write_shm_outputs(request.outputs, outputs, self._pipeline.shared_memory)


def _reads_shm(request: InferRequest) -> bool:
    """Some input of `request` is in a shared-memory region (a loop, not any(generator): every request asks)."""
    for tensor in request.inputs:
        if tensor.parameters and tensor_io.SHM_REGION in tensor.parameters:
            return True
    return False


def _timeout_ns(request: InferRequest) -> int:
    """The request's queue timeout (`timeout` parameter, microseconds) in nanoseconds; 0 = none.

    Raises: InvalidArgumentError (not a non-negative integer).
    """
    timeout = request.parameters.get("timeout")
    if timeout is None:
        return 0
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise InvalidArgumentError("'timeout' parameter must be a non-negative integer of microseconds")
    return timeout * 1000
