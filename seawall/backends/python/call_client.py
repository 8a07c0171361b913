"""BLS in a stub process: `InferenceRequest.exec()` / `async_exec()` and pb_utils' model control, as messages.

Imports `ipc`, `messages` and `bls_stream` (the stub imports this module, so it stays light); pb_utils objects
arrive untyped. `exec(decoupled=True)` sends a StreamCall and returns a `bls_stream.ResponseIterator` over its
CallStreamed answers.
A call's inputs go to the host in a sealed region this process makes (tag `c<id>`); its outputs come back in a
sealed region the host made (tag `r<id>`), mapped copy-on-write and used without a copy. Any thread may call: the
calling thread waits for its answer (matched by call id), reading the control channel itself if nobody else is.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from seawall.backends.python import ipc
from seawall.backends.python.bls_stream import ResponseIterator
from seawall.backends.python.messages import (
    Call,
    CallCancel,
    CallFailed,
    CallResult,
    CallStreamed,
    Control,
    RequestHeader,
    StreamCall,
    StubMessage,
    carries_region,
)

#: Triton's answer to a call from initialize() or finalize()
OUTSIDE_EXECUTE = "BLS is only supported during the 'execute' function."
#: threads async_exec() waits in (each in-flight call holds one); created on first use
MAX_ASYNC_CALLS = 64

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

UserObject = Any


class CallChannel(Protocol):
    """What the client needs of the stub's control channel (`stub_channel.Channel`)."""

    def send(self, message: StubMessage) -> None: ...

    def send_fd(self, tag: bytes, fd: int) -> None: ...

    def wait_answer(self, call_id: int) -> CallResult | CallFailed | None: ...

    def wait_streamed(self, call_id: int) -> CallStreamed | CallFailed | None: ...

    def drop_stream(self, call_id: int) -> None: ...

    def receive_region(self, tag: bytes, size: int, writable: bool, private: bool = False) -> Any: ...


