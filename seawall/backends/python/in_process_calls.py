"""BLS and model control for in-process python models (SEAWALL_IN_PROCESS): pb_utils' call handler in the server.

Imports `calls`, `call_client` (the shared wording), `core.backend`, `core.types` and `errors`. One handler serves
every in-process model (pb_utils is one module in the server): the calling model is the execution running on
the calling thread (`_batch`), set by its instance around each batch. A call blocks that worker thread and runs
on the server's event loop through the core, as a stub's does.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import queue
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from seawall.backends.python import ipc
from seawall.backends.python.bls_stream import ResponseIterator
from seawall.backends.python.call_client import OUTSIDE_EXECUTE, control_failure
from seawall.backends.python.calls import CANCELLED, add_call_fields, checked_version, triton_code
from seawall.core.backend import ModelCalls
from seawall.core.types import InferRequest, RequestedOutput, StreamResponse, Tensor
from seawall.errors import CancelledError, InternalError, SeawallError

_T = TypeVar("_T")
#: what runs now: the CallContext and the batch (InferRequests) of the execute() on this thread (a worker thread, or
#: the event loop's task for an inline model), and of the coroutines it starts (an `async def execute` runs on the
#: model's own loop, whose tasks copy this context from the worker thread that started them; threads the model starts
#: itself do not)
_batch: contextvars.ContextVar[tuple[CallContext, Sequence[InferRequest]] | None] = contextvars.ContextVar(
    "seawall_in_process_batch", default=None
)


@dataclass(frozen=True, slots=True)
class CallContext:
    """What one in-process instance's calls need: the core's calls, the server's loop, who is calling."""

    calls: ModelCalls | None
    loop: asyncio.AbstractEventLoop
    key: str  # "<model>/<version>", as the model appears in its calls' `callers`
    inline: bool  # execute() runs on the event loop itself: a blocking call would wait for itself
    instance_name: str = ""


def enter(context: CallContext, requests: Sequence[InferRequest]) -> None:
    """The calling thread runs a batch of `context`'s model (until `leave`)."""
    _batch.set((context, requests))


def leave() -> None:
    _batch.set(None)


def _current() -> tuple[CallContext | None, Sequence[InferRequest]]:
    """The calling model's context and batch."""
    found = _batch.get()
    return found if found is not None else (None, ())


