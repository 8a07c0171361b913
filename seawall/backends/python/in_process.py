"""Python-backend instances that run `model.py` inside the server process: the SEAWALL_IN_PROCESS opt-in.

Imports `instance_core`, `process`, `user_model`, `ipc`, `core.types` and `errors`. Each instance owns one worker
thread that runs every hook of its model; the event loop only hands batches over and takes results back.
There is no crash isolation: a segfault or os._exit in model code ends the server (logged at load).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Sequence
from types import ModuleType
from typing import TypeVar

import numpy as np

from seawall.backends.python import in_process_calls, ipc
from seawall.backends.python.in_process_runtime import (
    Cancelled,
    OwnerSink,
    SinkCancels,
    Worker,
    thread_model,
)
from seawall.backends.python.instance_core import InstanceSpec, request_header
from seawall.backends.python.instance_readiness import READY_CHECK_S
from seawall.backends.python.model_source import ModelSource, RepositoryFinder
from seawall.backends.python.process import StubSettings
from seawall.backends.python.process_io import escape_log
from seawall.backends.python.user_model import (
    BatchError,
    UserModel,
    UserObject,
    describe,
    drop_modules,
    load_from_repository,
    refuse_shadowing,
)
from seawall.core.backend import PIPELINE_DEPTH, DecoupledExecution, Execution, ModelCalls, ModelConfig, ResponseSink
from seawall.core.custom_metrics import ModelMetrics
from seawall.core.types import NUMPY_DTYPES, InferRequest, InferResponse
from seawall.errors import InternalError, InvalidArgumentError, SeawallError, UnavailableError

logger = logging.getLogger(__name__)

#: The model configuration parameter that opts a python model into in-process execution.
PARAMETER = "SEAWALL_IN_PROCESS"
#: Inline batches run back to back without suspending, so the scheduler would drain its whole queue before any
#: reply is written or request read; after this much time it yields to the loop once (bounds the wait).
INLINE_YIELD_S = 0.0005
#: sys.meta_path is process-wide: a model file's version directory is searched by name during one load at a time.
_SYS_PATH_LOCK = threading.Lock()

_T = TypeVar("_T")


def in_process_mode(config: ModelConfig, model_name: str) -> str:
    """The config's SEAWALL_IN_PROCESS: "false" (the default: a stub process), "true" (a worker thread of the
    server) or "inline" (execute() on the event loop thread itself, for models that answer in microseconds:
    no thread hand-over, but a slow execute() delays every request of the server while it runs).

    Raises:
        InvalidArgumentError: any other value.
    """
    if PARAMETER not in config.parameters:
        return "false"
    value = str(config.parameters[PARAMETER].string_value).strip().lower()
    if value not in ("true", "false", "inline"):
        raise InvalidArgumentError(
            f'parameter \'{PARAMETER}\' of model \'{model_name}\' must be "true", "inline" or "false"'
        )
    return value


class InProcessModelInstance:
    """A ModelInstance whose model runs on a worker thread of the server process."""

    def __init__(
        self,
        spec: InstanceSpec,
        settings: StubSettings,
        pb: ModuleType,
        inline: bool = False,
        metrics: ModelMetrics | None = None,
        calls: ModelCalls | None = None,
    ) -> None:
        self._spec = spec
        self._model_dir = os.path.dirname(spec.model_file)  # set for the model on every inline execute
        self._metrics_sink = None if metrics is None else OwnerSink(metrics.owner(spec.instance_name))
        self._calls = calls
        self._call_context: in_process_calls.CallContext | None = None  # made at start (needs the loop)
        self._on_loop = inline  # execute() on the event loop thread; initialize/finalize stay on the worker
        self._last_yield = 0.0  # inline: when a batch last let the event loop run
        self._settings = settings
        self._pb = pb
        self._model: UserModel | None = None  # owned by the worker thread once started
        self._module_name = f"seawall_model_{uuid.uuid4().hex}"
        self._finder: RepositoryFinder | None = None
        self._worker = Worker(spec.instance_name)
        self._ready = False
        self._stopped = False
        #: the batch the worker runs now, with the cancellation flags its pb requests read (one batch at a time)
        self._running: tuple[list[InferRequest], Cancelled] | None = None

    @property
    def name(self) -> str:
        return self._spec.instance_name

    def cancel(self, request: InferRequest) -> None:
        """The client of `request` went away: if it runs now, its `is_cancelled()` turns true."""
        running = self._running
        if running is not None:
            for item, member in enumerate(running[0]):
                if member is request:
                    running[1].items.add(item)

    async def execute_decoupled(
        self, requests: Sequence[InferRequest], sinks: Sequence[ResponseSink]
    ) -> DecoupledExecution:
        """Run execute() of a decoupled model on the worker thread (inline: here); its senders hand each
        response to the event loop, into the request's sink.

        Raises:
            UnavailableError: the instance is stopped.
            InternalError: execute() raised or returned something else than None.
        """
        if not self.is_healthy():
            raise UnavailableError(f"model instance '{self.name}' is not available")
        loop = asyncio.get_running_loop()
        batch, outlets = list(requests), list(sinks)
        if self._on_loop:
            return self._run_decoupled(loop, batch, outlets)
        return await self._worker.submit(lambda: self._run_decoupled(loop, batch, outlets))

    def _run_decoupled(
        self, loop: asyncio.AbstractEventLoop, requests: list[InferRequest], sinks: list[ResponseSink]
    ) -> DecoupledExecution:
        model = self._model
        assert model is not None and self._call_context is not None
        cancels = SinkCancels(sinks)
        senders: list[UserObject] = []
        in_process_calls.enter(self._call_context, requests)  # BLS calls from execute() know who calls
        try:
            started = time.monotonic_ns()
            pb_requests = []
            for item, (request, sink) in enumerate(zip(requests, sinks, strict=True)):
                pb_request = self._pb_request(model, request)
                pb_request._cancel_state, pb_request._item = cancels, item
                pb_request._sender = self._sender(loop, model, request, sink)
                senders.append(pb_request._sender)
                pb_requests.append(pb_request)
            model.execute_decoupled(pb_requests)
            return DecoupledExecution([None] * len(requests), (started, time.monotonic_ns()))
        except BaseException as exc:
            for sender in senders:
                sender._close()  # the scheduler ends every stream with this error, as Triton does
            if isinstance(exc, BatchError):
                logger.error("model instance '%s': execute failed: %s", self.name, escape_log(str(exc)))
                raise self._spec.batch_failed(str(exc), "") from None
            raise self._spec.batch_failed(describe(exc), _trace(exc)) from None
        finally:
            in_process_calls.leave()

    def _sender(
        self, loop: asyncio.AbstractEventLoop, model: UserModel, request: InferRequest, sink: ResponseSink
    ) -> UserObject:
        """The response sender of one request: copies the outputs in the sending thread, puts them in the sink
        on the event loop."""
        wanted = [output.name for output in request.outputs]
        spec = self._spec

        def put(response: InferResponse | None, error: SeawallError | None, final: bool) -> None:
            try:
                loop.call_soon_threadsafe(sink.put, response, error, final)
            except RuntimeError:
                pass  # the loop is closed: the server is gone

        def deliver(response: UserObject, final: bool) -> None:
            if response is None:
                put(None, None, final)
                return
            found = model.sent_outputs(wanted, response)
            if isinstance(found, tuple):
                put(None, spec.response_error(found[0], found[1]), final)
                return
            answer = spec.response(request, ((name, dt, _owned(dt, array)) for name, dt, array in found))
            if isinstance(answer, SeawallError):
                put(None, answer, final)
            else:
                put(answer, None, final)

        def abandon() -> None:
            text = "the model released the response sender without sending the final flag"
            put(None, InternalError(spec.hide(text)), True)

        return self._pb._ResponseSender(deliver, lambda: sink.cancelled, abandon)

    @property
    def pipeline_depth(self) -> int:
        """Batches the scheduler may hand over at once (the worker runs them back to back): `PIPELINE_DEPTH` even
        with a dynamic batcher. Each hand-over costs a GIL switch and two thread wake-ups, and a worker that
        finds the next batch already queued pays neither (add_sub over HTTP: 1.3-1.9x the throughput of depth 2)."""
        return 1 if self._on_loop else PIPELINE_DEPTH

    def is_healthy(self) -> bool:
        return self._ready and not self._stopped

    async def start(self) -> None:
        """Load model.py and run initialize(args) on the worker thread.

        Raises:
            InternalError: loading or initialize raised (message: exception type and text).
            UnavailableError: initialize did not finish within stub-timeout-seconds.
        """
        self._worker.start()
        key = f"{self._spec.model_name}/{self._spec.model_version}"
        loop = asyncio.get_running_loop()
        self._call_context = in_process_calls.CallContext(self._calls, loop, key, self._on_loop, self.name)
        try:
            await self._spec.initialize(self._worker.submit(self._load), self._settings.timeout_s)
        except UnavailableError:
            self._worker.stop()
            self._remove_finder()
            raise
        except Exception as exc:
            self._worker.stop()
            self._remove_finder()
            raise self._spec.initialize_failed(describe(exc), _trace(exc)) from None
        self._ready = True

    def _load(self) -> None:
        spec = self._spec
        thread_model.metrics = self._metrics_sink  # this worker thread runs this instance's code only
        thread_model.model_dir = os.path.dirname(spec.model_file)
        self._finder = RepositoryFinder(ModelSource(spec.model_dir or os.path.dirname(spec.version_dir), spec.pins))
        with _SYS_PATH_LOCK:  # later imports from the model directory go through this finder too
            refuse_shadowing(spec.version_dir, spec.model_file)
            model_class = load_from_repository(
                spec.model_file, self._module_name, spec.version_dir, self._finder, keep_version_dir=False
            )
        model = UserModel(self._pb, model_class, spec.model_name)
        if spec.decoupled and model.is_async:  # its execute() runs in the background, as in Triton
            name, metrics, model_dir = self.name, self._metrics_sink, os.path.dirname(spec.model_file)

            def setup() -> None:
                thread_model.name, thread_model.metrics, thread_model.model_dir = name, metrics, model_dir

            model.log_error = lambda text: logger.error("model instance '%s': %s", name, escape_log(text))
            model.start_background_loop(setup)
        model.initialize(dict(spec.args))
        self._model = model

    async def check_ready(self) -> bool:
        """The model's own readiness: its `is_ready()` on a thread of its own (beside execute, as in Triton),
        within READY_CHECK_S; True if it defines none. False (logged) if it failed or took too long."""
        model = self._model
        if model is None or not model.checks_readiness:
            return True  # the version's state alone decides
        if not self.is_healthy():
            return False
        try:
            ready, error = await asyncio.wait_for(asyncio.to_thread(model.is_ready), READY_CHECK_S)
        except TimeoutError:
            logger.warning("model instance '%s': is_ready() did not answer in time: not ready", self.name)
            return False
        if error:
            logger.error("model instance '%s': is_ready() failed: %s", self.name, escape_log(error))
        return ready

    async def stop(self) -> None:
        """Run finalize() (if initialized) and end the worker thread; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._ready and self._model is not None:
            try:
                await asyncio.wait_for(self._worker.submit(self._model.finalize), self._settings.timeout_s)
            except Exception as exc:
                logger.warning("model instance '%s': finalize did not complete (%r)", self.name, exc)
        self._worker.stop()
        sys.modules.pop(self._module_name, None)
        self._remove_finder()

    def _remove_finder(self) -> None:
        with _SYS_PATH_LOCK:  # and the modules it found: a later load, of this model or another, imports its own
            drop_modules(self._spec.version_dir)
        if self._finder is not None:
            self._finder.remove()
            self._finder = None

    async def execute(self, requests: Sequence[InferRequest]) -> Execution:
        """Run one batch on the worker thread (or, inline, right here on the event loop thread).

        Raises:
            UnavailableError: the instance is stopped.
            InternalError: execute() raised or returned the wrong number of responses.
        """
        if not self.is_healthy():
            raise UnavailableError(f"model instance '{self.name}' is not available")
        batch = list(requests)
        if self._on_loop:
            thread_model.name, thread_model.metrics = self.name, self._metrics_sink
            thread_model.model_dir = self._model_dir
            try:
                results = self._run_batch(batch)
            finally:
                thread_model.name = thread_model.metrics = thread_model.model_dir = None
            now = time.monotonic()
            if now - self._last_yield > INLINE_YIELD_S:
                self._last_yield = now
                await asyncio.sleep(0)
            return results
        submitted = time.monotonic_ns()
        return await self._worker.submit(lambda: self._run_batch(batch, submitted))

    def _run_batch(self, requests: list[InferRequest], submitted: int = 0) -> Execution:
        """Worker thread: build pb_utils requests over the inputs (read-only, not copied), execute, collect."""
        model = self._model
        assert model is not None
        assert self._call_context is not None
        in_process_calls.enter(self._call_context, requests)  # BLS calls of this batch know who calls
        try:
            taken = time.monotonic_ns()
            cancelled = Cancelled()
            pb_requests = []
            for item, request in enumerate(requests):
                pb_request = self._pb_request(model, request)
                pb_request._cancel_state, pb_request._item = cancelled, item
                pb_requests.append(pb_request)
            self._running = (requests, cancelled)
            started = time.monotonic_ns()
            responses = model.execute(pb_requests)
            finished = time.monotonic_ns()
            results = [
                self._response(model, request, pb_request, response)
                for request, pb_request, response in zip(requests, pb_requests, responses, strict=True)
            ]
            # batches queued at the worker count that wait as queue time; execute() alone is compute_infer
            return Execution(results, (started, finished), taken - submitted if submitted else 0)
        except BatchError as refused:  # (one name per exception type: compiled code types each name once)
            raise self._spec.batch_failed(str(refused), "") from None
        except BaseException as exc:  # SystemExit included: in a stub it would end the process, here the batch
            raise self._spec.batch_failed(describe(exc), _trace(exc)) from None
        finally:
            self._running = None
            in_process_calls.leave()

    def _pb_request(self, model: UserModel, request: InferRequest) -> UserObject:
        header = request_header(request, [])
        inputs = [(tensor.name, tensor.datatype, _read_only(tensor.data)) for tensor in request.inputs]
        return model.request(inputs, header.outputs, request.id, header.correlation_id, header.flags, header.parameters)

    def _response(
        self, model: UserModel, request: InferRequest, pb_request: UserObject, response: UserObject
    ) -> InferResponse | SeawallError:
        found = model.outputs(pb_request, response)
        if isinstance(found, tuple):
            return self._spec.response_error(found[0], found[1])
        # the one copy: the model may reuse its arrays
        outputs = [(name, dt, _owned(dt, array)) for name, dt, array in found]
        return self._spec.response(request, outputs, getattr(response, "_parameters", None))


def _read_only(array: np.ndarray) -> np.ndarray:
    """A view the model cannot write through (in a stub, inputs are read-only shared memory); an array that is
    read-only already (a view of a request body's bytes, the usual case) is itself."""
    if not array.flags.writeable:
        return array
    view = array.view()
    view.flags.writeable = False
    return view


def _owned(datatype: str, array: np.ndarray) -> np.ndarray:
    """A copy of an output in the datatype's numpy type (BYTES: an object array of `bytes`, as from a stub)."""
    if datatype == "BYTES":
        return ipc.deserialize_bytes(ipc.serialize_bytes(array), array.size).reshape(array.shape)
    return np.array(array, dtype=NUMPY_DTYPES[datatype], order="C", copy=True)


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))
