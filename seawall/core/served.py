"""A served model: one READY model version bound to its server's inference pipeline (`core.inference`).

`InferenceServer.model(name, version)` makes one per request: its config, input spec, raw-input layout and
limits are what a frontend needs to decode the request; `infer` runs the pipeline, `stream` a decoupled model's
response stream. Interpreted (not in `seawall.native_build`): residency holds served models by weak reference
and `stream` is an async generator, neither of which a compiled class has.

Imports other `core` modules, `errors` and `options`; knows nothing about HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Coroutine
from typing import Any

from seawall.core import tensor_io
from seawall.core.backend import ModelConfig, ResponseSink
from seawall.core.ensemble import EnsembleScheduler
from seawall.core.inference import InferencePipeline, reads_shm, timeout_ns
from seawall.core.lifecycle import ModelVersion
from seawall.core.model_config import ModelSpec
from seawall.core.scheduler import Scheduler
from seawall.core.sequence import SequenceScheduler
from seawall.core.types import InferRequest, InferResponse, RawInputSpec, StreamResponse
from seawall.core.validation import check_request
from seawall.errors import UnavailableError
from seawall.options import Limits


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

    @property
    def decoupled(self) -> bool:
        """The model may send any number of responses per request (`model_transaction_policy`)."""
        return self._scheduler.decoupled

    def infer(self, request: InferRequest) -> Coroutine[Any, Any, InferResponse]:
        """Run `request`: the pipeline's coroutine (`InferencePipeline.infer`, compiled), returned to be awaited
        rather than awaited here, so that no interpreted frame sits on the path of every request.

        Raises (when awaited): as `InferencePipeline.infer`.
        """
        return self._pipeline.infer(self._entry, self.spec, self._scheduler, request)

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
        pipeline, entry, spec = self._pipeline, self._entry, self.spec
        pipeline.check_open()
        if reads_shm(request):
            await tensor_io.read_shm_inputs(request, pipeline.shared_memory, pipeline.limits)
        batch_size = check_request(request, spec)
        timeout = timeout_ns(request)
        deadline = time.monotonic() + timeout / 1e9 if timeout else None
        sink = ResponseSink()
        assert not isinstance(self._scheduler, SequenceScheduler)  # decoupled sequence models are refused
        pipeline.admit()
        try:
            self._scheduler.submit_stream(request, batch_size, timeout, sink)
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
                    answer = await pipeline.answer(entry, spec, request, response)
                    message = StreamResponse(answer, message.error, message.final)
                yield message
                if message.final:
                    return
        finally:
            if not sink.final:
                sink.cancel()  # the reader went away before the end: the request is cancelled
            pipeline.inflight -= 1
            if trace is not None:
                traces.end(trace)
