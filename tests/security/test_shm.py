"""Client shared memory that a client shrinks, that is not the server's own, or that is registered without end
(issue 9, findings 3, 10 and 14), against a real Seawall over HTTP and gRPC. Every refusal is checked for its
exact status and message, and the server must stay up and ready, with earlier regions still working.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.harness import ServerProcess, http_request, start_seawall

MAX_REGIONS = 6
SIZE = 4096  # bytes of each test object
UNUSABLE = "Unable to open shared memory region: '{}'"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_seawall("--allow-client-shm=true", f"--max-shm-regions={MAX_REGIONS}")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[Any]:
    with grpc.insecure_channel(server.grpc) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture
def objects(server: ServerProcess) -> Iterator[list[str]]:
    """Names of /dev/shm objects this test creates (removed, and every region unregistered, afterwards)."""
    names: list[str] = []
    yield names
    http_request(server, "POST", "/v2/systemsharedmemory/unregister")
    for name in names:
        path = f"/dev/shm/{name}"
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        elif os.path.lexists(path):
            os.unlink(path)


def _object(objects: list[str], size: int = SIZE, data: bytes = b"") -> str:
    name = f"sw-sec-{uuid.uuid4().hex}"
    objects.append(name)
    with open(f"/dev/shm/{name}", "wb") as file:
        file.write(data)
        file.truncate(size)
    return name


def _call(server: ServerProcess, method: str, path: str, document: Any = None) -> tuple[int, Any]:
    body = None if document is None else json.dumps(document).encode()
    status, _, reply = http_request(server, method, path, body)
    return status, json.loads(reply) if reply else None


def _register(server: ServerProcess, name: str, key: str, size: int = SIZE, offset: int = 0) -> tuple[int, Any]:
    document = {"key": key, "offset": offset, "byte_size": size}
    return _call(server, "POST", f"/v2/systemsharedmemory/region/{name}/register", document)


def _healthy(server: ServerProcess, stub: Any) -> None:
    assert http_request(server, "GET", "/v2/health/ready")[0] == 200
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert server.process.poll() is None


def _shm(region: str, offset: int, size: int) -> dict[str, Any]:
    return {"shared_memory_region": region, "shared_memory_offset": offset, "shared_memory_byte_size": size}


def _http_infer(server: ServerProcess, source: str, sink: str | None, offset: int = 0) -> tuple[int, Any]:
    """add_sub with both inputs from `source` (at `offset` and `offset + 16`), outputs to `sink` if given."""
    inputs = [
        {"name": name, "datatype": "FP32", "shape": [4], "parameters": _shm(source, offset + 16 * i, 16)}
        for i, name in enumerate(("INPUT0", "INPUT1"))
    ]
    document: dict[str, Any] = {"inputs": inputs}
    if sink is not None:
        document["outputs"] = [
            {"name": name, "parameters": _shm(sink, offset + 16 * i, 16)}
            for i, name in enumerate(("OUTPUT0", "OUTPUT1"))
        ]
    return _call(server, "POST", "/v2/models/add_sub/infer", document)


def _grpc_request(source: str, sink: str | None, offset: int = 0) -> Any:
    request = pb.ModelInferRequest(model_name="add_sub")
    for i, name in enumerate(("INPUT0", "INPUT1")):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[4])
        for key, value in _shm(source, offset + 16 * i, 16).items():
            if isinstance(value, str):
                tensor.parameters[key].string_param = value
            else:
                tensor.parameters[key].int64_param = value
    if sink is not None:
        for i, name in enumerate(("OUTPUT0", "OUTPUT1")):
            output = request.outputs.add(name=name)
            output.parameters["shared_memory_region"].string_param = sink
            output.parameters["shared_memory_offset"].int64_param = offset + 16 * i
            output.parameters["shared_memory_byte_size"].int64_param = 16
    return request


def _grpc_error(stub: Any, rpc: str, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, rpc)(request)
    return info.value.code(), info.value.details()


INPUTS = np.arange(8, dtype=np.float32).tobytes()  # INPUT0 = 0..3, INPUT1 = 4..7
SUMS = (np.arange(4, dtype=np.float32) * 2 + 4).tobytes()


# --- finding 3: a region shrunk after registration --------------------------------------------------------------


def _truncated(region: str) -> str:
    return (
        f"shared memory region '{region}' is smaller than the range it was registered with "
        "(the object was truncated); register it again"
    )


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("direction", ["input", "output"])
@pytest.mark.parametrize("shrink_to", ["zero", "one byte short"])
def test_truncated_region_is_an_error_not_a_crash(
    server: ServerProcess, stub: Any, objects: list[str], protocol: str, direction: str, shrink_to: str
) -> None:
    offset = 1024  # registered window: [1024, 1024 + 64) of the object; the request uses its last 32 bytes
    key = _object(objects, SIZE, bytes(offset + 32) + INPUTS)
    good = _object(objects, SIZE, bytes(offset + 32) + INPUTS)
    assert _register(server, "victim", key, 64, offset) == (200, None)
    assert _register(server, "good", good, 64, offset) == (200, None)
    # the input direction reads from the shrunk region; the output direction writes into it
    source, sink = ("victim", "good") if direction == "input" else ("good", "victim")
    os.truncate(f"/dev/shm/{key}", 0 if shrink_to == "zero" else offset + 64 - 1)
    if protocol == "http":
        assert _http_infer(server, source, sink, 32) == (400, {"error": _truncated("victim")})
    else:
        request = _grpc_request(source, sink, 32)
        assert _grpc_error(stub, "ModelInfer", request) == (grpc.StatusCode.INVALID_ARGUMENT, _truncated("victim"))
    _healthy(server, stub)
    # the object grown back and registered again works, and so did the other region all along
    assert _call(server, "POST", "/v2/systemsharedmemory/region/victim/unregister") == (200, None)
    with open(f"/dev/shm/{key}", "r+b") as file:
        file.truncate(SIZE)
        file.seek(offset + 32)
        file.write(INPUTS)
    assert _register(server, "victim", key, 64, offset) == (200, None)
    if protocol == "http":
        status, reply = _http_infer(server, source, sink, 32)
        assert status == 200 and all("data" not in output for output in reply["outputs"])
    else:
        stub.ModelInfer(_grpc_request(source, sink, 32))
    with open(f"/dev/shm/{key if sink == 'victim' else good}", "rb") as file:
        file.seek(offset + 32)
        assert file.read(16) == SUMS
    _healthy(server, stub)


def test_truncated_region_large_input_goes_through_the_worker_thread(
    server: ServerProcess, stub: Any, objects: list[str]
) -> None:
    """A 2 MiB identity input is read off the event loop; its truncation is refused the same way."""
    size = 2 << 20
    values = np.arange(size // 4, dtype=np.float32)
    key = _object(objects, size, values.tobytes())
    assert _register(server, "big", key, size) == (200, None)
    document = {
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, size // 4], "parameters": _shm("big", 0, size)}],
        "outputs": [{"name": "OUTPUT0", "parameters": _shm("big", 0, size)}],
    }
    assert _call(server, "POST", "/v2/models/identity/infer", document)[0] == 200
    with open(f"/dev/shm/{key}", "rb") as file:
        assert file.read() == values.tobytes()
    os.truncate(f"/dev/shm/{key}", size // 2)
    assert _call(server, "POST", "/v2/models/identity/infer", document) == (400, {"error": _truncated("big")})
    _healthy(server, stub)


# --- finding 10: objects that are not the server's own ----------------------------------------------------------


def _foreign(objects: list[str], kind: str, own: str) -> str:
    name = f"sw-sec-{uuid.uuid4().hex}"
    objects.append(name)
    path = f"/dev/shm/{name}"
    if kind == "missing":
        pass
    elif kind == "other user":
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.write(fd, b"another user's secret\n" * 200)
        os.fchown(fd, 65534, 65534)
        os.close(fd)
    elif kind == "symlink":
        os.symlink(f"/dev/shm/{own}", path)
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "fifo":
        os.mkfifo(path)
    return name


KINDS = ["missing", "other user", "symlink", "directory", "fifo"]


@pytest.mark.skipif(os.geteuid() != 0, reason="an object of another user needs root to create")
@pytest.mark.parametrize("kind", KINDS)
def test_objects_not_our_own_read_as_missing(server: ServerProcess, stub: Any, objects: list[str], kind: str) -> None:
    own = _object(objects)
    assert _register(server, "mine", own) == (200, None)
    key = _foreign(objects, kind, own)
    for size in (16, 4400, 2**31):  # a size search learns nothing either
        assert _register(server, "r", key, size) == (400, {"error": UNUSABLE.format("r")})
        request = pb.SystemSharedMemoryRegisterRequest(name="g", key="/" + key, byte_size=size)
        assert _grpc_error(stub, "SystemSharedMemoryRegister", request) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            UNUSABLE.format("g"),
        )
    _healthy(server, stub)
    assert _call(server, "GET", "/v2/systemsharedmemory/status")[1] == [
        {"name": "mine", "key": own, "offset": 0, "byte_size": SIZE}
    ]


def test_too_small_reads_as_missing(server: ServerProcess, stub: Any, objects: list[str]) -> None:
    own = _object(objects)
    for offset, size in ((0, SIZE + 1), (SIZE, 1), (SIZE - 8, 9)):
        assert _register(server, "r", own, size, offset) == (400, {"error": UNUSABLE.format("r")})
    request = pb.SystemSharedMemoryRegisterRequest(name="g", key=own, offset=16, byte_size=SIZE)
    assert _grpc_error(stub, "SystemSharedMemoryRegister", request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        UNUSABLE.format("g"),
    )
    assert _register(server, "r", own, SIZE - 8, 8) == (200, None)
    _healthy(server, stub)


@pytest.mark.parametrize("key", [".", "..", "/..", "../shm", "a/b", "%2e%2e"])
def test_keys_are_plain_names_under_dev_shm(server: ServerProcess, stub: Any, key: str) -> None:
    assert _register(server, "r", key, 16) == (
        400,
        {"error": "failed to register shared memory region 'r': invalid key"},
    )
    _healthy(server, stub)


# --- finding 14: how many regions, how many bytes ---------------------------------------------------------------


def test_region_count_is_capped(server: ServerProcess, stub: Any, objects: list[str]) -> None:
    own = _object(objects, SIZE, bytes(1024) + INPUTS)
    for index in range(MAX_REGIONS):
        assert _register(server, f"r{index}", own) == (200, None)
    too_many = f"the server already holds {MAX_REGIONS} regions (--max-shm-regions)"
    assert _register(server, "extra", own) == (
        400,
        {"error": f"failed to register shared memory region 'extra': {too_many}"},
    )
    request = pb.SystemSharedMemoryRegisterRequest(name="extra", key=own, byte_size=16)
    assert _grpc_error(stub, "SystemSharedMemoryRegister", request) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"failed to register shared memory region 'extra': {too_many}",
    )
    # a taken name keeps Triton's answer
    assert _register(server, "r0", own) == (400, {"error": "shared memory region 'r0' already in manager"})
    _healthy(server, stub)
    assert _http_infer(server, "r0", "r1", offset=1024)[0] == 200  # earlier regions still work
    assert _call(server, "POST", "/v2/systemsharedmemory/region/r0/unregister") == (200, None)
    assert _register(server, "extra", own) == (200, None)  # unregister frees a place
    assert len(_call(server, "GET", "/v2/systemsharedmemory/status")[1]) == MAX_REGIONS


def test_registered_bytes_are_capped(server: ServerProcess, stub: Any, objects: list[str]) -> None:
    """126 registrations of a sparse 1 TiB object exhausted the address space; now one is too many."""
    own = _object(objects, SIZE, INPUTS)
    sparse = _object(objects, 2**40)
    assert _register(server, "small", own) == (200, None)
    over = (
        "failed to register shared memory region 'huge': regions may total at most 4294967296 bytes (--max-shm-bytes)"
    )
    assert _register(server, "huge", sparse, 2**40) == (400, {"error": over})
    request = pb.SystemSharedMemoryRegisterRequest(name="huge", key=sparse, byte_size=2**40)
    assert _grpc_error(stub, "SystemSharedMemoryRegister", request) == (grpc.StatusCode.INVALID_ARGUMENT, over)
    _healthy(server, stub)
    assert _http_infer(server, "small", None)[0] == 200
    # the budget is the sum: 4 GiB - 4096 fits beside "small", one more byte does not, until "small" goes
    assert _register(server, "rest", sparse, 4 * 2**30 - SIZE) == (200, None)
    over_one = over.replace("'huge'", "'one'")
    assert _register(server, "one", sparse, 1) == (400, {"error": over_one})
    assert _call(server, "POST", "/v2/systemsharedmemory/region/small/unregister") == (200, None)
    assert _register(server, "one", sparse, 1) == (200, None)
    _healthy(server, stub)


def test_cuda_shared_memory_stays_refused(server: ServerProcess, stub: Any) -> None:
    document = {"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 4}
    assert _call(server, "POST", "/v2/cudasharedmemory/region/gpu/register", document) == (
        501,
        {"error": "failed to register CUDA shared memory region 'gpu': GPUs not supported"},
    )
    request = pb.CudaSharedMemoryRegisterRequest(name="gpu", byte_size=4)
    assert _grpc_error(stub, "CudaSharedMemoryRegister", request) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "failed to register CUDA shared memory region 'gpu': GPUs not supported",
    )
    _healthy(server, stub)
