"""System shared memory regions that clients register for inputs and outputs (shared-memory extension).

Imports `errors`. Every access is bounds-checked with exact integer arithmetic before it touches the
mapping; a region stays mapped until the last request using it is done, even after it is unregistered
(the CVE-2024-0116 race); keys may only name client objects under /dev/shm, never Seawall's own memory
(its backend IPC uses anonymous memfds, which have no name at all).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from seawall.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, UnsupportedError

SHM_ROOT = "/dev/shm"
_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,255}")
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
#: Key prefixes that belong to inference servers' internal memory; refused even though Seawall uses none.
RESERVED_PREFIXES = ("triton_python_backend_shm_region_", "seawall")
MAX_UINT64 = 2**64 - 1


@dataclass(eq=False)
class Region:
    """A registered region: `byte_size` bytes of `key` from `offset`. Owned by the manager."""

    name: str
    key: str
    offset: int
    byte_size: int
    _mapping: mmap.mmap
    users: int = 0
    unregistered: bool = field(default=False)

    def view(self) -> memoryview:
        return memoryview(self._mapping)[self.offset : self.offset + self.byte_size]

    def close_if_unused(self) -> None:
        if self.unregistered and self.users == 0 and not self._mapping.closed:
            self._mapping.close()


class SharedMemoryManager:
    """The registered system shared memory regions of one server. Event loop thread only."""

    def __init__(self, allowed: bool) -> None:
        self._allowed = allowed
        self._regions: dict[str, Region] = {}

    def _require_allowed(self) -> None:
        if not self._allowed:
            raise UnsupportedError("client shared memory is disabled on this server (start it with --allow-client-shm)")

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map `byte_size` bytes of the object `key` from `offset` under `name`.

        Raises:
            UnsupportedError: client shared memory is disabled.
            InvalidArgumentError: bad name or key, name taken, object missing, range outside the object.
        """
        self._require_allowed()
        if not _NAME.fullmatch(name):
            raise InvalidArgumentError("shared memory region name must be 1-256 printable characters")
        bare = key.lstrip("/")
        if not _KEY.fullmatch(bare) or bare.startswith(RESERVED_PREFIXES):
            raise InvalidArgumentError(f"failed to register shared memory region '{name}': invalid key")
        if name in self._regions:
            raise AlreadyExistsError(f"shared memory region '{name}' already in manager")
        if not (0 <= offset <= MAX_UINT64 and 0 < byte_size <= MAX_UINT64):
            raise InvalidArgumentError(f"failed to register shared memory region '{name}': invalid args")
        try:
            fd = os.open(os.path.join(SHM_ROOT, bare), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            # the key is not echoed: an oracle for the names of other processes' objects
            raise InvalidArgumentError(f"Unable to open shared memory region '{name}'") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or offset + byte_size > info.st_size:
                raise InvalidArgumentError(f"failed to register shared memory region '{name}': invalid args")
            mapping = mmap.mmap(fd, offset + byte_size)
        finally:
            os.close(fd)  # the mapping keeps the object alive; one fd per registration, never reused
        self._regions[name] = Region(name, key, offset, byte_size, mapping)

    def status(self, name: str = "") -> list[Region]:
        """Every region, or the one named.

        Raises: UnsupportedError (disabled), NotFoundError (unknown name).
        """
        self._require_allowed()
        if not name:
            return [self._regions[n] for n in sorted(self._regions)]
        region = self._regions.get(name)
        if region is None:
            raise NotFoundError(f"Unable to find system shared memory region: '{name}'")
        return [region]

    def unregister(self, name: str = "") -> None:
        """Forget one region ("" = all); a region in use is unmapped when its last request finishes.

        Raises: UnsupportedError (disabled).
        """
        self._require_allowed()
        names = [name] if name else list(self._regions)
        for each in names:
            region = self._regions.pop(each, None)
            if region is not None:
                region.unregistered = True
                region.close_if_unused()

    @contextlib.contextmanager
    def use(self, name: str, offset: int, byte_size: int) -> Iterator[memoryview]:
        """A view of `byte_size` bytes at `offset` in region `name`, valid inside the `with` block only:
        copy what must outlive it (the mapping may close once the block ends).

        Raises:
            NotFoundError: unknown region.
            InvalidArgumentError: the range is outside the region.
        """
        self._require_allowed()
        region = self._regions.get(name)
        if region is None:
            raise NotFoundError(f"Unable to find shared memory region: '{name}'")
        if not 0 <= offset <= region.byte_size:
            raise InvalidArgumentError(f"Invalid offset for shared memory region: '{name}'")
        if not 0 <= byte_size <= region.byte_size - offset:
            raise InvalidArgumentError(f"Invalid offset + byte size for shared memory region: '{name}'")
        region.users += 1
        view = region.view()[offset : offset + byte_size]
        try:
            yield view
        finally:
            view.release()
            region.users -= 1
            region.close_if_unused()

    def close(self) -> None:
        self._allowed = True
        self.unregister()
