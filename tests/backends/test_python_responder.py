"""The stub's Responder (a decoupled model's `response_sender.send`) over a real stub Channel on a socketpair; the
test plays the host: it reads the stub's frames and answers ResponseRead itself."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from seawall.backends.python import in_process_runtime, ipc, messages
from seawall.backends.python.stub_channel import Channel
from seawall.backends.python.stub_responses import INLINE_WINDOW, Cancels, Responder
from seawall.backends.python.user_model import UserModel


class _Host:
    """The host's end: the frames the stub sent, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._decoder = messages.FrameDecoder(messages.decode_stub_message)
        self._received: list[messages.StubMessage] = []

    def receive(self, count: int, timeout: float = 10.0) -> list[messages.StubMessage]:
        """The next `count` messages (TimeoutError if they do not all come)."""
        self.sock.settimeout(timeout)
        while len(self._received) < count:
            self._received += self._decoder.feed(self.sock.recv(65536))
        taken, self._received = self._received[:count], self._received[count:]
        return taken

    def nothing_more(self, seconds: float) -> bool:
        self.sock.settimeout(seconds)
        try:
            self._received += self._decoder.feed(self.sock.recv(65536))
        except TimeoutError:
            pass
        return not self._received

    def answer_read(self, token: int) -> None:
        self.sock.sendall(messages.encode(messages.ResponseRead(token)))


@pytest.fixture
def parts() -> Iterator[tuple[Responder, _Host, object]]:
    host_control, stub_control = socket.socketpair()
    host_fds, stub_fds = socket.socketpair()
    channel = Channel(stub_control, stub_fds)
    pb = in_process_runtime.pb_utils_module()
    model = UserModel(pb, type("Model", (), {}), "m")
    cancels = Cancels(channel)
    cancels.begin(1, 1, streams=1)
    yield Responder(channel, model, cancels), _Host(host_control), pb
    for sock in (host_control, stub_control, host_fds, stub_fds):
        sock.close()


def _send_values(responder: Responder, pb: object, values: range, done: list[int]) -> threading.Thread:
    def run() -> None:
        for value in values:
            out = pb.Tensor("OUT", np.array([value], dtype=np.int32))  # type: ignore[attr-defined]
            responder.send(1, 0, [], pb.InferenceResponse([out]), False)  # type: ignore[attr-defined]
            done.append(value)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_small_responses_travel_inline_and_wait_only_for_a_full_window(parts: tuple[Responder, _Host, object]) -> None:
    responder, host, pb = parts
    done: list[int] = []
    thread = _send_values(responder, pb, range(INLINE_WINDOW + 2), done)
    first = host.receive(INLINE_WINDOW)
    # no region was asked for: each response carries its bytes, and none waited for the host's answer
    assert all(type(m) is messages.Response for m in first)
    for value, message in enumerate(first):
        assert isinstance(message, messages.Response) and message.entry is not None
        assert message.token == value + 1 and message.size == 4
        region = ipc.inline_region(message.inline, message.size)
        assert ipc.read_tensor(region, message.entry.outputs[0], copy=False)[2].tolist() == [value]
    assert host.nothing_more(0.3) and done == list(range(INLINE_WINDOW))  # the window is full: the model waits
    host.answer_read(2)  # not the oldest: still no room
    assert host.nothing_more(0.3) and len(done) == INLINE_WINDOW
    host.answer_read(1)  # the two oldest are read: room for two more
    more = host.receive(2)
    assert [m.token for m in more if isinstance(m, messages.Response)] == [INLINE_WINDOW + 1, INLINE_WINDOW + 2]
    assert base64.b64decode(more[1].inline) == np.array([INLINE_WINDOW + 1], dtype=np.int32).tobytes()  # type: ignore[union-attr]
    thread.join(10)
    assert not thread.is_alive() and done == list(range(INLINE_WINDOW + 2))


def test_a_response_without_outputs_and_an_error_carry_no_token(parts: tuple[Responder, _Host, object]) -> None:
    responder, host, pb = parts
    error = pb.TritonError("bad input", pb.TritonError.INVALID_ARG)  # type: ignore[attr-defined]
    responder.send(1, 0, [], pb.InferenceResponse(error=error), False)  # type: ignore[attr-defined]
    responder.send(1, 0, [], pb.InferenceResponse([]), False)  # type: ignore[attr-defined]
    responder.send(1, 0, [], None, True)
    failed, empty, final = host.receive(3)
    assert failed == messages.Response(1, 0, messages.ResponseEntry([], 3, "bad input"), False, 0)
    assert empty == messages.Response(1, 0, messages.ResponseEntry([]), False, 0)
    assert final == messages.Response(1, 0, None, True, 0)
