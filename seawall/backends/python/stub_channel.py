"""The stub process's side of the control channel: blocking, thread-shared message I/O (`Channel`), the mapping
of region fds the host passes (`map_region`) and the metric sink of pb_utils.MetricFamily (`StubMetrics`).

Imports `ipc` and `messages` only (the stub loads it: it stays light).
"""

from __future__ import annotations

import fcntl
import itertools
import mmap
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from seawall.backends.python import ipc, messages
from seawall.backends.python.messages import (
    CallFailed,
    CallResult,
    CallStreamed,
    Cancel,
    HostMessage,
    MetricAnswer,
    MetricDelete,
    MetricFamilyNew,
    MetricMessage,
    MetricNew,
    MetricUpdate,
    MetricValue,
    OutputRegion,
    ReadyCheck,
    ResponseRead,
    ResponseRegion,
    StubMessage,
)

_RECEIVE_BYTES = 1 << 16

_T = TypeVar("_T")


class Channel:
    """Blocking message I/O on the control socket; sends are locked because user threads may log or call.

    Messages that arrive while the stub waits for a particular one (an output region during a batch, a BLS
    call's answer) are kept in order for `receive`; so are region fds that arrive before the message that uses
    them.

    Reading is shared: whichever thread needs a message reads the socket, one at a time (`_pump`, `_reading`
    under `_state`): the main thread, a thread waiting for its BLS call's answer or its ResponseRead, or the event
    loop of an `async def execute` model. The reader handles the aside messages it read (CallResult/CallFailed
    answers, CallStreamed, ResponseRead, ResponseRegion, Cancel) and queues the others, then notifies `_state`:
    every waiter (for a message, a call's answer, an ack, a region answer) looks again, and one of them reads next.
    """

    def __init__(self, control: socket.socket, fds: socket.socket) -> None:
        self._control = control
        self._fds = fds
        self._decoder = messages.FrameDecoder(messages.decode_host_message)
        self._frames: deque[HostMessage] = deque()
        self._answers: dict[int, CallResult | CallFailed] = {}  # BLS answers by call id, until taken
        self._buffer = bytearray(_RECEIVE_BYTES)  # reused: one recv_into per read, no allocation
        self._view = memoryview(self._buffer)
        self._regions: dict[bytes, int] = {}  # tag → fd received ahead of its message
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()  # entered directly (`with`): Condition's own __enter__ is Python code
        self._state = threading.Condition(self._state_lock)  # guards the queues, answers, acks and `_reading`
        self._fd_lock = threading.Lock()  # held by the thread reading the fd socket
        self._reading = False  # a thread is reading the socket (only one may)
        self._waiting = 0  # threads waiting in `_pump` for the reader
        self._closed = False
        self.on_frames: Callable[[], None] | None = None  # async models: wakes the event loop for new frames
        self._acks: set[int] = set()  # ResponseRead tokens not yet taken
        self._region_answers: deque[int] = deque()  # ResponseRegion sizes not yet taken
        self.on_cancel: Callable[[Cancel], None] = lambda cancel: None  # called under `_state` by the reader
        self.on_ready_check: Callable[[ReadyCheck], None] = lambda check: None  # the same (must not block)
        self._metric_answers: dict[int, MetricAnswer] = {}  # answers to model threads' metric asks, by ask
        self._streamed: dict[int, deque[CallStreamed]] = {}  # StreamCall responses by call id, until taken
        self._dropped: deque[int] = deque()  # StreamCalls whose iterator was dropped (appended by __del__)
        self._abandoned: set[int] = set()  # dropped StreamCalls still streaming: their responses are discarded

    def send(self, message: StubMessage | MetricMessage) -> None:
        data = messages.encode(message)
        with self._lock:
            self._control.sendall(data)

    def send_fd(self, tag: bytes, fd: int) -> None:
        """Pass a region's fd to the host under `tag` (before the message that uses it); closes `fd`."""
        try:
            with self._lock:
                socket.send_fds(self._fds, [tag], [fd])
        finally:
            os.close(fd)

    def _pump(self, wait: bool = True) -> bool:
        """With `_state` held: read the socket once (releasing `_state` meanwhile), or wait for the thread that
        is reading. `wait` False: never block (another thread may have taken the bytes that woke the caller).
        True if this call read something (False: it waited, nothing was there, or the host has gone)."""
        if self._reading:
            self._waiting += 1
            try:
                self._state.wait()
            finally:
                self._waiting -= 1
            return False
        self._reading = True
        self._state.release()
        received = None
        try:
            count = self._control.recv_into(self._buffer, 0, 0 if wait else socket.MSG_DONTWAIT)
            received = self._decoder.feed(self._view[:count]) if count else None
        except BlockingIOError:
            return False  # (finally runs first) nothing to read now
        finally:
            self._state.acquire()
            self._reading = False
            if self._waiting:  # (notify_all is Python code: a single-threaded model would pay it every message)
                self._state.notify_all()
        if received is None:
            self._closed = True
            return False
        others = False
        for message in received:
            if type(message) is CallResult or type(message) is CallFailed:
                if message.call_id in self._abandoned:  # a dropped StreamCall failed: nobody waits
                    self._abandoned.discard(message.call_id)
                else:
                    self._answers[message.call_id] = message
            elif type(message) is CallStreamed:
                self._on_streamed(message)
            elif type(message) is ResponseRead:
                self._acks.add(message.token)
            elif type(message) is ResponseRegion:
                self._region_answers.append(message.size)
            elif type(message) is Cancel:
                self.on_cancel(message)
            elif type(message) is ReadyCheck:
                self.on_ready_check(message)
            elif type(message) is MetricAnswer:
                self._metric_answers[message.ask] = message
            else:
                self._frames.append(message)
                others = True
        if others and self.on_frames is not None:
            self.on_frames()
        return True

    def receive(self) -> HostMessage | None:
        """The next message, or None once the host has gone. One thread receives (the main thread; an async
        model's event loop uses `take`), so a message queued by an earlier read is taken without the lock."""
        if self._frames:
            return self._frames.popleft()
        with self._state_lock:
            while not self._frames:
                if self._closed:
                    return None
                self._pump()
            return self._frames.popleft()

    def fileno(self) -> int:
        return self._control.fileno()

    def take(self) -> HostMessage | None:
        """The next queued message without reading, or None."""
        with self._state_lock:
            return self._frames.popleft() if self._frames else None

    def read_available(self) -> None:
        """The socket is readable (the event loop saw it): read once, unless another thread is reading."""
        with self._state_lock:
            if not self._reading and not self._closed:
                self._pump(wait=False)

    def poll(self) -> None:
        """Handle what has arrived, without waiting (nothing if another thread is reading: it handles it)."""
        with self._state_lock:
            while not self._reading and not self._closed and self._pump(wait=False):
                pass

    @property
    def is_closed(self) -> bool:
        return self._closed

    def wait_answer(self, call_id: int) -> CallResult | CallFailed | None:
        """The answer to call `call_id`, or None once the host has gone (any thread)."""
        with self._state_lock:
            while call_id not in self._answers:
                if self._closed:
                    return None
                self._pump()
            return self._answers.pop(call_id)

    def wait_streamed(self, call_id: int) -> CallStreamed | CallFailed | None:
        """The next answer to StreamCall `call_id` (any thread), or None once the host has gone."""
        with self._state_lock:
            self._drain_dropped()
            while True:
                queue = self._streamed.get(call_id)
                if queue:
                    found = queue.popleft()
                    if not queue:
                        del self._streamed[call_id]
                    return found
                failed = self._answers.pop(call_id, None)
                if failed is not None:
                    return failed  # type: ignore[return-value]  # a StreamCall is answered by CallFailed only
                if self._closed:
                    return None
                self._pump()

    def drop_stream(self, call_id: int) -> None:
        """The iterator of StreamCall `call_id` was dropped before its end: its responses are discarded. Takes
        no lock (called from `__del__`): the next reader does the work."""
        self._dropped.append(call_id)

    def _on_streamed(self, message: CallStreamed) -> None:
        """Under `_state`, by the reader."""
        self._drain_dropped()
        if message.call_id in self._abandoned:
            if message.final:
                self._abandoned.discard(message.call_id)
            self._discard(message)
        else:
            self._streamed.setdefault(message.call_id, deque()).append(message)

    def _drain_dropped(self) -> None:
        """Under `_state`: forget what dropped iterators left (closing their regions); mark the unfinished."""
        while self._dropped:
            call_id = self._dropped.popleft()
            queued = self._streamed.pop(call_id, deque())
            ended = self._answers.pop(call_id, None) is not None
            for streamed in queued:
                ended = ended or streamed.final
                self._discard(streamed)
            if not ended:
                self._abandoned.add(call_id)

    def _discard(self, message: CallStreamed) -> None:
        if message.size and not message.inline:  # inline bytes came in the message: no region waits
            self.receive_region(b"s%d.%d" % (message.call_id, message.position), message.size, False).close()

    def wait(self, taken: Callable[[], _T | None]) -> _T:
        """Read (or wait for the reader) until `taken()` (called under `_state`) returns something; return it.

        Raises:
            ipc.ProtocolError: the host has gone.
        """
        with self._state_lock:
            while True:
                found = taken()
                if found is not None:
                    return found
                if self._closed:
                    raise ipc.ProtocolError("the host has gone")
                self._pump()

    def take_ack(self, token: int) -> bool | None:
        """True if ResponseRead(token) has arrived (taking it); call under `_state` (through `wait`)."""
        if token in self._acks:
            self._acks.discard(token)
            return True
        return None

    def take_region_answer(self) -> int | None:
        """The size of the first ResponseRegion not yet taken; call under `_state` (through `wait`)."""
        return self._region_answers.popleft() if self._region_answers else None

    def receive_region_answer(self) -> OutputRegion | None:
        """The first OutputRegion message; messages before it stay queued for `receive`."""
        with self._state_lock:
            while True:
                for index, frame in enumerate(self._frames):
                    if type(frame) is OutputRegion:
                        del self._frames[index]
                        return frame
                if self._closed:
                    return None
                self._pump()

    def receive_answer(self, ask: int) -> MetricAnswer | None:
        """The MetricAnswer to `ask` (any thread), or None once the host has gone."""
        try:
            return self.wait(lambda: self._metric_answers.pop(ask, None))
        except ipc.ProtocolError:
            return None

    def receive_region(self, tag: bytes, size: int, writable: bool, private: bool = False) -> mmap.mmap:
        """Map the memfd the host sent on the fd socket under `tag` (fds for other tags are kept)."""
        with self._fd_lock:
            while tag not in self._regions:
                data, fds, _, _ = socket.recv_fds(self._fds, 64, 1)
                if len(fds) != 1:
                    raise ipc.ProtocolError("expected one region fd")
                if data in self._regions:
                    os.close(self._regions[data])
                self._regions[data] = fds[0]
            fd = self._regions.pop(tag)
        return map_region(fd, size, writable, private)


