"""The stub process of the python backend: loads one user `model.py` and serves the host's frames.

Started as `python -P -B -u .../bootstrap.py <ctrl fd> <fd socket> <in fd> <in size> <out fd> <out size> <uid>
<gid> model=<name> version=<v> instance=<instance>` (paths arrive in the Init message; bootstrap.py uses the uid
and gid; the names are only for operators, as `ps` shows them: the stub reads nothing after the gid).
Imports `ipc`, `messages`, `stub_channel` (control I/O), `stub_responses` (decoupled responses, cancellation),
`call_client` (BLS), `user_model`, the user's model and `triton_python_backend_utils` (via sys.path); it never
unpickles anything. Model code comes only through `model_source` (verified source, never bytecode or
extension modules from the model directory).
"""

from __future__ import annotations

import faulthandler
import importlib
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
from collections.abc import Sequence
from types import ModuleType

from seawall.backends.python import ipc
from seawall.backends.python.call_client import CallClient
from seawall.backends.python.messages import (
    DESCRIBE_MODE,
    AutoCompleted,
    BatchFailed,
    BatchResult,
    Execute,
    Finalize,
    Finalized,
    Grow,
    Init,
    InitFailed,
    Log,
    Ready,
    ReadyAnswer,
    RequestHeader,
    ResponseEntry,
    StubMessage,
)
from seawall.backends.python.model_source import ModelSource, RepositoryFinder
from seawall.backends.python.stub_channel import Channel, StubMetrics, map_region
from seawall.backends.python.stub_responses import Cancels, Responder
from seawall.backends.python.user_model import (
    PB_DIR,
    PB_MODULE,
    BatchError,
    UserModel,
    UserObject,
    describe,
    load_from_repository,
)

#: Init modes that run one of Seawall's own backends in this stub instead of a repository's model.py (isolation of
#: the onnxruntime and pytorch backends). Only the host's backend code picks a mode, never a model's config, and
#: only these modules can be named; the model's checked bytes come as a sealed region (fd tag "m").
BACKEND_WORKERS = {
    "onnxruntime": "seawall.backends.onnxruntime.worker",
    "pytorch": "seawall.backends.pytorch.worker",
}


