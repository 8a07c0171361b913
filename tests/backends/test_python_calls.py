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


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_views_of_a_kept_sealed_region_are_found_with_their_offsets_until_it_dies() -> None:
    """What the host hands on to another stub instead of copying (a call's inputs, a called stub's large
    outputs): only arrays that all view one kept region, at their true offsets; the fd closes with the mapping."""
    first, second = np.arange(16, dtype=np.float32), np.arange(6, dtype=np.int64).reshape(2, 3)
    payloads = [ipc.to_payload("FP32", first), ipc.to_payload("INT64", second)]
    offsets, size = ipc.layout(payloads)
    before = _open_fds()
    region = ipc.map_sealed(ipc.sealed_region(offsets, payloads, size), size, keep=True)
    assert _open_fds() > before  # (a mapping holds an fd of its own too)
    a = ipc.read_tensor(region, ["a", "FP32", [16], offsets[0], 64], copy=False)[2]
    b = ipc.read_tensor(region, ["b", "INT64", [2, 3], offsets[1], 48], copy=False)[2]
    found = ipc.sealed_views([a, b])
    assert found is not None and found[1:] == (size, offsets)
    assert ipc.sealed_views([a[1:]]) == (found[0], size, [offsets[0] + 4])
    assert ipc.sealed_views([b[:, 1]]) is None  # not contiguous: it would be copied
    assert ipc.sealed_views([a, first]) is None  # one array is not in the region
    other = ipc.map_sealed(ipc.sealed_region([0], [b"x" * 64], 64), 64, keep=True)
    assert ipc.sealed_views([a, np.frombuffer(other, np.uint8)]) is None  # two regions
    unkept = ipc.map_sealed(ipc.sealed_region([0], [b"x" * 64], 64), 64)
    assert ipc.sealed_views([np.frombuffer(unkept, np.uint8)]) is None
    del a, b, region, other, unkept
    assert _open_fds() == before  # the kept fds closed with their mappings


def test_read_sealed_copies_fixed_size_outputs_into_one_kept_region_and_checks_them() -> None:
    memory = mmap.mmap(-1, 4096)
    memory[0:64] = np.arange(16, dtype=np.float32).tobytes()
    memory[128:134] = ipc.serialize_bytes(np.array([b"ab"], dtype=object))
    descriptors = [["a", "FP32", [4, 4], 0, 64], ["s", "BYTES", [1], 128, 6], ["e", "FP32", [0], 0, 0]]
    tensors = ipc.read_sealed(memory, descriptors)
    memory[0:64] = b"\0" * 64  # the stub's next batch: the outputs read are copies
    (_, _, a), (_, _, text), (_, _, empty) = tensors
    assert a.tolist() == np.arange(16, dtype=np.float32).reshape(4, 4).tolist() and not a.flags.writeable
    assert text.tolist() == [b"ab"] and empty.shape == (0,)
    assert ipc.sealed_views([a]) is not None
    with pytest.raises(ProtocolError, match="lies outside the shared region"):
        ipc.read_sealed(memory, [["a", "FP32", [16], 4096 - 32, 64]])


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
