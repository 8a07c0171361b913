"""BLS on the host side: serves a stub's Call and Control messages through the core's `ModelCalls`.

Imports `ipc`, `messages`, `process`, `core.backend`, `core.offload`, `core.types` and `errors`; runs on the
event loop thread. A call's inputs are read straight from the sealed region the stub made (no copy, no pickle);
its outputs go back in a sealed region this side makes. Everything the stub sent is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
from collections.abc import Sequence

import seawall.core.offload as offload
from seawall.backends.python import ipc
from seawall.backends.python.messages import (
    Call,
    CallCancel,
    CallFailed,
    CallMessage,
    CallResult,
    CallStreamed,
    Control,
    StreamCall,
    call_inline,
    carries_region,
)
from seawall.backends.python.process import StubDied, StubProcess
from seawall.core.backend import ModelCalls
from seawall.core.types import InferRequest, ParamValue, RequestedOutput, Tensor
from seawall.errors import Code, InternalError, SeawallError

logger = logging.getLogger(__name__)

#: Seawall codes → pb_utils.TritonError codes (TRITONSERVER_Error_Code order); others are INTERNAL.
_TRITON_CODES = {
    Code.UNKNOWN: 0,
    Code.INTERNAL: 1,
    Code.NOT_FOUND: 2,
    Code.INVALID_ARG: 3,
    Code.UNAVAILABLE: 4,
    Code.UNSUPPORTED: 5,
    Code.ALREADY_EXISTS: 6,
    Code.CANCELLED: 7,
    Code.OVERLOADED: 4,  # a full queue: UNAVAILABLE, as Triton answers it
}
#: Most calls one stub may have in flight; beyond that its calls fail (a model cannot flood the server).
MAX_CALLS_IN_FLIGHT = 256
#: the error that ends a StreamCall the model cancelled (iterator.cancel())
CANCELLED = "the BLS request was cancelled by the model (ResponseIterator.cancel())"
_EMPTY = b""


def triton_code(error: SeawallError) -> int:
    """The pb_utils.TritonError code of `error`."""
    return _TRITON_CODES.get(error.code, 1)


def checked_version(version: str) -> str:
    """is_model_ready's version string, checked as Triton's python backend does.

    Raises: InternalError (not an integer, or negative: Triton's text).
    """
    if not version:
        return version
    try:
        number = int(version)
    except ValueError:
        raise InternalError(
            f"failed to get model version from specified version string '{version}' (details: stol), version "
            "should be an integral value > 0"
        ) from None
    if number < 0:
        raise InternalError(
            f"failed to get model version from specified version string '{version}', version should be an "
            "integral value > 0"
        )
    return str(number)


class CallServer:
    """Serves the calls of one instance's stubs. Owns the tasks that run them; `stop()` cancels them."""

    def __init__(self, model_name: str, model_version: str, calls: ModelCalls | None) -> None:
        self._key = f"{model_name}/{model_version}"  # how this model appears in its calls' `callers`
        self._calls = calls
        self._tasks: set[asyncio.Task[None]] = set()  # calls being served, for stop()
        self._streams: dict[tuple[int, int], asyncio.Task[None]] = {}  # (id(process), call id) → StreamCall served
        self._cancelled: set[asyncio.Task[None]] = set()  # stream tasks cancelled by the model (CallCancel)

    def serve(self, process: StubProcess, message: CallMessage) -> None:
        """Start serving `message` of `process` (from its control channel: no awaiting here)."""
        if isinstance(message, CallCancel):
            task = self._streams.get((id(process), message.call_id))
            if task is not None and task not in self._cancelled:  # else it has ended: nothing to cancel
                self._cancelled.add(task)
                task.cancel()
            return
        if self._calls is None:
            process.send(CallFailed(message.call_id, 1, "this server does not serve calls from model code"))
            return
        if len(self._tasks) >= MAX_CALLS_IN_FLIGHT:
            try:
                if carries_region(message):
                    os.close(process.regions.receive_fd(b"c%d" % message.call_id))  # the region is not used
            except ipc.ProtocolError as exc:
                process.abort(f"bad call: {exc}")
                return
            text = f"too many BLS calls in flight (at most {MAX_CALLS_IN_FLIGHT})"
            process.send(CallFailed(message.call_id, 4, text))
            return
        # the model itself, and whoever called the executions it runs now (none: a thread of the model calls
        # between executions, which Triton allows too)
        callers = {self._key}
        for requests in process.running():
            for request in requests if isinstance(requests, list | tuple) else ():
                if isinstance(request, InferRequest):
                    callers.update(request.callers)
        key = (id(process), message.call_id)
        if type(message) is StreamCall and key in self._streams:
            process.abort("bad call: a call id in use")
            return
        task = process.loop.create_task(self._run(process, message, self._calls, tuple(callers)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if type(message) is StreamCall:
            self._streams[key] = task
            task.add_done_callback(lambda done: self._ended(process, message, done))

    def _ended(self, process: StubProcess, message: StreamCall, task: asyncio.Task[None]) -> None:
        """A StreamCall's task is done. Cancelled by the model (CallCancel, even before it ran): the core has
        cancelled the request, and a final CANCELLED error ends the model's iterator."""
        call_id = message.call_id
        key = (id(process), call_id)
        if self._streams.get(key) is task:
            del self._streams[key]
        if task in self._cancelled:
            self._cancelled.discard(task)
            if task.cancelled():
                if carries_region(message):  # cancelled before it ran, its input region may still wait: closed
                    with contextlib.suppress(ipc.ProtocolError):
                        os.close(process.regions.receive_fd(b"c%d" % call_id))
                process.send(CallStreamed(call_id, 0, [], 0, 7, CANCELLED, True))

    async def stop(self) -> None:
        """Cancel the calls still being served; idempotent."""
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(
        self,
        process: StubProcess,
        message: Call | Control | StreamCall,
        calls: ModelCalls,
        callers: tuple[str, ...],
    ) -> None:
        try:
            memory = _inputs(process, message)
            if type(message) is Call:
                await self._infer(process, message, memory, calls, callers)
            elif type(message) is StreamCall:
                await self._infer_stream(process, message, memory, calls, callers)
            else:
                assert type(message) is Control
                await self._control(process, message, memory, calls)
        except ipc.ProtocolError as exc:
            process.abort(f"bad call: {exc}")
        except SeawallError as error:
            process.send(CallFailed(message.call_id, triton_code(error), error.message))
        except StubDied:
            pass  # nobody is waiting for the answer any more

    async def _infer(
        self,
        process: StubProcess,
        message: Call,
        memory: mmap.mmap | bytearray | None,
        calls: ModelCalls,
        callers: tuple[str, ...],
    ) -> None:
        """Raises: SeawallError (the call's failure), ipc.ProtocolError (a bad message)."""
        request = _request(message, memory, callers)
        response = await calls.infer(request)
        outputs = response.outputs
        descriptors, size, fd, inline = await _call_outputs(outputs)
        if fd is not None:
            process.regions.pass_call_region(fd, b"r%d" % message.call_id)
        process.send(CallResult(message.call_id, descriptors, size, False, inline))

    async def _infer_stream(
        self,
        process: StubProcess,
        message: StreamCall,
        memory: mmap.mmap | bytearray | None,
        calls: ModelCalls,
        callers: tuple[str, ...],
    ) -> None:
        """Each response of the called model as a CallStreamed, its outputs in a sealed region of its own.

        Raises: SeawallError (the call failed before its first response), ipc.ProtocolError (a bad message).
        """
        request = _request(message, memory, callers)
        position = 0
        async for streamed in calls.infer_stream(request):
            descriptors: list[ipc.Descriptor] = []
            size, code, text, inline = 0, None, "", ""
            if streamed.error is not None:
                code, text = triton_code(streamed.error), streamed.error.message
            elif streamed.response is not None:
                outputs = streamed.response.outputs
                descriptors, size, fd, inline = await _call_outputs(outputs)
                if fd is not None:
                    process.regions.pass_call_region(fd, b"s%d.%d" % (message.call_id, position))
            final = streamed.final
            process.send(CallStreamed(message.call_id, position, descriptors, size, code, text, final, inline))
            position += 1
            if streamed.final:
                return

    async def _control(
        self, process: StubProcess, message: Control, memory: mmap.mmap | bytearray | None, calls: ModelCalls
    ) -> None:
        """Raises: SeawallError (the call's failure), ipc.ProtocolError (a bad message)."""
        caller = f"model {self._key} (python backend)"
        value = False
        if message.action == "ready":
            value = calls.is_model_ready(message.model, checked_version(message.text))
        elif message.action == "unload":
            await calls.unload_model(message.model, message.flag, caller)
        else:
            files: dict[str, bytes] = {}
            region = memory if memory is not None else _EMPTY
            for descriptor in message.files:
                name, datatype, array = ipc.read_tensor(region, descriptor, copy=False)  # type: ignore[arg-type]
                if datatype != "UINT8":
                    raise ipc.ProtocolError("bad load_model file")
                files[name] = array.tobytes()
            await calls.load_model(message.model, message.text, files, caller)
        process.send(CallResult(message.call_id, [], 0, value))


def _inputs(process: StubProcess, message: Call | Control | StreamCall) -> mmap.mmap | bytearray | None:
    """The bytes of a call's inputs: its sealed region mapped, or the bytes it carried inline.

    Raises: ipc.ProtocolError (not a sealed region of its size, or bad inline bytes).
    """
    inline = call_inline(message)
    if inline:
        return ipc.inline_region(inline, message.size)
    if not message.size:
        return None
    return ipc.map_sealed(process.regions.receive_fd(b"c%d" % message.call_id), message.size, keep=True)


def _request(
    message: Call | StreamCall, memory: mmap.mmap | bytearray | None, callers: tuple[str, ...]
) -> InferRequest:
    """The core's request of a call, its inputs read straight from the stub's sealed region (no copy).

    Raises: ipc.ProtocolError (a bad descriptor), InternalError (a bad parameter).
    """
    header = message.request
    region = memory if memory is not None else _EMPTY
    tensors = []
    for descriptor in header.inputs:
        name, datatype, array = ipc.read_tensor(region, descriptor, copy=False)  # type: ignore[arg-type]
        tensors.append(Tensor(name, datatype, tuple(array.shape), array))
    return InferRequest(
        message.model,
        tensors,
        message.version,
        header.id,
        [RequestedOutput(name) for name in header.outputs],
        _parameters(header.parameters, header.correlation_id, header.flags, message.timeout_us),
        callers,
    )


def _parameters(
    parameters: dict[str, object], correlation_id: int | str, flags: int, timeout_us: int
) -> dict[str, ParamValue]:
    """The core's request parameters of a call (Triton's names for the sequence and timeout fields).

    Raises: InternalError (a parameter that is not a string, integer or boolean, as in Triton).
    """
    result: dict[str, ParamValue] = {}
    for key, value in parameters.items():
        if type(value) not in (str, int, bool):
            raise InternalError("Unsupported value type on parameters")
        result[key] = value  # type: ignore[assignment]  # checked just above
    add_call_fields(result, timeout_us, correlation_id, flags)
    return result


def add_call_fields(parameters: dict[str, ParamValue], timeout_us: int, correlation_id: int | str, flags: int) -> None:
    """Add a BLS request's timeout and sequence fields to its `parameters` under the core's (Triton's) names;
    a zero or empty field adds nothing."""
    if timeout_us:
        parameters["timeout"] = timeout_us
    if correlation_id:
        parameters["sequence_id"] = correlation_id
    if flags & 1:
        parameters["sequence_start"] = True
    if flags & 2:
        parameters["sequence_end"] = True


async def _call_outputs(outputs: Sequence[Tensor]) -> tuple[list[ipc.Descriptor], int, int | None, str]:
    """Descriptors, size, sealed region fd (None: none) and inline bytes of a call's outputs (`_write_outputs`),
    or, when they all lie in one kept sealed region (a called stub's large outputs: `ipc.read_sealed`), that
    region itself: the calling stub maps the same pages."""
    views = ipc.tensor_views(outputs)
    if views is None:
        return await offload.run(_heavy(outputs), _write_outputs, outputs)
    fd, size, offsets = views
    descriptors: list[ipc.Descriptor] = [
        [tensor.name, tensor.datatype, list(tensor.shape), offset, tensor.data.nbytes]
        for tensor, offset in zip(outputs, offsets, strict=True)
    ]
    return descriptors, size, os.dup(fd), ""


def _heavy(outputs: Sequence[Tensor]) -> bool:
    return offload.is_heavy(outputs) or sum(t.data.nbytes for t in outputs) > offload.HEAVY_BODY_BYTES


def _write_outputs(outputs: Sequence[Tensor]) -> tuple[list[ipc.Descriptor], int, int | None, str]:
    """Descriptors, size, sealed region fd (None: none) and inline bytes of a call's outputs: small outputs
    travel in the message (ipc.INLINE_BYTES), others in a sealed region."""
    payloads = [ipc.to_payload(tensor.datatype, tensor.data) for tensor in outputs]
    offsets, size = ipc.layout(payloads)
    descriptors: list[ipc.Descriptor] = [
        [tensor.name, tensor.datatype, list(tensor.shape), offset, len(payload)]
        for tensor, offset, payload in zip(outputs, offsets, payloads, strict=True)
    ]
    inline = ipc.inline_text(offsets, payloads, size)
    if inline or not size:
        return descriptors, size, None, inline
    return descriptors, size, ipc.sealed_region(offsets, payloads, size), ""