class _Stub:
    """Owns the user model and every slot's regions; everything runs on the stub's main thread."""

    def __init__(self, channel: Channel, inputs: mmap.mmap, outputs: mmap.mmap) -> None:
        self._channel = channel
        self._inputs: dict[int, mmap.mmap] = {0: inputs}  # slot → region the host writes inputs to
        self._outputs: dict[int, mmap.mmap] = {0: outputs}  # slot → region this stub writes outputs to
        self._pb: ModuleType | None = None
        self._model: UserModel | None = None
        self._calls: CallClient | None = None  # BLS and model control (pb_utils calls it)
        self._order: deque[int] = deque()  # async models: seqs of the batches running, in arrival order
        self._finished: dict[int, StubMessage] = {}  # async models: results waiting for earlier batches
        self._cancels = Cancels(channel)
        self._responder: Responder | None = None  # decoupled models only

    def run(self) -> None:
        first = self._channel.receive()
        if type(first) is not Init:
            return
        if not self._start(first):
            return
        assert self._calls is not None and self._model is not None
        self._calls.serving = True
        if self._model.is_async and self._responder is None:  # decoupled: in the background (see _start)
            from seawall.backends.python.stub_async import serve_async  # noqa: PLC0415  # async models only

            serve_async(self, self._model)
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
        metrics = StubMetrics(self._channel)
        self._pb._set_metrics_sink(lambda: metrics)
        model_dir = os.path.dirname(init.model_file)
        self._pb._set_model_dir(lambda: model_dir)
        self._calls = CallClient(self._channel, self._pb, init.args.get("model_instance_name", ""))
        self._calls.has_server = init.mode == "model"
        self._pb._set_call_handler(self._calls)
        worker = BACKEND_WORKERS.get(init.mode)
        if worker is not None:
            model = self._channel.receive_region(b"m", int(init.args["model_bytes"]), False)
            worker_class: UserObject = importlib.import_module(worker).worker_model(self._pb, model)
            return worker_class
        finder = RepositoryFinder(ModelSource(init.model_dir, init.pins))
        module_name = os.path.splitext(os.path.basename(init.model_file))[0]
        return load_from_repository(init.model_file, module_name, init.version_dir, finder, keep_version_dir=True)

    def _start(self, init: Init) -> bool:
        """Load the model and run initialize (or auto_complete_config); reply; False to exit."""
        try:
            if init.mode == DESCRIBE_MODE:
                self._channel.send(AutoCompleted(self._describe(init)))
                return False
            model_class = self._load_class(init)
            if init.mode == "auto_complete":
                self._channel.send(AutoCompleted(self._auto_complete(model_class, init)))
                return False
            assert self._pb is not None
            self._model = UserModel(self._pb, model_class, init.model_name)
            if _is_decoupled(init.args):
                self._responder = Responder(self._channel, self._model, self._cancels)
                if self._model.is_async:  # its execute() runs in the background, as in Triton
                    self._model.log_error = lambda text: self._log(2, text)
                    self._model.start_background_loop()
            self._model.initialize(init.args)
        except Exception as exc:
            error = describe(exc)
            if isinstance(exc, PermissionError) and exc.filename:  # the model user (--model-user) lacks access
                error = f"the model user (uid {os.getuid()}) cannot read {exc.filename}"
            self._channel.send(InitFailed(error, traceback.format_exc()))
            return False
        model = self._model
        if model.checks_readiness:
            self._channel.on_ready_check = lambda check: threading.Thread(
                target=self._answer_ready_check, args=(model, check.ask), name="is_ready", daemon=True
            ).start()
        self._channel.send(Ready(model.checks_readiness))
        return True

    def _answer_ready_check(self, model: UserModel, ask: int) -> None:
        """A thread of its own: the model's is_ready(), beside whatever the main thread runs (as in Triton)."""
        ready, error = model.is_ready()
        try:
            self._channel.send(ReadyAnswer(ask, ready, error))
        except OSError:
            pass  # the host has gone

    def _describe(self, init: Init) -> dict[str, object]:
        """A backend worker's description of the model in region "m" (its `describe(model, plan)`)."""
        worker = BACKEND_WORKERS[init.args["seawall_worker"]]  # KeyError: InitFailed, as any other failure
        model = self._channel.receive_region(b"m", int(init.args["model_bytes"]), False)
        described: dict[str, object] = importlib.import_module(worker).describe(
            model, json.loads(init.args["seawall_plan"])
        )
        return described

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
            slot, inputs = self._open_batch(message)
        except Exception as exc:
            self._cancels.end(seq)
            return BatchFailed(seq, describe(exc), traceback.format_exc())
        try:
            result = self._run(message, slot, inputs)
        finally:
            self._cancels.end(seq)
        return self._close_batch(result, inputs)

    def _run(self, message: Execute, slot: int, inputs: ipc.InputView) -> BatchResult | BatchFailed:
        """execute() of one batch and its outputs written; its requests and responses die with this frame."""
        seq = message.seq
        try:
            assert self._model is not None
            started = time.monotonic_ns()  # CLOCK_MONOTONIC: the host reads the same clock
            requests = [self._request(self._model, inputs, header, seq, i) for i, header in enumerate(message.requests)]
            executing = time.monotonic_ns()
            responses = self._model.execute(requests)
            executed = time.monotonic_ns()
            entries = self._write_responses(slot, requests, responses)
            # built as message_fields.build does, without the NamedTuple's Python-level __new__ (once per batch)
            return tuple.__new__(BatchResult, (seq, entries, started, time.monotonic_ns(), executing, executed, False))
        except BatchError as refused:  # (one name per exception type: compiled code types each name once)
            return BatchFailed(seq, str(refused), "")
        except Exception as exc:
            return BatchFailed(seq, describe(exc), traceback.format_exc())

    def _open_batch(self, message: Execute) -> tuple[int, ipc.InputView]:
        """The batch's slot (its new regions mapped) and the batch's hold on the slot's input region."""
        slot = self._receive_regions(message)
        return slot, ipc.InputView(self._inputs[slot])

    @staticmethod
    def _close_batch(result: BatchResult | BatchFailed, inputs: ipc.InputView) -> BatchResult | BatchFailed:
        """`result`, saying whether the model kept something over the batch's input region past execute() (then
        the host never writes that region again: it passes a fresh one, and the model keeps seeing its data)."""
        return result._replace(inputs_kept=True) if inputs.release() else result

    def _execute_decoupled(self, message: Execute, responder: Responder) -> BatchResult | BatchFailed:
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
            _, inputs = self._open_batch(message)
            started = time.monotonic_ns()
            requests = []
            for item, header in enumerate(message.requests):
                # copied: its threads may read a request's inputs after execute() returned (NVIDIA's decoupled
                # example does), so most batches would keep their region: a fresh one per batch costs more
                request = self._request(model, inputs, header, seq, item, copy=True)
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

    def _receive_regions(self, message: Execute) -> int:
        """The message's slot, mapping the new regions it announces (a new slot, grown or fresh inputs)."""
        slot = message.slot
        if message.inputs_size:
            # the host writes the old region no more (it grew, or the model kept it): never read it again, even if
            # the new one cannot be mapped (the slot's batches then fail instead of reading stale inputs)
            self._replace(self._inputs, slot, None)
            self._inputs[slot] = self._channel.receive_region(b"i%d" % slot, message.inputs_size, True)
        if message.outputs_size:
            memory = self._channel.receive_region(b"o%d" % slot, message.outputs_size, True)
            self._replace(self._outputs, slot, memory)
        if slot not in self._inputs or slot not in self._outputs:
            raise ipc.ProtocolError("slot without regions")
        return slot

    @staticmethod
    def _replace(regions: dict[int, mmap.mmap], slot: int, memory: mmap.mmap | None) -> None:
        """Put `memory` in place of the slot's region (None: the slot has none until one is mapped)."""
        old = regions.pop(slot, None)
        if memory is not None:
            regions[slot] = memory
        if old is not None:
            try:
                old.close()
            except BufferError:
                pass  # the model kept a view of an old input: the mapping goes when that view does

    def _request(
        self, model: UserModel, view: ipc.InputView, header: RequestHeader, seq: int, item: int, copy: bool = False
    ) -> UserObject:
        memory, source = view.memory, view.source
        inputs = [ipc.read_tensor(memory, descriptor, copy, source) for descriptor in header.inputs]
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
        """Place every requested output in the slot's output region (at `ipc.layout`'s aligned offsets, one pass:
        each is written as it comes while the region holds it); returns the per-response entries."""
        assert self._model is not None
        outputs = self._model.outputs
        region = self._outputs[slot]
        entries: list[ResponseEntry] = []
        placed: list[tuple[int, int, ipc.Payload]] = []  # every output: kept for a region that must grow
        end = 0
        for request, response in zip(requests, responses, strict=True):
            found = outputs(request, response)
            if isinstance(found, tuple):
                code, text = found
                entries.append(ResponseEntry([], code if type(code) is int else -1, str(text)))
                continue
            descriptors: list[ipc.Descriptor] = []
            for name, datatype, array in found:
                payload = ipc.to_payload(datatype, array)
                offset = ipc.align(end)
                end = offset + len(payload)
                if end <= len(region):
                    region[offset:end] = payload  # type: ignore[assignment]  # ndarray is a buffer
                placed.append((offset, end, payload))
                descriptors.append([name, datatype, list(array.shape), offset, end - offset])
            entries.append(ResponseEntry(descriptors, None, "", getattr(response, "_parameters", None)))
        if end > len(region):  # some did not fit: all of them go into the bigger region the host gives
            self._ensure_output_size(slot, end)
            region = self._outputs[slot]
            for offset, stop, payload in placed:
                region[offset:stop] = payload  # type: ignore[assignment]
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


