"""The stub process of the python backend: loads one user `model.py` and serves the host's frames.

Started as `python -P -B -u .../bootstrap.py <ctrl fd> <fd socket> <in fd> <in size> <out fd> <out size> <uid>
<gid>` (argv holds only numbers: names and paths arrive in the Init message; bootstrap.py uses the uid and gid).
Imports `ipc`, `messages`, `user_model`, the user's model and `triton_python_backend_utils` (via sys.path); it never
unpickles anything. Model code comes only through `model_source` (verified source, never bytecode or
extension modules from the model directory).
"""

from __future__ import annotations

import faulthandler
import importlib
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
from typing import TYPE_CHECKING

from seawall.backends.python import ipc, messages
from seawall.backends.python.call_client import CallClient
from seawall.backends.python.messages import (
    AutoCompleted,
    BatchFailed,
    BatchResult,
    CallFailed,
    CallResult,
    Execute,
    Finalize,
    Finalized,
    Grow,
    HostMessage,
    Init,
    InitFailed,
    Log,
    OutputRegion,
    Ready,
    RequestHeader,
    ResponseEntry,
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


class _Channel:
    """Blocking message I/O on the control socket; sends are locked because user threads may log or call.

    Messages that arrive while the stub waits for a particular one (an output region during a batch, a BLS
    call's answer) are kept in order for `receive`; so are region fds that arrive before the message that uses
    them. Whichever thread needs a message reads the socket, one at a time (`_pump`): the main thread, a thread
    waiting for its call's answer, or the event loop of an `async def execute` model.
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
        self._state = threading.Condition()  # guards the queues and `_reading`
        self._fd_lock = threading.Lock()
        self._reading = False  # a thread is reading the socket (only one may)
        self._closed = False
        self.on_frames: Callable[[], None] | None = None  # async models: wakes the event loop for new frames

    def send(self, message: StubMessage) -> None:
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

    def _pump(self, wait: bool = True) -> None:
        """With `_state` held: read the socket once (releasing `_state` meanwhile), or wait for the thread that
        is reading. `wait` False: never block (another thread may have taken the bytes that woke the caller)."""
        if self._reading:
            self._state.wait()
            return
        self._reading = True
        self._state.release()
        received = None
        try:
            count = self._control.recv_into(self._buffer, 0, 0 if wait else socket.MSG_DONTWAIT)
            received = self._decoder.feed(self._view[:count]) if count else None
        except BlockingIOError:
            return  # (finally runs first) nothing to read now
        finally:
            self._state.acquire()
            self._reading = False
            self._state.notify_all()
        if received is None:
            self._closed = True
            return
        others = False
        for message in received:
            if type(message) is CallResult or type(message) is CallFailed:
                self._answers[message.call_id] = message
            else:
                self._frames.append(message)
                others = True
        if others and self.on_frames is not None:
            self.on_frames()

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

    def run(self) -> None:
        first = self._channel.receive()
        if type(first) is not Init:
            return
        if not self._start(first):
            return
        assert self._calls is not None and self._model is not None
        self._calls.serving = True
        if self._model.is_async:
            self._serve_async(self._model)
            return
        while (message := self._channel.receive()) is not None:
            if type(message) is Execute:
                self._channel.send(self._execute(message))
            elif type(message) is Finalize:
                self._finalize()
                self._channel.send(Finalized())
                return

    def _log(self, level: int, text: str) -> None:
        self._channel.send(Log(level, text))

    def _load_class(self, init: Init) -> UserObject:
        sys.dont_write_bytecode = True  # also set by -B: nothing is ever cached into the repository
        sys.path.insert(0, PB_DIR)
        self._pb = importlib.import_module(PB_MODULE)
        self._pb._set_log_sink(self._log)
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
        try:
            slot = self._receive_regions(message)
            assert self._model is not None
            started = time.monotonic_ns()  # CLOCK_MONOTONIC: the host reads the same clock
            requests = [self._request(self._model, slot, header) for header in message.requests]
            responses = self._model.execute(requests)
            entries = self._write_responses(slot, requests, responses)
            return BatchResult(seq, entries, started, time.monotonic_ns())
        except BatchError as exc:
            return BatchFailed(seq, str(exc), "")
        except Exception as exc:
            return BatchFailed(seq, describe(exc), traceback.format_exc())

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
        try:
            slot = self._receive_regions(message)
            started = time.monotonic_ns()
            requests = [self._request(model, slot, header) for header in message.requests]
            responses = await model.execute_async(requests)
            entries = self._write_responses(slot, requests, responses)
            result = BatchResult(seq, entries, started, time.monotonic_ns())
        except BatchError as exc:
            result = BatchFailed(seq, str(exc), "")
        except Exception as exc:
            result = BatchFailed(seq, describe(exc), traceback.format_exc())
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

    def _request(self, model: UserModel, slot: int, header: RequestHeader) -> UserObject:
        memory = self._inputs[slot]
        inputs = [ipc.read_tensor(memory, descriptor, copy=False) for descriptor in header.inputs]
        return model.request(inputs, header.outputs, header.id, header.correlation_id, header.flags, header.parameters)

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
            entries.append(ResponseEntry(descriptors))
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
