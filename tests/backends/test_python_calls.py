"""BLS messages of the stub protocol (Call, Control, CallResult, CallFailed) and the sealed regions they use:
each kind survives its trip, what a stub may not send is refused as a ProtocolError, and a region that is not
sealed (a stub could shrink it under the server: SIGBUS) or has the wrong size is never mapped."""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest

from seawall.backends.python import ipc, messages
from seawall.backends.python.calls import checked_version
from seawall.backends.python.ipc import ProtocolError
from seawall.backends.python.messages import Call, CallFailed, CallResult, Control, RequestHeader
from seawall.errors import InternalError

_HEADER = RequestHeader("r1", [["INPUT0", "FP32", [4], 0, 16]], ["OUTPUT0"], 0, 0, {"p": "v", "n": 3})


def _payload(message: messages.Message) -> bytes:
    return messages.encode(message)[messages.FRAME_HEADER.size :]


@pytest.mark.parametrize(
    "message",
    [
        Call(1, "add_sub", "", _HEADER, 64, 0),
        Call(2, "m", "3", RequestHeader("", [], [], "seq", 3, {}), 0, 100),
        Control(3, "ready", "add_sub", "1", False, [], 0),
        Control(4, "load", "m", "{}", False, [["config.pbtxt", "UINT8", [3], 0, 3]], 64),
        Control(5, "unload", "m", "", True, [], 0),
    ],
    ids=lambda m: type(m).__name__,
)
def test_stub_calls_round_trip(message: messages.StubMessage) -> None:
    decoded = messages.decode_stub_message(_payload(message))
    assert type(decoded) is type(message) and decoded == message


@pytest.mark.parametrize(
    "message", [CallResult(1, [["OUTPUT0", "FP32", [4], 0, 16]], 64), CallResult(2, [], 0, True), CallFailed(3, 4, "x")]
)
def test_host_answers_round_trip(message: messages.HostMessage) -> None:
    decoded = messages.decode_host_message(_payload(message))
    assert type(decoded) is type(message) and decoded == message


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b'["call", 1, "m", "", ["r", [], [], 0, 0, {}], 0]', "wrong number of fields"),
        (b'["call", -1, "m", "", ["r", [], [], 0, 0, {}], 0, 0]', "expected a non-negative integer"),
        (b'["call", 1, 7, "", ["r", [], [], 0, 0, {}], 0, 0]', "expected a string"),
        (b'["call", 1, "m", "", ["r", [], []], 0, 0]', "bad request header"),
        (b'["call", 1, "m", "", ["r", ["x"], [], 0, 0, {}], 0, 0]', "bad tensor descriptor"),
        (b'["call", 1, "m", "", ["r", [], [5], 0, 0, {}], 0, 0]', "expected a string"),
        (b'["call", 1, "m", "", ["r", [], [], 1.5, 0, {}], 0, 0]', "expected a non-negative integer"),
        (b'["call", 1, "m", "", ["r", [], [], 0, 0, []], 0, 0]', "expected an object"),
        (b'["call", 1, "m", "", ["r", [], [], 0, 0, {}], 0, true]', "expected a non-negative integer"),
        (b'["ctl", 1, "rm -rf", "m", "", false, [], 0]', "bad model control request"),
        (b'["ctl", 1, "load", "m", "", 1, [], 0]', "bad model control request"),
        (b'["ctl", 1, "load", "m", "", false, ["x"], 0]', "bad tensor descriptor"),
        (b'["callok", 1, [], 0, false]', "unknown message kind"),  # only the host answers calls
    ],
)
def test_malformed_calls_are_refused(payload: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        messages.decode_stub_message(payload)


def test_a_sealed_region_is_mapped_read_only_and_its_bytes_read_without_copy() -> None:
    array = np.arange(16, dtype=np.float32)
    payloads = [ipc.to_payload("FP32", array)]
    offsets, size = ipc.layout(payloads)
    region = ipc.map_sealed(ipc.sealed_region(offsets, payloads, size), size)
    name, datatype, read = ipc.read_tensor(region, ["x", "FP32", [16], offsets[0], 64], copy=False)
    assert read.tolist() == array.tolist() and not read.flags.writeable


def test_an_unsealed_or_resized_region_is_refused() -> None:
    fd = os.memfd_create("test", os.MFD_CLOEXEC)
    os.ftruncate(fd, 64)
    with pytest.raises(ProtocolError, match="not sealed or has the wrong size"):
        ipc.map_sealed(fd, 64)  # closes fd
    fd = ipc.sealed_region([0], [b"x" * 64], 64)
    with pytest.raises(ProtocolError, match="not sealed or has the wrong size"):
        ipc.map_sealed(fd, 128)
    fd = ipc.sealed_region([0], [b"x" * 64], 64)
    with pytest.raises(OSError):
        os.ftruncate(fd, 1)  # the peer cannot shrink it any more
    with pytest.raises(OSError):
        mmap.mmap(fd, 64)  # nor write it
    os.close(fd)


def test_is_model_ready_versions_are_checked_as_triton_does() -> None:
    assert checked_version("") == "" and checked_version("3") == "3"
    with pytest.raises(InternalError, match=r"version string 'x' \(details: stol\)"):
        checked_version("x")
    with pytest.raises(InternalError, match="version string '-1', version should be an integral value > 0"):
        checked_version("-1")