class InProcessCalls:
    """pb_utils' call handler in the server process (the stub's is `call_client.CallClient`)."""

    def __init__(self, pb: Any) -> None:
        self._pb = pb

    def _context(self) -> tuple[CallContext, tuple[str, ...]]:
        pb = self._pb
        context, requests = _current()
        if context is None:
            raise pb.TritonModelException(OUTSIDE_EXECUTE)
        if context.inline:
            raise pb.TritonModelException(
                'BLS is not supported for models run with SEAWALL_IN_PROCESS "inline" (their execute() runs on '
                'the server\'s event loop, which the call needs); use "true"'
            )
        callers = {context.key}
        for request in requests:
            callers.update(request.callers)
        return context, tuple(callers)

    def exec(self, request: Any, decoupled: bool = False) -> Any:
        """Raises: pb_utils.TritonModelException (outside execute, inline models, bad arguments)."""
        context, callers = self._context()
        return (self._stream if decoupled else self._exec)(context, callers, request)

    def async_exec(self, request: Any, decoupled: bool = False) -> asyncio.Future[Any]:
        """Raises: as `exec`, and RuntimeError without a running event loop."""
        loop = asyncio.get_running_loop()  # the model's own loop, on its worker thread
        context, callers = self._context()
        return loop.run_in_executor(None, self._stream if decoupled else self._exec, context, callers, request)

    def _exec(self, context: CallContext, callers: tuple[str, ...], request: Any) -> Any:
        pb = self._pb
        core_request = self._core_request(callers, request)
        try:
            if context.calls is None:
                raise InternalError("this server does not serve calls from model code")
            response = self._on_loop(context, context.calls.infer(core_request))
        except SeawallError as error:
            return self._error(error)
        return _response(pb, response.outputs)

    def _error(self, error: SeawallError) -> Any:
        pb = self._pb
        return pb.InferenceResponse(error=pb.TritonError(error.message, triton_code(error)))

    def _stream(self, context: CallContext, callers: tuple[str, ...], request: Any) -> ResponseIterator:
        """exec(decoupled=True): the call runs on the server's loop and hands each message to the iterator."""
        core_request = self._core_request(callers, request)
        answers: queue.SimpleQueue[StreamResponse] = queue.SimpleQueue()

        async def run() -> None:
            try:
                if context.calls is None:
                    raise InternalError("this server does not serve calls from model code")
                async for message in context.calls.infer_stream(core_request):
                    answers.put(message)
                    if message.final:
                        return
            except SeawallError as error:
                answers.put(StreamResponse(None, error, True))
            except asyncio.CancelledError:  # cancel(): the core has cancelled the request
                answers.put(StreamResponse(None, CancelledError(CANCELLED), True))

        running = asyncio.run_coroutine_threadsafe(run(), context.loop)
        pb = self._pb

        def next_response() -> tuple[Any, bool]:
            message = answers.get()
            if message.error is not None:
                return self._error(message.error), message.final
            outputs = message.response.outputs if message.response is not None else []
            return _response(pb, outputs), message.final

        def cancel() -> None:
            running.cancel()  # the task on the server's loop is cancelled, which cancels the request

        # dropped: the call runs to its end and its answers go with the queue (as the stub discards them)
        return ResponseIterator(next_response, cancel, lambda: None, lambda: None)

    def _core_request(self, callers: tuple[str, ...], request: Any) -> InferRequest:
        """Raises: pb_utils.TritonModelException (bad arguments)."""
        pb = self._pb
        parameters = json.loads(request.parameters())
        for value in parameters.values():
            if type(value) not in (bool, int, str):
                raise pb.TritonModelException(
                    f"Expect parameters values to have type bool/int/str, found type {type(value)}"
                )
        timeout, version = request.timeout(), request.model_version()
        if type(version) is not int or type(timeout) is not int or timeout < 0:
            raise pb.TritonModelException("model_version and timeout must be integers (timeout >= 0)")
        add_call_fields(parameters, timeout, request.correlation_id(), int(request.flags()))
        inputs = []
        for tensor in request.inputs():
            datatype, array = pb._raw(tensor)
            inputs.append(Tensor(tensor.name(), datatype, tuple(array.shape), array))
        return InferRequest(
            str(request.model_name()),
            inputs,
            "" if version < 0 else str(version),
            request.request_id(),
            [RequestedOutput(name) for name in request.requested_output_names()],
            parameters,
            callers,
        )

    def control(self, action: str, model: str, text: str, flag: bool, files: dict[str, bytes]) -> bool:
        """Raises: pb_utils.TritonModelException (Triton's "Failed to ...: <why>" wording)."""
        prefix = {"ready": "Failed to check model readiness: ", "load": "Failed to load model: "}.get(
            action, "Failed to unload model: "
        )
        context = _current()[0]
        try:
            if context is None or context.inline:
                raise InternalError(OUTSIDE_EXECUTE)
            calls = context.calls
            if calls is None:
                raise InternalError("this server does not serve calls from model code")
            caller = f"model {context.key} (python backend)"
            if action == "ready":
                version = checked_version(text)

                async def ready() -> bool:
                    return calls.is_model_ready(model, version)

                return self._on_loop(context, ready())
            if action == "unload":
                self._on_loop(context, calls.unload_model(model, flag, caller))
            else:
                self._on_loop(context, calls.load_model(model, text, files, caller))
            return False
        except SeawallError as error:
            name = context.instance_name if context is not None else ""
            raise self._pb.TritonModelException(control_failure(prefix, name, error.message)) from None

    @staticmethod
    def _on_loop(context: CallContext, work: Coroutine[Any, Any, _T]) -> _T:
        """Run `work` on the server's event loop and wait for it (this is a worker thread)."""
        return asyncio.run_coroutine_threadsafe(work, context.loop).result()


def _response(pb: Any, outputs: Sequence[Tensor]) -> Any:
    """The pb_utils response of a call's outputs. An isolated model's large outputs to a call are read-only views
    of a sealed region (ipc.read_sealed, for a calling stub): the model gets a copy it may write, as a stub would."""
    tensors = []
    for t in outputs:
        data = t.data
        if not data.flags.writeable and ipc.sealed_views([data]) is not None:
            data = data.copy()
        tensors.append(pb.Tensor(t.name, data, t.datatype))
    return pb.InferenceResponse(tensors)