def _is_decoupled(args: dict[str, str]) -> bool:
    """Whether the model config of initialize(args) is decoupled (`model_transaction_policy`)."""
    try:
        config = json.loads(args.get("model_config", "{}"))
        return bool(config.get("model_transaction_policy", {}).get("decoupled", False))
    except (ValueError, AttributeError):
        return False


def main(argv: Sequence[str]) -> None:
    """Entry point of a spawned stub process (its descriptors and region sizes in argv)."""
    control_fd, fd_socket, in_fd, in_size, out_fd, out_size = (int(arg) for arg in argv[1:7])
    serve(control_fd, fd_socket, in_fd, in_size, out_fd, out_size)


def serve(control_fd: int, fd_socket: int, in_fd: int, in_size: int, out_fd: int, out_size: int) -> None:
    """Serve the host's frames until Finalize or the end of the channel (spawned, or forked by the template)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when stubs stop (Ctrl-C hits the group)
    faulthandler.enable()  # a crash in user code leaves a Python traceback in the server log
    channel = Channel(socket.socket(fileno=control_fd), socket.socket(fileno=fd_socket))
    # inputs shared and writable (see ipc.InputView); no local name: a frame that lives as long as the stub must not
    # keep slot 0's first region mapped after the host replaced it
    stub = _Stub(channel, map_region(in_fd, in_size, writable=True), map_region(out_fd, out_size, writable=True))
    try:
        stub.run()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the host went away; nothing left to answer


if __name__ == "__main__":
    main(sys.argv)
