"""The seam between the core and backends: what a backend loads and how the core executes it.

Imports only `core.types`, `core.model_config`, `errors` and protobuf. Backends implement these Protocols;
the core never imports a backend module: the composition root (`app.py`) builds the backends
(`backends/registry.py`) and hands them to the core as a `BackendLookup`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from seawall.core.config_proto import ModelConfig as ModelConfig
from seawall.core.custom_metrics import ModelMetrics
from seawall.core.types import InferRequest, InferResponse, StreamResponse
from seawall.errors import SeawallError


class ModelCalls(Protocol):
    """What a model's own code may ask of the server it runs in (the python backend's BLS and model control).

    The core provides it (`ModelLoadContext.calls`); transport-free, and internal: no API restriction applies.
    Calls run on the event loop thread.
    """

    async def infer(self, request: InferRequest) -> InferResponse:
        """Run `request` on any loaded model through the core (scheduling, batching, statistics).

        `request.callers` names the model versions whose executions made this call: a call that would wait for
        an instance those executions hold fails at once instead of waiting forever.

        Raises:
            SeawallError: the call failed; `message` is Triton's BLS error text, `code` its code.
        """
        ...

    def infer_stream(self, request: InferRequest) -> AsyncIterator[StreamResponse]:
        """Run `request` and yield its response stream (BLS `exec(decoupled=True)`), the last message `final`:
        every response of a decoupled model, or the one response of a model that is not.

        Raises (before the first message; the errors of the execution come as a final message with `error`):
            SeawallError: the call failed; `message` is Triton's BLS error text, `code` its code.
        """
        ...

    def is_model_ready(self, name: str, version: str) -> bool:
        """False for a model or version the server does not serve (an invalid name or version included)."""
        ...

    async def load_model(self, name: str, config_json: str, files: Mapping[str, bytes], caller: str) -> None:
        """Load or reload a model (explicit control mode only), audited like the repository API.

        Raises: SeawallError (as the repository API's load, e.g. UnavailableError outside explicit mode).
        """
        ...

    async def unload_model(self, name: str, unload_dependents: bool, caller: str) -> None:
        """Unload a model (explicit control mode only), audited. Raises: SeawallError."""
        ...


@dataclass(frozen=True, slots=True)
class ModelLoadContext:
    """Everything a backend needs to load one version of one model.

    `config` is the final, completed configuration; backends must not mutate it.
    `report_unavailable(reason)` tells the core the model can no longer serve (e.g. a stub process died);
    it may be called from the event loop thread only.
    """

    name: str
    version: int
    config: ModelConfig
    model_dir: str  # <repository>/<model>, resolved
    version_dir: str  # <model_dir>/<version>, resolved
    backend_settings: Mapping[str, str]  # --backend-config values for this backend (globals included)
    auto_complete: bool
    report_unavailable: Callable[[str], None]
    # the config came through the load API (a `config` override, with or without `file:` code), not from the
    # repository: settings only the repository's operator may choose must be refused
    config_from_client: bool = False
    # the model's own metric families (pb_utils.MetricFamily): an owner per instance; the core releases them
    # all when the version unloads. None: the embedding server keeps no custom metrics.
    custom_metrics: ModelMetrics | None = None
    # what the model's code may ask of the server (BLS, model control); None: nothing (a backend used alone)
    calls: ModelCalls | None = None


class Execution(list[InferResponse | SeawallError]):
    """What `ModelInstance.execute` returns: one entry per request, in order (a response or that request's
    error), `compute_ns`, when the model's own code started and finished running the batch (time.monotonic_ns();
    Triton's compute_infer: the time before is compute_input, the time after compute_output), and `waited_ns`,
    how long the batch waited inside the instance behind earlier ones (queue time, not compute_input).

    `compute_ns` None: the scheduler's own measurement around the call stands. A pipelining instance must set
    both, since a batch it accepted may wait behind earlier ones. The timing travels here, beside the responses,
    and never on the public `InferResponse`.
    """

    __slots__ = ("compute_ns", "waited_ns")

    def __init__(
        self,
        results: Iterable[InferResponse | SeawallError] = (),
        compute_ns: tuple[int, int] | None = None,
        waited_ns: int = 0,
    ) -> None:
        super().__init__(results)
        self.compute_ns = compute_ns
        self.waited_ns = waited_ns


class DecoupledExecution(list[SeawallError | None]):
    """What `DecoupledModelInstance.execute_decoupled` returns once the model's execute returned: per request,
    in order, None or that request's error; `compute_ns` as in `Execution`."""

    __slots__ = ("compute_ns",)

    def __init__(self, results: Iterable[SeawallError | None] = (), compute_ns: tuple[int, int] | None = None) -> None:
        super().__init__(results)
        self.compute_ns = compute_ns


#: the largest `ModelInstance.pipeline_depth` the scheduler honours
MAX_PIPELINE_DEPTH = 8
#: The depths of instances that queue batches (a python stub, a runtime's or an in-process model's thread).
#: Without dynamic batching, 8: the instance takes the next batch without waiting for the event loop between
#: them and rarely sleeps (add_sub over HTTP at c=32 with stubs: 1.6x the throughput of depth 2, 127 vs 216 us
#: CPU per inference; an ONNX MLP in process at c=8: 3.6k -> 7.6k req/s). With dynamic batching one batch ahead
#: is enough, and deeper pipelines would split the batches the scheduler forms. Requests with a queue timeout
#: still wait in the scheduler's queue for an idle instance (core/scheduler.py), and an instance reports when
#: each batch really ran, so waiting in its pipeline counts as queue time, as in Triton.
PIPELINE_DEPTH = 8
BATCHING_PIPELINE_DEPTH = 2


def queued_depth(dynamic_batching: bool) -> int:
    """The depth of an instance that queues batches: `BATCHING_PIPELINE_DEPTH` with a dynamic batcher."""
    return BATCHING_PIPELINE_DEPTH if dynamic_batching else PIPELINE_DEPTH


class ModelInstance(Protocol):
    """One instance of an instance group."""

    @property
    def name(self) -> str: ...

    @property
    def pipeline_depth(self) -> int:
        """How many executions of this instance the core may run at once, 1 to `MAX_PIPELINE_DEPTH` (the
        scheduler treats any other value as 1).

        1: one batch at a time. More: the instance queues the next batches while it runs one (the python
        backend's stub does), and must answer its executions in the order they were started, each with its
        `Execution.compute_ns`.
        """
        ...

    def is_healthy(self) -> bool:
        """False once the instance can no longer execute (its process died, say)."""
        ...

    # Optional (looked up with getattr, so backends without it still conform):
    # `def cancel(self, request: InferRequest) -> None`: the client of `request`, which this instance is running,
    # went away; the model may see it (`is_cancelled()`). Event loop thread.
    # `async def check_ready(self) -> bool`: the model's own readiness (a python model's `is_ready()`), asked at
    # every model-readiness check (`InferenceServer.model_ready_checked`); False makes the model not ready.

    async def execute(self, requests: Sequence[InferRequest]) -> Execution:
        """Run a batch; one entry per request, in order: a response or that request's error.

        Raises:
            SeawallError: the whole batch failed (every request gets this error).
        """
        ...


def pipeline_depth(instance: ModelInstance) -> int:
    """How many executions `instance` accepts at once: its `pipeline_depth` when 1 to 8, else 1."""
    depth = instance.pipeline_depth
    return depth if type(depth) is int and 1 <= depth <= MAX_PIPELINE_DEPTH else 1


class Model(Protocol):
    """A loaded model version: its instances, and how to unload it."""

    @property
    def instances(self) -> Sequence[ModelInstance]: ...

    async def unload(self) -> None:
        """Finalize and release every instance; idempotent."""
        ...


class Backend(Protocol):
    """A kind of model (python, onnxruntime, pytorch, plugins)."""

    @property
    def name(self) -> str: ...

    async def auto_complete_config(self, config: ModelConfig, model_dir: str, version_dir: str) -> ModelConfig:
        """Fill what the backend can derive (inputs, outputs, max_batch_size); may run model code.

        Raises:
            SeawallError: the model's completion hook failed or produced an invalid config.
        """
        ...

    async def load(self, context: ModelLoadContext) -> Model:
        """Load one model version with all its instances.

        Raises:
            SeawallError: the model cannot be loaded; the message becomes the UNAVAILABLE reason.
        """
        ...

    async def stop(self) -> None:
        """Release backend-wide resources at server shutdown; idempotent."""
        ...


#: messages a decoupled request's sink holds for its reader before the backend is asked to hold back
SINK_BUFFER = 64


class ResponseSink:
    """Where a decoupled model's responses to one request go, in order, until one is `final`.

    The scheduler makes one per request of a decoupled model and hands it to `execute_decoupled`; the backend
    `put`s each response (or error) as the model sends it, before or after `execute_decoupled` returned, and the
    core's reader (`ServedModel.stream`) takes them with `get`. Buffering is bounded by agreement: `put` always
    accepts, but once `is_full` the backend holds the model back (`when_drained` calls it back once the reader
    caught up). `cancel()` (the reader went away, or gave up) drops what is buffered, refuses later `put`s and
    calls the `on_cancel` callbacks, through which the backend tells the model (`is_cancelled()`).

    Event loop thread only.
    """

    __slots__ = ("_buffer", "_cancel_callbacks", "_drain_callbacks", "_waiter", "cancelled", "final")

    def __init__(self) -> None:
        self._buffer: deque[StreamResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._cancel_callbacks: list[Callable[[], None]] = []
        self._drain_callbacks: list[Callable[[], None]] = []
        self.final = False  # the final message was put
        self.cancelled = False  # the reader gave up: nothing more is wanted

    @property
    def is_full(self) -> bool:
        return len(self._buffer) >= SINK_BUFFER

    def put(self, response: InferResponse | None, error: SeawallError | None, final: bool) -> bool:
        """Queue one message for the reader; False (and nothing queued) once final or cancelled."""
        if self.final or self.cancelled:
            return False
        self.final = final
        self._buffer.append(StreamResponse(response, error, final))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def fail(self, error: SeawallError) -> None:
        """End the stream with `error` unless it has ended already."""
        self.put(None, error, True)

    async def get(self) -> StreamResponse:
        """The next message, waiting for it (the reader's side; one reader)."""
        while not self._buffer:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._buffer.popleft()
        if self._drain_callbacks and len(self._buffer) < SINK_BUFFER // 2:
            self._run(self._drain_callbacks)
        return message

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the reader has taken enough (or cancelled); at once if not full."""
        if self.cancelled or not self.is_full:
            callback()
        else:
            self._drain_callbacks.append(callback)

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the reader cancels (at once if it has)."""
        if self.cancelled:
            callback()
        else:
            self._cancel_callbacks.append(callback)

    def cancel(self) -> None:
        """The reader wants nothing more: drop the buffer, release a held-back backend, tell the model; idempotent."""
        if self.cancelled:
            return
        self.cancelled = True
        self._buffer.clear()
        self._run(self._drain_callbacks)
        self._run(self._cancel_callbacks)

    @staticmethod
    def _run(callbacks: list[Callable[[], None]]) -> None:
        pending = list(callbacks)
        callbacks.clear()
        for callback in pending:
            callback()


class DecoupledModelInstance(ModelInstance, Protocol):
    """An instance that serves decoupled models (`model_transaction_policy { decoupled: true }`)."""

    async def execute_decoupled(
        self, requests: Sequence[InferRequest], sinks: Sequence[ResponseSink]
    ) -> DecoupledExecution:
        """Start a batch whose responses go to `sinks` (one per request, in order); returns once the model's
        execute returned (responses may still follow). An error in the result is put in that request's sink as
        its final message by the scheduler, unless the model ended the stream already.

        Raises:
            SeawallError: the whole batch failed.
        """
        ...


class BackendLookup(Protocol):
    """What the core needs of the backends: each by name, and a stop of them all.

    The composition root builds it (`backends/registry.py`, with the plugins of --backend-directory) and
    hands it to the core, which never imports a backend.
    """

    def get(self, name: str) -> Backend:
        """The backend called `name`, created on first use.

        Raises:
            SeawallError: no such backend, or it cannot be created (the message says why).
        """
        ...

    async def stop(self) -> None:
        """Stop every backend created so far, after the core has unloaded its models; idempotent."""
        ...
