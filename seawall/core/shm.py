"""System shared memory regions that clients register for inputs and outputs (shared-memory extension).

Imports `errors`. Nothing of a client's object is ever mapped into the server: inputs are copied out with
`preadv` and outputs written with `pwrite` through the descriptor opened at registration, so a client that
shrinks or removes its object gets an error, never a SIGBUS (Triton maps the object and dies). Every access
is bounds-checked with exact integer arithmetic; a region's descriptor stays open until the last request
using it is done, even after it is unregistered (the CVE-2024-0116 race). Keys may only name regular files
under /dev/shm owned by the server's effective uid, never Seawall's own memory (its backend IPC uses
anonymous memfds, which have no name at all).
"""

from __future__ import annotations

import contextlib
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
# O_NONBLOCK and O_NOCTTY: even a non-regular file that slips past the lstat check cannot block or become a tty
_OPEN_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


@dataclass(eq=False)
class Region:
    """A registered region: `byte_size` bytes of `key` from `offset`, through descriptor `fd`.

    Owned by the manager, event loop thread only; `fd` is closed once the region is unregistered and
    `users` (requests between `use` and its end) drops to zero.
    """

    name: str
    key: str
    offset: int
    byte_size: int
    fd: int
    users: int = 0
    unregistered: bool = field(default=False)

    def close_if_unused(self) -> None:
        if self.unregistered and self.users == 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True, slots=True)
class Window:
    """`size` bytes at file offset `start` of region `name`: what one tensor reads or writes.

    Valid only inside `SharedMemoryManager.use`; its methods touch nothing but `fd`, so they may run in a
    worker thread while the loop goes on (the manager keeps `fd` open until the `use` block ends).
    """

    name: str
    fd: int
    start: int
    size: int

    def _truncated(self) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"shared memory region '{self.name}' is smaller than the range it was registered with "
            "(the object was truncated); register it again"
        )

    def read_into(self, buffer: memoryview) -> None:
        """Fill `buffer` (exactly `size` bytes) from the region.

        Raises: InvalidArgumentError (the object is now shorter than the window, or cannot be read).
        """
        done = 0
        while done < self.size:
            try:
                got = os.preadv(self.fd, [buffer[done:]], self.start + done)
            except OSError:
                raise self._truncated() from None
            if got <= 0:
                raise self._truncated()
            done += got

    def write(self, data: memoryview) -> None:
        """Write `data` (at most `size` bytes) at the start of the window.

        The size check and the write are not atomic: an object shrunk in between is extended again by the
        write (the file is the server user's own), which is harmless; nothing is mapped, so nothing can fault.

        Raises: InvalidArgumentError (the object is now shorter than the window, or cannot be written).
        """
        try:
            if os.fstat(self.fd).st_size < self.start + self.size:
                raise self._truncated()
            done = 0
            while done < len(data):
                wrote = os.pwrite(self.fd, data[done:], self.start + done)
                if wrote <= 0:
                    raise self._truncated()
                done += wrote
        except OSError:
            raise self._truncated() from None


class SharedMemoryManager:
    """The registered system shared memory regions of one server. Event loop thread only."""

    def __init__(self, allowed: bool, max_regions: int = 64, max_bytes: int = 4 << 30) -> None:
        self._allowed = allowed
        self._max_regions = max_regions
        self._max_bytes = max_bytes
        self._regions: dict[str, Region] = {}
        self._registered_bytes = 0  # sum of byte_size over self._regions

    def _require_allowed(self) -> None:
        if not self._allowed:
            raise UnsupportedError("client shared memory is disabled on this server (start it with --allow-client-shm)")

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Register `byte_size` bytes of the object `key` from `offset` under `name`.

        Missing, not a regular file, not owned by the server's effective uid, and smaller than
        `offset + byte_size` all give the same message, so a reply tells nothing about other users' objects.

        Raises:
            UnsupportedError: client shared memory is disabled.
            AlreadyExistsError: the name is taken.
            InvalidArgumentError: bad name, key or range; an object that cannot be used; over the
                region count or byte limit.
        """
        self._require_allowed()
        if not _NAME.fullmatch(name):
            raise InvalidArgumentError("shared memory region name must be 1-256 printable characters")
        bare = key.lstrip("/")
        if not _KEY.fullmatch(bare) or bare in (".", "..") or bare.startswith(RESERVED_PREFIXES):
            raise InvalidArgumentError(f"failed to register shared memory region '{name}': invalid key")
        if name in self._regions:
            raise AlreadyExistsError(f"shared memory region '{name}' already in manager")
        if not (0 <= offset and 0 < byte_size and offset + byte_size <= MAX_UINT64):  # Triton's sum wraps
            raise InvalidArgumentError(f"failed to register shared memory region '{name}': invalid args")
        self._check_budget(name, byte_size)
        fd = _open_own_object(os.path.join(SHM_ROOT, bare), offset + byte_size)
        if fd < 0:
            # the key is not echoed, and every reason reads the same: no oracle for other objects
            raise InvalidArgumentError(f"Unable to open shared memory region: '{name}'")
        self._regions[name] = Region(name, key, offset, byte_size, fd)
        self._registered_bytes += byte_size

    def _check_budget(self, name: str, byte_size: int) -> None:
        if len(self._regions) >= self._max_regions:
            raise InvalidArgumentError(
                f"failed to register shared memory region '{name}': the server already holds "
                f"{self._max_regions} regions (--max-shm-regions)"
            )
        if byte_size > self._max_bytes - self._registered_bytes:
            raise InvalidArgumentError(
                f"failed to register shared memory region '{name}': regions may total at most "
                f"{self._max_bytes} bytes (--max-shm-bytes)"
            )

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
        """Forget one region ("" = all); a region in use is closed when its last request finishes.

        Raises: UnsupportedError (disabled).
        """
        self._require_allowed()
        names = [name] if name else list(self._regions)
        for each in names:
            region = self._regions.pop(each, None)
            if region is not None:
                self._registered_bytes -= region.byte_size
                region.unregistered = True
                region.close_if_unused()

    @contextlib.contextmanager
    def use(self, name: str, offset: int, byte_size: int) -> Iterator[Window]:
        """The window of `byte_size` bytes at `offset` in region `name`, valid inside the `with` block only.

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
        try:
            yield Window(name, region.fd, region.offset + offset, byte_size)
        finally:
            region.users -= 1
            region.close_if_unused()

    def close(self) -> None:
        self._allowed = True
        self.unregister()


def _open_own_object(path: str, needed: int) -> int:
    """A descriptor of `path` if it is a regular file of the server's effective uid holding at least
    `needed` bytes, else -1. Never follows a symbolic link, never opens anything but a regular file."""
    try:
        before = os.lstat(path)
    except OSError:
        return -1
    if not _usable(before, needed):
        return -1  # FIFOs, devices, directories and links are never even opened
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return -1
    try:
        info = os.fstat(fd)
    except OSError:
        info = None
    if info is None or not _usable(info, needed) or (info.st_dev, info.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)  # replaced between lstat and open
        return -1
    return fd


def _usable(info: os.stat_result, needed: int) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_size >= needed
