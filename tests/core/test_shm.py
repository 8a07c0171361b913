"""System shared memory: registration checks, bounds, reserved keys, and unregister while in use."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from seawall.core.shm import SharedMemoryManager
from seawall.errors import InvalidArgumentError, NotFoundError, UnsupportedError


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
    with manager.use("in", 1, 3) as view:
        assert bytes(view) == bytes([1, 2, 3])
    [region] = manager.status("in")
    assert (region.name, region.key, region.offset, region.byte_size) == ("in", "/" + key, 4096, 64)
    manager.register("again", key, 0, 16)  # a second region on the same key is fine
    assert [r.name for r in manager.status()] == ["again", "in"]
    manager.close()


@pytest.mark.parametrize(
    ("offset", "size", "message"),
    [
        (0, 8193, "invalid args"),
        (8192, 1, "invalid args"),
        (2**64 - 1, 2, "invalid args"),
        (0, 0, "invalid args"),
        (-1, 4, "invalid args"),
    ],
)
def test_register_refuses_ranges_outside_the_object(key: str, offset: int, size: int, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        SharedMemoryManager(allowed=True).register("r", key, offset, size)


@pytest.mark.parametrize(
    "bad_key",
    [
        "../etc/passwd",
        "triton_python_backend_shm_region_1",
        "///triton_python_backend_shm_region_x",
        "a/b",
        "",
        "x\n",
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
    with manager.use("in", 0, 4) as view:
        manager.unregister("in")
        assert bytes(view) == bytes([0, 1, 2, 3])  # still readable
    with pytest.raises(NotFoundError):
        manager.status("in")
    manager.unregister("never-registered")  # unknown names are fine, as in Triton
