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

from seawall.backends.python import ipc, messages
from seawall.backends.python.messages import (
    AutoCompleted,
    BatchFailed,
    BatchResult,
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

_RECEIVE_BYTES = 1 << 16


class _Channel:
    """Blocking message I/O on the control socket; sends are locked because user threads may log.

    Messages that arrive while the stub waits for a particular one (an output region during a batch) are
    kept in order for `receive`; so are region fds that arrive before the message that uses them.
    """

    def __init__(self, control: socket.socket, fds: socket.socket) -> None:
        self._control = control
        self._fds = fds
        self._decoder = messages.FrameDecoder(messages.decode_host_message)
        self._frames: deque[HostMessage] = deque()
        self._buffer = bytearray(_RECEIVE_BYTES)  # reused: one recv_into per read, no allocation
        self._view = memoryview(self._buffer)
        self._regions: dict[bytes, int] = {}  # tag → fd received ahead of its message
        self._lock = threading.Lock()
        # Model threads may wait for answers (MetricAnswer) while the main thread waits for the host's next
        # message: whoever waits reads the socket, one thread at a time, and every frame read is kept in
        # `_frames` for the thread it belongs to (guarded by this condition).
        self._reader = threading.Condition()
        self._reading = False

    def send(self, message: StubMessage | MetricMessage) -> None:
        data = messages.encode(message)
        with self._lock:
            self._control.sendall(data)

    def _read(self) -> bool:
        count = self._control.recv_into(self._buffer)
        if not count:
            return False
        self._frames.extend(self._decoder.feed(self._view[:count]))
        return True

    def receive(self) -> HostMessage | None:
        """The next message but answers to model threads, or None once the host has gone."""
        with self._reader:  # the usual case first: the next frame is already here
            frames = self._frames
            if frames and type(frames[0]) is not MetricAnswer:
                return frames.popleft()
        return self._take(_is_for_main)

    def receive_region_answer(self) -> OutputRegion | None:
        """The first OutputRegion message; messages before it stay queued for `receive`."""
        return self._take(_is_region_answer)  # type: ignore[return-value]  # the test picks OutputRegion only

    def receive_answer(self, ask: int) -> MetricAnswer | None:
        """The MetricAnswer to `ask` (any thread), or None once the host has gone."""
        return self._take(lambda frame: type(frame) is MetricAnswer and frame.ask == ask)  # type: ignore[return-value]

    def _take(self, wanted: Callable[[HostMessage], bool]) -> HostMessage | None:
        """The first queued frame `wanted` accepts, reading the socket (one thread at a time) until one comes."""
        with self._reader:
            while True:
                for index, frame in enumerate(self._frames):
                    if wanted(frame):
                        del self._frames[index]
                        return frame
                if self._reading:
                    self._reader.wait()
                    continue
                self._reading = True
                self._reader.release()
                try:
                    alive = self._read()
                finally:
                    self._reader.acquire()
                    self._reading = False
                    self._reader.notify_all()
                if not alive:
                    return None

    def receive_region(self, tag: bytes, size: int, writable: bool) -> mmap.mmap:
        """Map the memfd the host sent on the fd socket under `tag` (fds for other tags are kept)."""
        while tag not in self._regions:
            data, fds, _, _ = socket.recv_fds(self._fds, 64, 1)
            if len(fds) != 1:
                raise ipc.ProtocolError("expected one region fd")
            if data in self._regions:
                os.close(self._regions[data])
            self._regions[data] = fds[0]
        return _map(self._regions.pop(tag), size, writable)


def _is_for_main(frame: HostMessage) -> bool:
    return type(frame) is not MetricAnswer


def _is_region_answer(frame: HostMessage) -> bool:
    return type(frame) is OutputRegion


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


def _map(fd: int, size: int, writable: bool) -> mmap.mmap:
    try:
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

    def run(self) -> None:
        first = self._channel.receive()
        if type(first) is not Init:
            return
        if not self._start(first):
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
            executing = time.monotonic_ns()
            responses = self._model.execute(requests)
            executed = time.monotonic_ns()
            entries = self._write_responses(slot, requests, responses)
            return BatchResult(seq, entries, started, time.monotonic_ns(), executing, executed)
        except BatchError as exc:
            return BatchFailed(seq, str(exc), "")
        except Exception as exc:
            return BatchFailed(seq, describe(exc), traceback.format_exc())

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
