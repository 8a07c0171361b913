"""System shared memory: registration checks, bounds, reserved keys, and unregister while in use."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from seawall.core import tensor_io
from seawall.core.shm import SharedMemoryManager, Window
from seawall.core.types import InferRequest, ParamValue, Tensor
from seawall.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, UnsupportedError
from seawall.options import Limits

UNUSABLE = "Unable to open shared memory region: 'r'"  # missing, not ours, not a regular file, too small


def _read(window: Window) -> bytes:
    buffer = bytearray(window.size)
    window.read_into(memoryview(buffer))
    return bytes(buffer)


@pytest.fixture
def key() -> Iterator[str]:
    name = f"sw-test-{uuid.uuid4().hex}"
    with open(f"/dev/shm/{name}", "wb") as file:
        file.write(bytes(range(256)) * 32)  # 8192 bytes
    yield name
    os.unlink(f"/dev/shm/{name}")


def test_disabled_by_default() -> None:
    with pytest.raises(UnsupportedError, match="--allow-client-shm"):
        SharedMemoryManager(allowed=False).register("r", "k", 0, 16)


def test_register_read_and_status(key: str) -> None:
    manager = SharedMemoryManager(allowed=True)
    manager.register("in", "/" + key, 4096, 64)
    with manager.use("in", 1, 3) as window:
        assert _read(window) == bytes([1, 2, 3])
    [region] = manager.status("in")
    assert (region.name, region.key, region.offset, region.byte_size) == ("in", "/" + key, 4096, 64)
    manager.register("again", key, 0, 16)  # a second region on the same key is fine
    assert [r.name for r in manager.status()] == ["again", "in"]
    manager.close()


@pytest.mark.parametrize(
    ("offset", "size", "message"),
    [
        (0, 8193, UNUSABLE),
        (8192, 1, UNUSABLE),
        (2**64 - 2, 1, UNUSABLE),
        (2**64 - 1, 2, "invalid args"),
        (1, 2**64 - 1, "invalid args"),
        (0, 0, "invalid args"),
        (-1, 4, "invalid args"),
    ],
)
def test_register_refuses_ranges_outside_the_object(key: str, offset: int, size: int, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        SharedMemoryManager(allowed=True).register("r", key, offset, size)
    assert info.value.message == (
        message if message == UNUSABLE else f"failed to register shared memory region 'r': {message}"
    )


@pytest.mark.parametrize(
    "bad_key",
    [
        "../etc/passwd",
        "triton_python_backend_shm_region_1",
        "///triton_python_backend_shm_region_x",
        "a/b",
        "",
        "x\n",
        ".",
        "..",
        "/..",
    ],
)
def test_register_refuses_hostile_keys(bad_key: str) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid key"):
        SharedMemoryManager(allowed=True).register("r", bad_key, 0, 16)


def test_missing_object_does_not_echo_the_key() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        SharedMemoryManager(allowed=True).register("r", "no-such-object-xyz", 0, 16)
    assert "no-such-object-xyz" not in info.value.message


def test_use_is_bounds_checked(key: str) -> None:
    manager = SharedMemoryManager(allowed=True)
    manager.register("in", key, 0, 32)
    for offset, size, message in (
        (33, 0, "Invalid offset for"),
        (16, 17, "Invalid offset \\+ byte size"),
        (2**64 - 1, 2, "Invalid offset for"),
        (0, -1, "Invalid offset \\+ byte size"),
    ):
        with pytest.raises(InvalidArgumentError, match=message), manager.use("in", offset, size):
            pass
    with pytest.raises(NotFoundError), manager.use("nope", 0, 1):
        pass


def test_unregister_during_use_keeps_the_mapping_until_done(key: str) -> None:
    manager = SharedMemoryManager(allowed=True)
    manager.register("in", key, 0, 32)
    with manager.use("in", 0, 4) as window:
        manager.unregister("in")
        assert _read(window) == bytes([0, 1, 2, 3])  # the descriptor stays open until the block ends
    with pytest.raises(NotFoundError):
        manager.status("in")
    manager.unregister("never-registered")  # unknown names are fine, as in Triton


# --- objects that are not the server's own (issue 9, finding 10) ---------------------------------------------------


@pytest.fixture
def shm_path() -> Iterator[str]:
    path = f"/dev/shm/sw-test-{uuid.uuid4().hex}"
    yield path
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        os.rmdir(path)


def _refusal(key: str, offset: int = 0, size: int = 16) -> str:
    with pytest.raises(InvalidArgumentError) as info:
        SharedMemoryManager(allowed=True).register("r", key, offset, size)
    return info.value.message


@pytest.mark.skipif(os.geteuid() != 0, reason="creating another user's object needs root")
def test_another_users_object_reads_as_missing(shm_path: str) -> None:
    fd = os.open(shm_path, os.O_CREAT | os.O_RDWR, 0o600)
    os.write(fd, b"secret" * 100)
    os.fchown(fd, 65534, 65534)
    os.close(fd)
    assert _refusal(os.path.basename(shm_path)) == UNUSABLE
    assert _refusal(os.path.basename(shm_path), 0, 10**6) == UNUSABLE  # neither existence nor size leaks
    assert _refusal("no-such-object-xyz") == UNUSABLE


def test_links_directories_and_fifos_are_refused(shm_path: str, key: str) -> None:
    os.symlink(f"/dev/shm/{key}", shm_path)  # a link to the server's own object: still refused
    assert _refusal(os.path.basename(shm_path)) == UNUSABLE
    os.unlink(shm_path)
    os.mkdir(shm_path)
    assert _refusal(os.path.basename(shm_path)) == UNUSABLE
    os.rmdir(shm_path)
    os.mkfifo(shm_path)
    assert _refusal(os.path.basename(shm_path)) == UNUSABLE  # returns at once: a FIFO is never opened


def test_too_small_reads_as_missing(key: str) -> None:
    assert _refusal(key, 0, 8193) == UNUSABLE
    assert _refusal(key, 8000, 193) == UNUSABLE


# --- a truncated object (finding 3) and the registration limits (finding 14) ------------------------------------------


def test_truncated_object_is_an_error_in_both_directions(key: str) -> None:
    manager = SharedMemoryManager(allowed=True)
    manager.register("in", key, 4096, 64)
    truncated = "shared memory region 'in' is smaller than the range it was registered with"
    for size in (4096 + 63, 0):
        os.truncate(f"/dev/shm/{key}", size)
        with manager.use("in", 0, 64) as window, pytest.raises(InvalidArgumentError, match=truncated):
            _read(window)
        with manager.use("in", 0, 64) as window, pytest.raises(InvalidArgumentError, match=truncated):
            window.write(memoryview(bytes(64)))
    os.truncate(f"/dev/shm/{key}", 8192)
    with manager.use("in", 0, 4) as window:
        window.write(memoryview(b"abcd"))
        assert _read(window) == b"abcd"
    manager.close()


def test_region_count_and_byte_limits(key: str) -> None:
    manager = SharedMemoryManager(allowed=True, max_regions=3, max_bytes=8192 + 100)
    manager.register("a", key, 0, 8192)
    with pytest.raises(InvalidArgumentError) as info:
        manager.register("b", key, 0, 101)
    assert info.value.message == (
        "failed to register shared memory region 'b': regions may total at most 8292 bytes (--max-shm-bytes)"
    )
    manager.register("b", key, 0, 50)
    manager.register("c", key, 0, 50)
    with pytest.raises(InvalidArgumentError) as info:
        manager.register("d", key, 0, 1)
    assert info.value.message == (
        "failed to register shared memory region 'd': the server already holds 3 regions (--max-shm-regions)"
    )
    with pytest.raises(AlreadyExistsError):
        manager.register("a", key, 0, 1)  # Triton's answer for a taken name comes first
    manager.unregister("a")  # frees both budgets
    manager.register("a2", key, 0, 8192)
    assert [r.name for r in manager.status()] == ["a2", "b", "c"]
    manager.close()


def test_a_cancelled_large_read_keeps_the_descriptor_until_its_thread_is_done(key: str) -> None:
    """A read of >= 2 MiB runs in a worker thread; cancelling the request and unregistering the region at
    once must neither close the descriptor under the thread nor leak it."""
    path = f"/dev/shm/{key}"
    os.truncate(path, 8 << 20)
    manager = SharedMemoryManager(allowed=True)
    before = len(os.listdir("/proc/self/fd"))

    async def scenario() -> None:
        manager.register("r", key, 0, 8 << 20)
        parameters: dict[str, ParamValue] = {"shared_memory_region": "r", "shared_memory_byte_size": 8 << 20}
        tensor = Tensor("INPUT0", "FP32", (2 << 20,), np.empty(0), parameters)
        task = asyncio.ensure_future(tensor_io.read_shm_inputs(InferRequest("m", [tensor]), manager, Limits()))
        await asyncio.sleep(0)  # the read is now in its thread
        task.cancel()
        manager.unregister("r")
        with pytest.raises(asyncio.CancelledError):
            await task
        assert manager.status() == []

    asyncio.run(scenario())
    assert len(os.listdir("/proc/self/fd")) == before
