"""The open response streams of a decoupled model's stub instance: each request of a running batch has a stream
(its `ResponseSink`) until its final response; `Response` messages of the stub are routed to them here.

Imports `ipc`, `messages`, `instance_core`, `process`, `core.backend`, `core.types` and `errors`. Runs on the
event loop thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from seawall.backends.python import ipc
from seawall.backends.python.instance_core import InstanceSpec
from seawall.backends.python.messages import Cancel, Response, ResponseRead
from seawall.backends.python.process import StubProcess
from seawall.core.backend import ResponseSink
from seawall.core.types import InferRequest, InferResponse
from seawall.errors import SeawallError


class DecoupledStreams:
    """(seq, request index) → the request and its sink, while its stream is open."""

    def __init__(self, spec: InstanceSpec, is_current: Callable[[StubProcess, int], bool]) -> None:
        self._spec = spec
        self._is_current = is_current  # whether a response of batch seq from this process may be routed
        self._streams: dict[tuple[int, int], tuple[InferRequest, ResponseSink]] = {}

    def open(
        self, process: StubProcess, seq: int, requests: Sequence[InferRequest], sinks: Sequence[ResponseSink]
    ) -> list[tuple[int, int]]:
        """Open a stream per request of batch `seq`; a sink whose reader goes away cancels its request."""
        keys: list[tuple[int, int]] = []
        for item, (request, sink) in enumerate(zip(requests, sinks, strict=True)):
            key = (seq, item)
            keys.append(key)
            self._streams[key] = (request, sink)
            sink.on_cancel(functools.partial(self._cancel, process, key))
        return keys

    def forget(self, keys: list[tuple[int, int]]) -> None:
        for key in keys:
            self._streams.pop(key, None)

    def _cancel(self, process: StubProcess, key: tuple[int, int]) -> None:
        """A stream's reader went away: what the model still sends is dropped, and it may see it (Cancel)."""
        if self._streams.pop(key, None) is not None:
            process.send(Cancel(*key))

    def end_all(self, error: SeawallError) -> None:
        """End every open stream with `error` (the stub died, or the instance stopped)."""
        streams, self._streams = self._streams, {}
        for _, sink in streams.values():
            sink.fail(error)

    def on_response(self, process: StubProcess, message: Response) -> None:
        """A response of a decoupled model: to its request's sink, then (once the reader has room) the stub may
        reuse the region (ResponseRead)."""
        token = message.token
        if not self._is_current(process, message.seq):
            process.abort("a response to an unknown batch")
            return
        found = self._streams.get((message.seq, message.item))
        if found is None:  # its reader went away, or it had ended (then the stub broke its own rule: dropped too)
            if token:
                process.send(ResponseRead(token))
            return
        request, sink = found
        if message.final:
            del self._streams[(message.seq, message.item)]
        entry = message.entry
        response: InferResponse | None = None
        error: SeawallError | None = None
        if entry is not None and entry.error_code is not None:
            error = self._spec.response_error(entry.error_code, entry.error_message)
        elif entry is not None:
            try:
                if message.inline:  # a fresh buffer of its own: the arrays may stay views of it
                    inline = ipc.inline_region(message.inline, message.size)
                    tensors = [ipc.read_tensor(inline, d, copy=False) for d in entry.outputs]
                else:
                    memory = process.regions.responses
                    if entry.outputs and memory is None:
                        raise ipc.ProtocolError("a response without a response region")
                    tensors = [ipc.read_tensor(memory, d, copy=True) for d in entry.outputs] if memory else []
            except ipc.ProtocolError as exc:
                process.abort(f"bad response: {exc}")
                return
            answer = self._spec.response(request, tensors)
            if isinstance(answer, SeawallError):
                error = answer
            else:
                response = answer
        sink.put(response, error, message.final)
        if token:
            sink.when_drained(lambda: process.send(ResponseRead(token)))
