"""The stub process of the python backend: loads one user `model.py` and serves the host's frames.

Started as `python -P -B -u .../bootstrap.py <ctrl fd> <fd socket> <in fd> <in size> <out fd> <out size>`
(argv holds only numbers: names and paths arrive as JSON). Imports `ipc`, the user's model and
`triton_python_backend_utils` (via sys.path); it never unpickles anything.
"""

from __future__ import annotations

import faulthandler
import importlib
import importlib.util
import inspect
import mmap
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from seawall.backends.python import ipc

_PB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pb_utils")

# User model objects and pb_utils values are untyped by nature (the module is loaded at run time).
UserObject = Any


class _BatchError(Exception):
    """Every request of the batch fails with this text (already formatted, no traceback)."""


class _Channel:
    """Blocking frame I/O on the control socket; sends are locked because user threads may log."""

    def __init__(self, control: socket.socket, fds: socket.socket) -> None:
        self._control = control
        self._fds = fds
        self._decoder = ipc.FrameDecoder()
        self._frames: list[dict[str, object]] = []
        self._lock = threading.Lock()

    def send(self, message: object) -> None:
        data = ipc.encode_frame(message)
        with self._lock:
            self._control.sendall(data)

    def receive(self) -> dict[str, object] | None:
        """The next frame, or None once the host has gone."""
        while not self._frames:
            data = self._control.recv(1 << 20)
            if not data:
                return None
            self._frames.extend(self._decoder.feed(data))
        return self._frames.pop(0)

    def receive_region(self, size: int, writable: bool) -> mmap.mmap:
        """Map the memfd the host sent on the fd socket."""
        _, fds, _, _ = socket.recv_fds(self._fds, 1, 1)
        if len(fds) != 1:
            raise ipc.ProtocolError("expected one region fd")
        return _map(fds[0], size, writable)


