"""The stub process of the python backend: loads one user `model.py` and serves the host's frames.

Started as `python -P -B -u .../bootstrap.py <ctrl fd> <fd socket> <in fd> <in size> <out fd> <out size> <uid>
<gid> model=<name> version=<v> instance=<instance>` (paths arrive in the Init message; bootstrap.py uses the uid
and gid; the names are only for operators, as `ps` shows them: the stub reads nothing after the gid).
Imports `ipc`, `messages`, `user_model`, the user's model and `triton_python_backend_utils` (via sys.path); it never
unpickles anything. Model code comes only through `model_source` (verified source, never bytecode or
extension modules from the model directory).
"""

from __future__ import annotations

import faulthandler
import importlib
import itertools
import json
import mmap
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

from seawall.backends.python import ipc, messages
from seawall.backends.python.call_client import CallClient
from seawall.backends.python.messages import (
    AutoCompleted,
    BatchFailed,
    BatchResult,
    CallFailed,
    CallResult,
    Cancel,
    Execute,
    Finalize,
    Finalized,
    Grow,
    HostMessage,
    Init,
    InitFailed,
    Log,
    MetricAnswer,
    MetricDelete,
    MetricFamilyNew,
    MetricMessage,
    MetricNew,
    MetricUpdate,
    MetricValue,
    OutputRegion,
    Ready,
    RequestHeader,
    Response,
    ResponseEntry,
    ResponseGrow,
    ResponseRead,
    ResponseRegion,
    StubMessage,
)
from seawall.backends.python.model_source import ModelSource, RepositoryFinder
from seawall.backends.python.user_model import (
    PB_DIR,
    PB_MODULE,
    BatchError,
    UserModel,
    UserObject,
    describe,
    load_from_repository,
)

if TYPE_CHECKING:
    import asyncio

_RECEIVE_BYTES = 1 << 16

_T = TypeVar("_T")


class _Channel:
    """Blocking message I/O on the control socket; sends are locked because user threads may log or call.

    Messages that arrive while the stub waits for a particular one (an output region during a batch, a BLS
    call's answer) are kept in order for `receive`; so are region fds that arrive before the message that uses
    them.

    Reading is shared: whichever thread needs a message reads the socket, one at a time (`_pump`, `_reading`
    under `_state`): the main thread, a thread waiting for its BLS call's answer or its ResponseRead, or the event
    loop of an `async def execute` model. The reader handles the aside messages it read (CallResult/CallFailed
    answers, ResponseRead, ResponseRegion, Cancel) and queues the others, then notifies `_state`: every waiter
    (for a message, a call's answer, an ack, a region answer) looks again, and one of them reads next.
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
        self._state = threading.Condition()  # guards the queues, answers, acks and `_reading`
        self._fd_lock = threading.Lock()  # held by the thread reading the fd socket
        self._reading = False  # a thread is reading the socket (only one may)
        self._closed = False
        self.on_frames: Callable[[], None] | None = None  # async models: wakes the event loop for new frames
        self._acks: set[int] = set()  # ResponseRead tokens not yet taken
        self._region_answers: deque[int] = deque()  # ResponseRegion sizes not yet taken
        self.on_cancel: Callable[[Cancel], None] = lambda cancel: None  # called under `_state` by the reader
        self._metric_answers: dict[int, MetricAnswer] = {}  # answers to model threads' metric asks, by ask

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
            self._state.wait()
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
            self._state.notify_all()
        if received is None:
            self._closed = True
            return False
        others = False
        for message in received:
            if type(message) is CallResult or type(message) is CallFailed:
                self._answers[message.call_id] = message
            elif type(message) is ResponseRead:
                self._acks.add(message.token)
            elif type(message) is ResponseRegion:
                self._region_answers.append(message.size)
            elif type(message) is Cancel:
                self.on_cancel(message)
            elif type(message) is MetricAnswer:
                self._metric_answers[message.ask] = message
            else:
                self._frames.append(message)
                others = True
        if others and self.on_frames is not None:
            self.on_frames()
        return True

    def receive(self) -> HostMessage | None:
        """The next message, or None once the host has gone."""
        with self._state:
            while not self._frames:
                if self._closed:
                    return None
                self._pump()
            return self._frames.popleft()

    def fileno(self) -> int:
        return self._control.fileno()

    def take(self) -> HostMessage | None:
        """The next queued message without reading, or None."""
        with self._state:
            return self._frames.popleft() if self._frames else None

    def read_available(self) -> None:
        """The socket is readable (the event loop saw it): read once, unless another thread is reading."""
        with self._state:
            if not self._reading and not self._closed:
                self._pump(wait=False)

    def poll(self) -> None:
        """Handle what has arrived, without waiting (nothing if another thread is reading: it handles it)."""
        with self._state:
            while not self._reading and not self._closed and self._pump(wait=False):
                pass

    @property
    def is_closed(self) -> bool:
        return self._closed

    def wait_answer(self, call_id: int) -> CallResult | CallFailed | None:
        """The answer to call `call_id`, or None once the host has gone (any thread)."""
        with self._state:
            while call_id not in self._answers:
                if self._closed:
                    return None
                self._pump()
            return self._answers.pop(call_id)

    def wait(self, taken: Callable[[], _T | None]) -> _T:
        """Read (or wait for the reader) until `taken()` (called under `_state`) returns something; return it.

        Raises:
            ipc.ProtocolError: the host has gone.
        """
        with self._state:
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
        with self._state:
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
        return _map(fd, size, writable, private)


class _StubMetrics:
    """pb_utils.MetricFamily's way to the server from a stub: asks wait for their answer (from any thread),
    updates and deletes are sent without one. Errors raise RuntimeError with the server's message."""

    def __init__(self, channel: _Channel) -> None:
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


