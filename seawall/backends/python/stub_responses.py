"""A decoupled model's way out of the stub: its responses (`Responder`, through the response region) and the
cancellation flags that `request.is_cancelled()` and `sender.is_cancelled()` read (`Cancels`).

Imports `ipc`, `messages`, `user_model` and `stub_channel` only (the stub loads it: it stays light).
"""

from __future__ import annotations

import mmap
import threading
from collections import deque
from types import ModuleType

from seawall.backends.python import ipc
from seawall.backends.python.messages import Cancel, Response, ResponseEntry, ResponseGrow
from seawall.backends.python.stub_channel import Channel
from seawall.backends.python.user_model import Output, UserModel, UserObject

#: inline responses (small outputs) a decoupled model may have sent before the host has read the oldest of them
INLINE_WINDOW = 16


class Cancels:
    """Which requests' clients went away (Cancel), per running batch; read by `request.is_cancelled()` and
    `sender.is_cancelled()` from any thread. A batch is tracked from its Execute until its execute() returned
    and, for a decoupled model, every request's stream ended.

    Per batch on the hot path: a few dict operations (no set is made until a Cancel comes)."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._cancelled: dict[int, set[int] | None] = {}  # seq → cancelled request positions (None: none yet)
        self._open: dict[int, int] = {}  # seq → streams and execute() not yet ended (decoupled batches)
        self._early: dict[int, set[int]] = {}  # seq → cancelled positions of a batch queued, not yet begun
        self._begun = 0  # the last seq begun (the host's seqs grow)
        self._lock = threading.Lock()
        channel.on_cancel = self.cancel

    def begin(self, seq: int, requests: int, streams: int = 0) -> bool:
        """Track batch `seq` of `requests` requests (and `streams` open response streams); False: every request
        was cancelled while its Execute waited here (the batch is then not run)."""
        with self._lock:
            if streams:
                self._open[seq] = 1 + streams
            self._begun = seq
            if not self._early:
                self._cancelled[seq] = None
                return True
            early = self._early.pop(seq, None)
            for old in [s for s in self._early if s < seq]:
                del self._early[old]
            self._cancelled[seq] = early
            return early is None or len(early) < requests

    def end(self, seq: int, count: int = 1) -> None:
        if seq in self._open:
            with self._lock:
                left = self._open.get(seq, 0) - count
                if left > 0:
                    self._open[seq] = left
                    return
                self._open.pop(seq, None)
        self._cancelled.pop(seq, None)

    def cancel(self, message: Cancel) -> None:
        with self._lock:
            seq = message.seq
            if seq in self._cancelled:
                found = self._cancelled[seq]
                if found is None:
                    self._cancelled[seq] = {message.item}
                else:
                    found.add(message.item)
            elif seq > self._begun:  # its Execute is queued here, not yet run
                self._early.setdefault(seq, set()).add(message.item)

    def is_cancelled(self, seq: int, item: int) -> bool:
        found = self._cancelled.get(seq)
        if found is not None and item in found:
            return True
        self._channel.poll()  # a Cancel may be waiting unread while execute() runs on the main thread
        found = self._cancelled.get(seq)
        return found is not None and item in found


class Responder:
    """Sends a decoupled model's responses (from any thread).

    Small outputs (`ipc.INLINE_BYTES` in all: a token of a generated text, a score) travel in the Response itself,
    and up to INLINE_WINDOW such responses may wait for their ResponseRead at once, so the model does not stop for
    each one's round trip. Larger ones go through the response region, used in two halves taken in turn: a
    response's outputs go into a half once the host has answered ResponseRead for the previous response in it, so
    the model prepares the next response while the host reads the last one. Either way a reader that is behind
    holds the model back (the host answers ResponseRead once the request's reader has room)."""

    def __init__(self, channel: Channel, model: UserModel, cancels: Cancels) -> None:
        self._channel = channel
        self._model = model
        self._cancels = cancels
        self._lock = threading.RLock()  # reentrant: a sender dropped during a send is abandoned by the same thread
        self._region: mmap.mmap | None = None
        self._token = 0
        self._pending = [0, 0]  # per half of the region: the token of the response in it not yet read (0: none)
        self._next = 0  # the half the next response goes into
        self._in_flight: deque[int] = deque()  # tokens of inline responses without their ResponseRead, oldest first

    def sender(self, pb: ModuleType, seq: int, item: int, wanted: list[str]) -> UserObject:
        """The response sender of request `item` of batch `seq`."""
        return pb._ResponseSender(
            lambda response, final: self.send(seq, item, wanted, response, final),
            lambda: self._cancels.is_cancelled(seq, item),
            lambda: self.abandon(seq, item),
        )

    def abandon(self, seq: int, item: int) -> None:
        """The model dropped a sender before its final response: the client gets an error, not a wait."""
        text = "the model released the response sender without sending the final flag"
        with self._lock:
            self._channel.send(Response(seq, item, ResponseEntry([], 1, text), True, 0))
        self._cancels.end(seq)

    def send(self, seq: int, item: int, wanted: list[str], response: UserObject, final: bool) -> None:
        """Raises: pb_utils.TritonModelException (the outputs do not fit in any region the host allows)."""
        with self._lock:
            found = [] if response is None else self._model.sent_outputs(wanted, response)
            if isinstance(found, tuple):
                code, text = found
                entry = ResponseEntry([], code if type(code) is int else -1, str(text))
                message = Response(seq, item, entry, final, 0)
            elif found:
                message = self._with_outputs(seq, item, found, final)
            else:
                message = Response(seq, item, None if response is None else ResponseEntry([]), final, 0)
            self._channel.send(message)
        if final:
            self._cancels.end(seq)

    def _with_outputs(self, seq: int, item: int, found: list[Output], final: bool) -> Response:
        """The Response carrying `found` (name, datatype, array): inline, or written into a half of the region."""
        payloads = [ipc.to_payload(datatype, array) for _, datatype, array in found]
        offsets, size = ipc.layout(payloads)
        inline = ipc.inline_text(offsets, payloads, size)
        if inline:
            if len(self._in_flight) >= INLINE_WINDOW:
                self._channel.wait(self._inline_room)
        else:
            region, base = self._take_half(size)
            offsets, _ = ipc.layout(payloads, base)
            ipc.write_payloads(region, offsets, payloads)
        descriptors: list[ipc.Descriptor] = [
            [name, datatype, list(array.shape), offset, len(payload)]
            for (name, datatype, array), offset, payload in zip(found, offsets, payloads, strict=True)
        ]
        self._token += 1
        if inline:
            self._in_flight.append(self._token)
            return Response(seq, item, ResponseEntry(descriptors), final, self._token, size, inline)
        self._pending[self._next] = self._token
        self._next ^= 1
        return Response(seq, item, ResponseEntry(descriptors), final, self._token)

    def _take_half(self, total: int) -> tuple[mmap.mmap, int]:
        """The region and the offset of the next half, once the host has read what was in it; a region whose
        halves hold `total` bytes is asked for first (after both halves were read)."""
        region = self._region
        if region is None or total > half_size(region):
            for half in (0, 1):
                self._wait_read(half)
            region = self._grow(2 * ipc.align(max(total, 1)))
        self._wait_read(self._next)
        return region, self._next * half_size(region)

    def _inline_room(self) -> bool | None:
        """Drop the oldest inline responses the host has answered; True once there is room (under `_state`)."""
        inline = self._in_flight
        while inline and self._channel.take_ack(inline[0]):
            inline.popleft()
        return True if len(inline) < INLINE_WINDOW else None

    def _wait_read(self, half: int) -> None:
        token = self._pending[half]
        if token:
            self._channel.wait(lambda: self._channel.take_ack(token))
            self._pending[half] = 0

    def _grow(self, total: int) -> mmap.mmap:
        region = self._region
        self._channel.send(ResponseGrow(total))
        size = self._channel.wait(self._channel.take_region_answer)
        if not size:
            assert self._model is not None
            raise self._model.pb.TritonModelException(f"the response needs {total} bytes, more than the backend allows")
        if region is not None:
            region.close()
        self._region = self._channel.receive_region(b"r", size, True)
        return self._region


def half_size(region: mmap.mmap) -> int:
    """The size of each half of a response region (aligned: the second half starts at this offset)."""
    return (len(region) // 2) & ~(ipc.ALIGNMENT - 1)