def _map(fd: int, size: int, writable: bool) -> mmap.mmap:
    try:
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        return mmap.mmap(fd, size, prot=prot)
    finally:
        os.close(fd)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Stub:
    """Owns the user model and both regions; everything runs on the stub's main thread."""

    def __init__(self, channel: _Channel, inputs: mmap.mmap, outputs: mmap.mmap) -> None:
        self._channel = channel
        self._inputs = inputs
        self._outputs = outputs
        self._pb: ModuleType | None = None
        self._model: UserObject = None
        self._model_name = ""
        self._loop: UserObject = None  # an asyncio loop, made only for `async def` hooks

    def run(self) -> None:
        first = self._channel.receive()
        if first is None or first.get("t") != "init":
            return
        if not self._start(first):
            return
        while (message := self._channel.receive()) is not None:
            kind = message.get("t")
            if kind == "exec":
                self._channel.send(self._execute(message))
            elif kind == "fini":
                self._finalize()
                self._channel.send({"t": "done"})
                return

    def _log(self, level: int, text: str) -> None:
        self._channel.send({"t": "log", "level": level, "msg": text})

    def _load_class(self, init: dict[str, object]) -> UserObject:
        version_dir = str(init["version_dir"])
        model_file = str(init["model_file"])
        sys.path.insert(0, version_dir)
        sys.path.insert(0, _PB_DIR)
        self._pb = importlib.import_module("triton_python_backend_utils")
        self._pb._set_log_sink(self._log)
        module_name = os.path.splitext(os.path.basename(model_file))[0]
        spec = importlib.util.spec_from_file_location(module_name, model_file)
        if spec is None or spec.loader is None:
            raise ImportError("cannot load the model file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        model_class = getattr(module, "TritonPythonModel", None)
        if model_class is None:
            raise AttributeError("the model file defines no class 'TritonPythonModel'")
        return model_class

    def _start(self, init: dict[str, object]) -> bool:
        """Load the model and run initialize (or auto_complete_config); reply; False to exit."""
        self._model_name = str(init.get("model_name", ""))
        try:
            model_class = self._load_class(init)
            if init.get("mode") == "auto_complete":
                self._channel.send({"t": "auto", "config": self._auto_complete(model_class, init)})
                return False
            self._model = model_class()
            if hasattr(self._model, "initialize"):
                self._run(self._model.initialize(init["args"]))
        except Exception as exc:
            self._channel.send({"t": "fail", "error": _describe(exc), "trace": traceback.format_exc()})
            return False
        self._channel.send({"t": "ready"})
        return True

    def _auto_complete(self, model_class: UserObject, init: dict[str, object]) -> object:
        if not hasattr(model_class, "auto_complete_config"):
            return None
        assert self._pb is not None
        config = self._pb.ModelConfig(init["config"])
        result = model_class.auto_complete_config(config)
        if not isinstance(result, self._pb.ModelConfig):
            raise TypeError("auto_complete_config must return the pb_utils.ModelConfig it was given")
        return result.as_dict()

    def _run(self, result: UserObject) -> UserObject:
        """Run a coroutine returned by an `async def` hook on the stub's own event loop."""
        if inspect.isawaitable(result):
            if self._loop is None:
                import asyncio  # only models with `async def` hooks pay for it

                self._loop = asyncio.new_event_loop()
            return self._loop.run_until_complete(result)
        return result

    def _finalize(self) -> None:
        if hasattr(self._model, "finalize"):
            try:
                self._run(self._model.finalize())
            except Exception:
                self._log(2, "finalize failed: " + traceback.format_exc())

    def _execute(self, message: dict[str, object]) -> dict[str, object]:
        seq = message.get("seq")
        try:
            if "in" in message:
                self._inputs = self._channel.receive_region(int(str(message["in"])), writable=False)
            requests = [self._request(entry) for entry in _list(message.get("reqs"))]
            responses = self._run(self._model.execute(requests))
            self._check_count(requests, responses)
            return {"t": "result", "seq": seq, "resp": self._write_responses(requests, responses)}
        except _BatchError as exc:
            return {"t": "result", "seq": seq, "error": str(exc)}
        except Exception as exc:
            return {"t": "result", "seq": seq, "error": _describe(exc), "trace": traceback.format_exc()}

    def _request(self, entry: object) -> UserObject:
        assert self._pb is not None and isinstance(entry, dict)
        inputs = []
        for descriptor in _list(entry.get("i")):
            name, datatype, array = ipc.read_tensor(self._inputs, _list(descriptor), copy=False)
            inputs.append(self._pb.Tensor(name, array, datatype))
        return self._pb.InferenceRequest(
            model_name=self._model_name,
            inputs=inputs,
            requested_output_names=entry.get("o") or [],
            request_id=entry.get("id", ""),
            correlation_id=entry.get("c", 0),
            flags=entry.get("f", 0),
            parameters=entry.get("p") or {},
        )

    def _check_count(self, requests: Sequence[object], responses: UserObject) -> None:
        if not isinstance(responses, list | tuple):
            raise _BatchError(
                f"Expected a list in the execute return, got {type(responses).__name__}"
                if responses is not None
                else "execute() returned None; a model that is not decoupled must return a list of responses"
            )
        if len(responses) != len(requests):
            raise _BatchError(
                "Number of InferenceResponse objects do not match the number of requests. "
                f"InferenceRequest(s) size is {len(requests)}, "
                f"and InferenceResponse(s) size is {len(responses)}"
            )

    def _write_responses(self, requests: Sequence[UserObject], responses: Sequence[UserObject]) -> list[object]:
        """Place every requested output in the output region; returns the per-response entries."""
        assert self._pb is not None
        entries: list[object] = []
        pending: list[tuple[list[object], str, str, list[int], ipc.Payload]] = []
        for request, response in zip(requests, responses, strict=True):
            if not isinstance(response, self._pb.InferenceResponse):
                raise _BatchError(f"Expected an InferenceResponse, got {type(response).__name__}")
            error = response.error()
            if error is not None:
                entries.append({"e": [error.code(), error.message()]})
                continue
            wanted = set(request.requested_output_names())
            descriptors: list[object] = []
            for tensor in response.output_tensors():
                if wanted and tensor.name() not in wanted:
                    continue  # not requested: never copied out of the stub
                datatype, array = self._pb._raw(tensor)
                payload = ipc.to_payload(datatype, array)
                pending.append((descriptors, tensor.name(), datatype, list(array.shape), payload))
            entries.append({"o": descriptors})
        payloads = [item[4] for item in pending]
        offsets, total = ipc.layout(payloads)
        self._ensure_output_size(total)
        ipc.write_payloads(self._outputs, offsets, payloads)
        for (descriptors, name, datatype, shape, payload), offset in zip(pending, offsets, strict=True):
            descriptors.append([name, datatype, shape, offset, len(payload)])
        return entries

    def _ensure_output_size(self, total: int) -> None:
        """Ask the host for a bigger output region when this batch's outputs do not fit."""
        if total <= len(self._outputs):
            return
        self._channel.send({"t": "grow", "size": total})
        reply = self._channel.receive()
        if reply is None or reply.get("t") != "out":
            raise ipc.ProtocolError("host did not provide an output region")
        if not reply.get("size"):
            raise _BatchError(f"the outputs of this batch need {total} bytes, more than the backend allows")
        self._outputs.close()
        self._outputs = self._channel.receive_region(int(str(reply["size"])), writable=True)


def _list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise ipc.ProtocolError("expected a list")
    return value


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