def _map(fd: int, size: int, writable: bool, private: bool = False) -> mmap.mmap:
    """Map a region's fd (and close it). `private`: copy-on-write, so a model may write into arrays over a
    sealed region (a BLS call's outputs) as into any numpy array, without a copy until it does."""
    try:
        if private:
            return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        return mmap.mmap(fd, size, prot=prot)
    finally:
        os.close(fd)


class _Cancels:
    """Which requests' clients went away (Cancel), per running batch; read by `request.is_cancelled()` and
    `sender.is_cancelled()` from any thread. A batch is tracked from its Execute until its execute() returned
    and, for a decoupled model, every request's stream ended.

    Per batch on the hot path: a few dict operations (no set is made until a Cancel comes)."""

    def __init__(self, channel: _Channel) -> None:
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


class _Responder:
    """Sends a decoupled model's responses (from any thread). The response region is used in two halves, taken in
    turn: a response's outputs go into a half once the host has answered ResponseRead for the previous response
    in it, so the model prepares the next response while the host reads the last one, and at most two responses
    with outputs are in flight (a reader that is behind holds the model back)."""

    def __init__(self, channel: _Channel, model: UserModel, cancels: _Cancels) -> None:
        self._channel = channel
        self._model = model
        self._cancels = cancels
        self._lock = threading.RLock()  # reentrant: a sender dropped during a send is abandoned by the same thread
        self._region: mmap.mmap | None = None
        self._token = 0
        self._pending = [0, 0]  # per half of the region: the token of the response in it not yet read (0: none)
        self._next = 0  # the half the next response goes into

    def sender(self, pb: ModuleType, seq: int, item: int, wanted: list[str]) -> UserObject:
        """The response sender of request `item` of batch `seq`."""
        return pb.InferenceResponseSender(
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
            entry: ResponseEntry | None = None if response is None else ResponseEntry([])
            token = 0
            found = [] if response is None else self._model.sent_outputs(wanted, response)
            if isinstance(found, tuple):
                code, text = found
                entry = ResponseEntry([], code if type(code) is int else -1, str(text))
            elif found:
                payloads = [ipc.to_payload(datatype, array) for _, datatype, array in found]
                region, base = self._take_half(ipc.layout(payloads)[1])
                offsets, _ = ipc.layout(payloads, base)
                ipc.write_payloads(region, offsets, payloads)
                descriptors: list[ipc.Descriptor] = [
                    [name, datatype, list(array.shape), offset, len(payload)]
                    for (name, datatype, array), offset, payload in zip(found, offsets, payloads, strict=True)
                ]
                self._token += 1
                token = self._token
                self._pending[self._next] = token
                self._next ^= 1
                entry = ResponseEntry(descriptors)
            self._channel.send(Response(seq, item, entry, final, token))
        if final:
            self._cancels.end(seq)

    def _take_half(self, total: int) -> tuple[mmap.mmap, int]:
        """The region and the offset of the next half, once the host has read what was in it; a region whose
        halves hold `total` bytes is asked for first (after both halves were read)."""
        region = self._region
        if region is None or total > _half(region):
            for half in (0, 1):
                self._wait_read(half)
            region = self._grow(2 * ipc.align(max(total, 1)))
        self._wait_read(self._next)
        return region, self._next * _half(region)

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


class _Stub:
    """Owns the user model and every slot's regions; everything runs on the stub's main thread."""

    def __init__(self, channel: _Channel, inputs: mmap.mmap, outputs: mmap.mmap) -> None:
        self._channel = channel
        self._inputs: dict[int, mmap.mmap] = {0: inputs}  # slot → region the host writes inputs to
        self._outputs: dict[int, mmap.mmap] = {0: outputs}  # slot → region this stub writes outputs to
        self._pb: ModuleType | None = None
        self._model: UserModel | None = None
        self._calls: CallClient | None = None  # BLS and model control (pb_utils calls it)
        self._order: deque[int] = deque()  # async models: seqs of the batches running, in arrival order
        self._finished: dict[int, StubMessage] = {}  # async models: results waiting for earlier batches
        self._cancels = _Cancels(channel)
        self._responder: _Responder | None = None  # decoupled models only

    def run(self) -> None:
        first = self._channel.receive()
        if type(first) is not Init:
            return
        if not self._start(first):
            return
        assert self._calls is not None and self._model is not None
        self._calls.serving = True
        if self._model.is_async and self._responder is None:  # decoupled: awaited on the main thread
            self._serve_async(self._model)
            return
        while (message := self._channel.receive()) is not None:
            if type(message) is Execute:
                self._channel.send(self._execute(message))
            elif type(message) is Finalize:
                self._finalize()
                self._channel.send(Finalized())
                return

    def _log(self, level: int, text: str, file: str = "", line: int = 0) -> None:
        self._channel.send(Log(level, text, file, line))

    def _load_class(self, init: Init) -> UserObject:
        sys.dont_write_bytecode = True  # also set by -B: nothing is ever cached into the repository
        sys.path.insert(0, PB_DIR)
        self._pb = importlib.import_module(PB_MODULE)
        self._pb._set_log_sink(self._log)
        metrics = _StubMetrics(self._channel)
        self._pb._set_metrics_sink(lambda: metrics)
        model_dir = os.path.dirname(init.model_file)
        self._pb._set_model_dir(lambda: model_dir)
        self._calls = CallClient(self._channel, self._pb, init.args.get("model_instance_name", ""))
        self._calls.has_server = init.mode == "model"
        self._pb._set_call_handler(self._calls)
        finder = RepositoryFinder(ModelSource(init.model_dir, init.pins))
        module_name = os.path.splitext(os.path.basename(init.model_file))[0]
        return load_from_repository(init.model_file, module_name, init.version_dir, finder, keep_version_dir=True)

    def _start(self, init: Init) -> bool:
        """Load the model and run initialize (or auto_complete_config); reply; False to exit."""
        try:
            model_class = self._load_class(init)
            if init.mode == "auto_complete":
                self._channel.send(AutoCompleted(self._auto_complete(model_class, init)))
                return False
            assert self._pb is not None
            self._model = UserModel(self._pb, model_class, init.model_name)
            if _is_decoupled(init.args):
                self._responder = _Responder(self._channel, self._model, self._cancels)
            self._model.initialize(init.args)
        except Exception as exc:
            error = describe(exc)
            if isinstance(exc, PermissionError) and exc.filename:  # the model user (--model-user) lacks access
                error = f"the model user (uid {os.getuid()}) cannot read {exc.filename}"
            self._channel.send(InitFailed(error, traceback.format_exc()))
            return False
        self._channel.send(Ready())
        return True

    def _auto_complete(self, model_class: UserObject, init: Init) -> dict[str, object] | None:
        if not hasattr(model_class, "auto_complete_config"):
            return None
        assert self._pb is not None
        config = self._pb.ModelConfig(init.config)
        result = model_class.auto_complete_config(config)
        if not isinstance(result, self._pb.ModelConfig):
            raise TypeError("auto_complete_config must return the pb_utils.ModelConfig it was given")
        completed: dict[str, object] = result.as_dict()
        return completed

    def _finalize(self) -> None:
        if self._calls is not None:
            self._calls.serving = False
        if self._model is not None:
            try:
                self._model.finalize()
            except Exception:
                self._log(2, "finalize failed: " + traceback.format_exc())

    def _execute(self, message: Execute) -> BatchResult | BatchFailed:
        seq = message.seq
        if self._responder is not None:
            return self._execute_decoupled(message, self._responder)
        if not self._cancels.begin(seq, len(message.requests)):
            self._cancels.end(seq)
            return self._skip_cancelled(message)
        try:
            slot = self._receive_regions(message)
            assert self._model is not None
            started = time.monotonic_ns()  # CLOCK_MONOTONIC: the host reads the same clock
            requests = [self._request(self._model, slot, header, seq, i) for i, header in enumerate(message.requests)]
            executing = time.monotonic_ns()
            responses = self._model.execute(requests)
            executed = time.monotonic_ns()
            entries = self._write_responses(slot, requests, responses)
            return BatchResult(seq, entries, started, time.monotonic_ns(), executing, executed)
        except BatchError as exc:
            return BatchFailed(seq, str(exc), "")
        except Exception as exc:
            return BatchFailed(seq, describe(exc), traceback.format_exc())
        finally:
            self._cancels.end(seq)

    def _execute_decoupled(self, message: Execute, responder: _Responder) -> BatchResult | BatchFailed:
        """Run execute() of a decoupled model: its responses leave through the senders (Response messages);
        the answer (no entries) says execute() returned. If it raised, every sender is closed (the host ends
        each request's stream with the error), as in Triton."""
        seq = message.seq
        model, pb = self._model, self._pb
        assert model is not None and pb is not None
        if not self._cancels.begin(seq, len(message.requests), len(message.requests)):
            self._cancels.end(seq, 1 + len(message.requests))
            return self._skip_cancelled(message)
        senders: list[UserObject] = []
        try:
            slot = self._receive_regions(message)
            started = time.monotonic_ns()
            requests = []
            for item, header in enumerate(message.requests):
                request = self._request(model, slot, header, seq, item)
                request._sender = responder.sender(pb, seq, item, header.outputs)
                senders.append(request._sender)
                requests.append(request)
            model.execute_decoupled(requests)
            finished = time.monotonic_ns()
            return BatchResult(seq, [], started, finished, started, finished)
        except Exception as exc:
            for sender in senders:
                sender._close()
            self._cancels.end(seq, len(message.requests))
            if isinstance(exc, BatchError):
                return BatchFailed(seq, str(exc), "")
            return BatchFailed(seq, describe(exc), traceback.format_exc())
        finally:
            self._cancels.end(seq)

    def _skip_cancelled(self, message: Execute) -> BatchFailed:
        """A batch whose every client went away while it waited here is not run (as Triton drops cancelled
        requests before they execute); its new regions are still taken."""
        try:
            self._receive_regions(message)
        except Exception as exc:
            return BatchFailed(message.seq, describe(exc), traceback.format_exc())
        return BatchFailed(message.seq, "the request was cancelled", "")

    def _serve_async(self, model: UserModel) -> None:
        """An `async def execute` model: each batch runs as a task of the model's event loop, so one batch's
        awaits (BLS calls, I/O) overlap another's; results still go out in the order the batches came, as the
        host expects (a finished batch waits for the earlier ones)."""
        import asyncio  # only async models pay for it

        loop = model.event_loop()
        channel = self._channel
        tasks: set[asyncio.Task[None]] = set()
        done: asyncio.Future[bool] = loop.create_future()  # True: Finalize came; False: the host has gone

        def process() -> None:
            while (message := channel.take()) is not None:
                if type(message) is Execute:
                    self._order.append(message.seq)
                    task = loop.create_task(self._execute_async(model, message))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif type(message) is Finalize and not done.done():
                    done.set_result(True)
            if channel.is_closed and not done.done():
                done.set_result(False)

        def readable() -> None:
            try:
                channel.read_available()
            except (OSError, ipc.ProtocolError):  # the host has gone (or broke the protocol): stop serving
                loop.remove_reader(channel.fileno())
                if not done.done():
                    done.set_result(False)
                return
            process()

        channel.on_frames = lambda: loop.call_soon_threadsafe(process)
        loop.add_reader(channel.fileno(), readable)
        try:
            process()
            finalize = loop.run_until_complete(done)
            loop.remove_reader(channel.fileno())  # no-op if already removed
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        finally:
            channel.on_frames = None
        if finalize:
            self._finalize()
            channel.send(Finalized())

    async def _execute_async(self, model: UserModel, message: Execute) -> None:
        seq = message.seq
        result: StubMessage
        if not self._cancels.begin(seq, len(message.requests)):
            self._cancels.end(seq)
            result = self._skip_cancelled(message)
        else:
            try:
                slot = self._receive_regions(message)
                started = time.monotonic_ns()
                requests = [self._request(model, slot, header, seq, i) for i, header in enumerate(message.requests)]
                responses = await model.execute_async(requests)
                entries = self._write_responses(slot, requests, responses)
                result = BatchResult(seq, entries, started, time.monotonic_ns())
            except BatchError as exc:
                result = BatchFailed(seq, str(exc), "")
            except Exception as exc:
                result = BatchFailed(seq, describe(exc), traceback.format_exc())
            finally:
                self._cancels.end(seq)
        self._finished[seq] = result
        while self._order and self._order[0] in self._finished:
            self._channel.send(self._finished.pop(self._order.popleft()))

    def _receive_regions(self, message: Execute) -> int:
        """The message's slot, mapping the new regions it announces (a new slot, or grown inputs)."""
        slot = message.slot
        if message.inputs_size:
            memory = self._channel.receive_region(b"i%d" % slot, message.inputs_size, False)
            self._replace(self._inputs, slot, memory)
        if message.outputs_size:
            memory = self._channel.receive_region(b"o%d" % slot, message.outputs_size, True)
            self._replace(self._outputs, slot, memory)
        if slot not in self._inputs or slot not in self._outputs:
            raise ipc.ProtocolError("slot without regions")
        return slot

    @staticmethod
    def _replace(regions: dict[int, mmap.mmap], slot: int, memory: mmap.mmap) -> None:
        old = regions.get(slot)
        regions[slot] = memory
        if old is not None:
            try:
                old.close()
            except BufferError:
                pass  # the model kept a view of an old input: the mapping goes when that view does

    def _request(self, model: UserModel, slot: int, header: RequestHeader, seq: int, item: int) -> UserObject:
        memory = self._inputs[slot]
        inputs = [ipc.read_tensor(memory, descriptor, copy=False) for descriptor in header.inputs]
        request = model.request(
            inputs, header.outputs, header.id, header.correlation_id, header.flags, header.parameters
        )
        request._cancel_state = self._cancels
        request._seq = seq
        request._item = item
        return request

    def _write_responses(
        self, slot: int, requests: Sequence[UserObject], responses: Sequence[UserObject]
    ) -> list[ResponseEntry]:
        """Place every requested output in the slot's output region; returns the per-response entries."""
        assert self._model is not None
        entries: list[ResponseEntry] = []
        pending: list[tuple[list[ipc.Descriptor], str, str, list[int], ipc.Payload]] = []
        for request, response in zip(requests, responses, strict=True):
            found = self._model.outputs(request, response)
            if isinstance(found, tuple):
                code, text = found
                entries.append(ResponseEntry([], code if type(code) is int else -1, str(text)))
                continue
            descriptors: list[ipc.Descriptor] = []
            for name, datatype, array in found:
                pending.append((descriptors, name, datatype, list(array.shape), ipc.to_payload(datatype, array)))
            entries.append(ResponseEntry(descriptors, None, "", getattr(response, "_parameters", None)))
        payloads = [item[4] for item in pending]
        offsets, total = ipc.layout(payloads)
        self._ensure_output_size(slot, total)
        ipc.write_payloads(self._outputs[slot], offsets, payloads)
        for (descriptors, name, datatype, shape, payload), offset in zip(pending, offsets, strict=True):
            descriptors.append([name, datatype, shape, offset, len(payload)])
        return entries

    def _ensure_output_size(self, slot: int, total: int) -> None:
        """Ask the host for a bigger output region when this batch's outputs do not fit."""
        if total <= len(self._outputs[slot]):
            return
        self._channel.send(Grow(slot, total))
        reply = self._channel.receive_region_answer()
        if reply is None:
            raise ipc.ProtocolError("host did not provide an output region")
        if not reply.size:
            raise BatchError(f"the outputs of this batch need {total} bytes, more than the backend allows")
        self._replace(self._outputs, slot, self._channel.receive_region(b"o%d" % slot, reply.size, True))


def _half(region: mmap.mmap) -> int:
    """The size of each half of a response region (aligned: the second half starts at this offset)."""
    return (len(region) // 2) & ~(ipc.ALIGNMENT - 1)


def _is_decoupled(args: dict[str, str]) -> bool:
    """Whether the model config of initialize(args) is decoupled (`model_transaction_policy`)."""
    try:
        config = json.loads(args.get("model_config", "{}"))
        return bool(config.get("model_transaction_policy", {}).get("decoupled", False))
    except (ValueError, AttributeError):
        return False


def main(argv: Sequence[str]) -> None:
    """Entry point of the stub process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when stubs stop (Ctrl-C hits the group)
    faulthandler.enable()  # a crash in user code leaves a Python traceback in the server log
    control_fd, fd_socket, in_fd, in_size, out_fd, out_size = (int(arg) for arg in argv[1:7])
    channel = _Channel(socket.socket(fileno=control_fd), socket.socket(fileno=fd_socket))
    stub = _Stub(channel, _map(in_fd, in_size, writable=False), _map(out_fd, out_size, writable=True))
    try:
        stub.run()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the host went away; nothing left to answer


if __name__ == "__main__":
    main(sys.argv)