class CallClient:
    """The stub's side of BLS and model control; `serving` is True between initialize() and finalize()."""

    def __init__(self, channel: CallChannel, pb: Any, instance_name: str = "") -> None:
        self._channel = channel
        self._pb = pb
        self._instance_name = instance_name  # Triton's model-control errors name the calling instance
        self._ids = itertools.count(1)  # next() is atomic under the GIL: any thread may call
        self._executor: ThreadPoolExecutor | None = None  # async_exec's waiting threads
        self.serving = False
        self.has_server = True  # False in an auto-complete stub: nobody serves its calls

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def exec(self, request: UserObject, decoupled: bool = False) -> UserObject:
        """Run `request` on the server; its response (an error response if the call failed), or with
        `decoupled`, an iterator of its responses (`bls_stream.ResponseIterator`).

        Raises:
            pb_utils.TritonModelException: called outside execute(), or bad arguments.
        """
        pb = self._pb
        if not self.serving:
            raise pb.TritonModelException(OUTSIDE_EXECUTE)
        call_id, message, payloads, offsets = self._call(request, StreamCall if decoupled else Call)
        self._send(call_id, message, payloads, offsets)
        if decoupled:
            channel = self._channel
            return ResponseIterator(
                lambda: self._next_streamed(call_id),
                lambda: channel.send(CallCancel(call_id)),
                lambda: channel.drop_stream(call_id),
                self._waiters,
            )
        answer = self._channel.wait_answer(call_id)
        if answer is None:
            return self._gone()
        if type(answer) is CallFailed:
            return pb.InferenceResponse(error=pb.TritonError(answer.message, answer.code))
        assert type(answer) is CallResult
        return pb.InferenceResponse(self._outputs(b"r%d" % call_id, answer.outputs, answer.size, answer.inline))

    def _gone(self) -> UserObject:
        pb = self._pb
        return pb.InferenceResponse(error=pb.TritonError("the server has gone", pb.TritonError.UNAVAILABLE))

    def _next_streamed(self, call_id: int) -> tuple[UserObject, bool]:
        """The next response of StreamCall `call_id` and whether it is the last."""
        pb = self._pb
        answer = self._channel.wait_streamed(call_id)
        if answer is None:
            return self._gone(), True
        if type(answer) is CallFailed:
            return pb.InferenceResponse(error=pb.TritonError(answer.message, answer.code)), True
        assert type(answer) is CallStreamed
        if answer.error_code is not None:
            return pb.InferenceResponse(error=pb.TritonError(answer.error_message, answer.error_code)), answer.final
        tag = b"s%d.%d" % (call_id, answer.position)
        return pb.InferenceResponse(self._outputs(tag, answer.outputs, answer.size, answer.inline)), answer.final

    def async_exec(self, request: UserObject, decoupled: bool = False) -> asyncio.Future[UserObject]:
        """`exec` in a waiting thread; awaitable on the running event loop (with `decoupled`, it gives the
        iterator, which `async for` may also iterate without blocking the loop).

        Raises: as `exec`, and RuntimeError without a running event loop (as Triton's).
        """
        import asyncio  # only models that use async_exec pay for it

        loop = asyncio.get_running_loop()
        if not self.serving:
            raise self._pb.TritonModelException(OUTSIDE_EXECUTE)
        return loop.run_in_executor(self._waiters(), self.exec, request, decoupled)

    def _waiters(self) -> ThreadPoolExecutor:
        """The threads async_exec and `async for` wait in (made on first use)."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(MAX_ASYNC_CALLS, thread_name_prefix="bls")
        return self._executor

    def control(self, action: str, model: str, text: str, flag: bool, files: dict[str, bytes]) -> bool:
        """is_model_ready ("ready"), load_model ("load"), unload_model ("unload").

        Raises:
            pb_utils.TritonModelException: the server refused (Triton's "Failed to ...: <why>" wording).
        """
        pb = self._pb
        prefix = {"ready": "Failed to check model readiness: ", "load": "Failed to load model: "}.get(
            action, "Failed to unload model: "
        )
        if not self.has_server:
            raise pb.TritonModelException(prefix + "not available in auto_complete_config")
        arrays = [ipc.to_payload("UINT8", _bytes_array(content)) for content in files.values()]
        offsets, size = ipc.layout(arrays)
        descriptors: list[ipc.Descriptor] = [
            [name, "UINT8", [len(payload)], offset, len(payload)]
            for name, offset, payload in zip(files, offsets, arrays, strict=True)
        ]
        call_id = next(self._ids)
        self._send(call_id, Control(call_id, action, model, text, flag, descriptors, size), arrays, offsets)
        answer = self._channel.wait_answer(call_id)
        if answer is None:
            raise pb.TritonModelException(prefix + "the server has gone")
        if type(answer) is CallFailed:
            raise pb.TritonModelException(control_failure(prefix, self._instance_name, answer.message))
        return bool(answer.value) if type(answer) is CallResult else False

    def _call(
        self, request: UserObject, kind: type[Call] | type[StreamCall]
    ) -> tuple[int, Call | StreamCall, list[ipc.Payload], list[int]]:
        """The Call message of `request` and its input payloads (validated as Triton's stub does).

        Raises: pb_utils.TritonModelException (bad arguments).
        """
        pb = self._pb
        name = request.model_name()
        version = request.model_version()
        timeout = request.timeout()
        parameters = json.loads(request.parameters())
        for value in parameters.values():
            if type(value) not in (bool, int, str):
                raise pb.TritonModelException(
                    f"Expect parameters values to have type bool/int/str, found type {type(value)}"
                )
        if type(name) is not str or not name:
            raise pb.TritonModelException("model_name must be a non-empty string")
        if type(version) is not int or isinstance(timeout, bool) or type(timeout) is not int or timeout < 0:
            raise pb.TritonModelException("model_version and timeout must be integers (timeout >= 0)")
        descriptors: list[ipc.Descriptor] = []
        payloads: list[ipc.Payload] = []
        for tensor in request.inputs():
            datatype, array = pb._raw(tensor)
            payloads.append(ipc.to_payload(datatype, array))
            descriptors.append([tensor.name(), datatype, list(array.shape), 0, len(payloads[-1])])
        offsets, size = ipc.layout(payloads)
        for descriptor, offset in zip(descriptors, offsets, strict=True):
            descriptor[3] = offset
        correlation_id = request.correlation_id()
        header = RequestHeader(
            request.request_id(),
            descriptors,
            request.requested_output_names(),
            correlation_id if type(correlation_id) is str else int(correlation_id),
            int(request.flags()),
            parameters,
        )
        call_id = next(self._ids)
        # small inputs travel in the message itself (no region to make, pass, map and unmap: ipc.INLINE_BYTES)
        inline = ipc.inline_text(offsets, payloads, size)
        message = kind(call_id, name, "" if version < 0 else str(version), header, size, timeout, inline)
        return call_id, message, payloads, offsets

    def _send(
        self, call_id: int, message: Call | StreamCall | Control, payloads: list[ipc.Payload], offsets: list[int]
    ) -> None:
        if carries_region(message):
            self._channel.send_fd(b"c%d" % call_id, ipc.sealed_region(offsets, payloads, message.size))
        self._channel.send(message)

    def _outputs(self, tag: bytes, descriptors: list[ipc.Descriptor], size: int, inline: str) -> list[UserObject]:
        """A response's tensors, views of the region the host made under `tag` (copy-on-write: never copied
        unless the model writes into them), or of the bytes it carried `inline`."""
        tensor = self._pb.Tensor
        region: Any = b""
        if inline:
            region = ipc.inline_region(inline, size)
        elif size:
            region = self._channel.receive_region(tag, size, False, private=True)
        outputs = []
        for descriptor in descriptors:
            if type(descriptor) is not list:
                raise ipc.ProtocolError("bad tensor descriptor")
            name, datatype, array = ipc.read_tensor(region, descriptor, copy=False)
            outputs.append(tensor(name, array, datatype))
        return outputs


def control_failure(prefix: str, instance_name: str, reason: str) -> str:
    """Triton's text for a refused is_model_ready / load_model / unload_model."""
    return f"{prefix}Failed to process the request for model '{instance_name}', message: {reason}"


def _bytes_array(content: object) -> Any:
    import numpy as np

    if not isinstance(content, bytes | bytearray):
        raise TypeError("file contents must be bytes")
    return np.frombuffer(bytes(content), dtype=np.uint8)


def checked_files(files: object, name: str, exception: Callable[[str], Exception]) -> dict[str, bytes]:
    """load_model's `files` as a dict of path → bytes.

    Raises: `exception` (Triton's message) when it is not a dict of bytes.
    """
    if files is None:
        return {}
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, bytes | bytearray) for k, v in files.items()
    ):
        raise exception(f"failed to load model '{name}', files should be a dictionary of file paths and file contents")
    return {k: bytes(v) for k, v in files.items()}