class StubMetrics:
    """pb_utils.MetricFamily's way to the server from a stub: asks wait for their answer (from any thread),
    updates and deletes are sent without one. Errors raise RuntimeError with the server's message."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._asks = itertools.count(1)

    def family(self, family: int, name: str, description: str, kind: int) -> None:
        self._ask(MetricFamilyNew(next(self._asks), family, name, description, kind))

    def metric(self, metric: int, family: int, labels: dict[str, str], buckets: list[float] | None) -> None:
        self._ask(MetricNew(next(self._asks), metric, family, labels, buckets))

    def apply(self, metric: int, op: int, value: float) -> None:
        self._channel.send(MetricUpdate(metric, op, messages.wire_float(value)))

    def value(self, metric: int) -> float:
        return self._ask(MetricValue(next(self._asks), metric))

    def delete(self, kind: int, id_: int) -> None:
        self._channel.send(MetricDelete(kind, id_))

    def _ask(self, message: MetricFamilyNew | MetricNew | MetricValue) -> float:
        self._channel.send(message)
        answer = self._channel.receive_answer(message.ask)
        if answer is None:
            raise RuntimeError("the server has gone")
        if answer.error:
            raise RuntimeError(answer.error)
        return messages.float_of(answer.value)


def map_region(fd: int, size: int, writable: bool, private: bool = False) -> mmap.mmap:
    """Map a region's fd (and close it). `private`: copy-on-write, so a model may write into arrays over a
    sealed region (a BLS call's outputs) as into any numpy array, without a copy until it does."""
    try:
        if private or (writable and fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE):
            # a sealed region as a slot's inputs is a BLS call's, handed on by the host: copy-on-write too
            return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        return mmap.mmap(fd, size, prot=prot)
    finally:
        os.close(fd)
