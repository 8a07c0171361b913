"""Key rotation: the restricted-API key files are re-read on SIGHUP and when they change, and swapped in whole.

Imports `options` and `security.policy`. The files are read by a callable the command line gives (the only
reader of secret files); a file that cannot be read or parsed keeps the old keys, and every reload is audited
(result and key count, never a value). Keys from argv or the environment cannot rotate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from seawall.options import Options, Restriction
from seawall.security.policy import Keys

logger = logging.getLogger(__name__)

#: (path, "http" or "grpc") → the file's restrictions; raises ValueError with a reason that holds no secret.
KeyFileReader = Callable[[str, str], tuple[Restriction, ...]]
#: (caller, path, result "OK" or "REFUSED", key count) → writes the audit line.
ReloadAudit = Callable[[str, str, str, int], None]

_Signature = tuple[int, int, int, int] | None


def _signature(path: str) -> _Signature:
    """What changes when a file is rewritten in place or replaced by a rename (None: it cannot be found)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size


class KeyRing:
    """The live restrictions of the HTTP-family listeners (HTTP, SageMaker, Vertex AI) and of gRPC.

    Lifecycle: `await start()` begins watching the key files (a task owned here), `request_reload()` (SIGHUP)
    re-reads them all, `await stop()` ends the watch. All methods run on the event loop thread.
    """

    def __init__(self, options: Options, read: KeyFileReader, audit: ReloadAudit, poll_secs: float = 1.0) -> None:
        self.http = Keys(options.http.restricted)
        self.grpc = Keys(options.grpc.restricted)
        self._read = read
        self._audit = audit
        self._poll_secs = poll_secs
        self._files = tuple(dict.fromkeys(r.source for r in (*self.http.current, *self.grpc.current) if r.source))
        self._seen: dict[str, _Signature] = {}  # the file as last read; event loop thread
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None  # the watch, owned here

    @property
    def has_files(self) -> bool:
        return bool(self._files)

    async def start(self) -> None:
        """Remember each key file as it is now and watch for changes (nothing to do without key files)."""
        if not self._files or self._task is not None:
            return
        self._seen = {path: _signature(path) for path in self._files}
        self._task = asyncio.create_task(self._watch(), name="seawall-key-files")

    async def stop(self) -> None:
        """Stop watching. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def request_reload(self) -> None:
        """Re-read every key file now (the SIGHUP handler)."""
        self._wake.set()

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_secs)
            requested = self._wake.is_set()
            self._wake.clear()
            for path in self._files:
                signature = _signature(path)
                if requested or signature != self._seen.get(path):
                    self._seen[path] = signature
                    try:
                        await self.reload(path, "SIGHUP" if requested else "key file change")
                    except Exception:  # the watch must outlive one bad reload; the old keys stay
                        logger.exception("restricted-API keys from %s not reloaded", path)

    async def reload(self, path: str, caller: str) -> bool:
        """Re-read `path` and swap its keys in for every listener that uses it; False (old keys kept, the
        reason logged) when it cannot be read, is malformed, or would change which categories are restricted."""
        fresh: dict[str, tuple[Restriction, ...]] = {}
        try:
            for family, keys in (("http", self.http), ("grpc", self.grpc)):
                if any(r.source == path for r in keys.current):
                    fresh[family] = await asyncio.to_thread(self._read, path, family)
                    _check_same_categories(keys.current, fresh[family], path)
        except ValueError as exc:
            logger.warning("restricted-API keys from %s not reloaded, the previous keys stay: %s", path, exc)
            self._audit(caller, path, "REFUSED", 0)
            return False
        for family, restrictions in fresh.items():
            keys = self.http if family == "http" else self.grpc
            keys.current = (*(r for r in keys.current if r.source != path), *restrictions)  # one assignment
        count = max((len(restrictions) for restrictions in fresh.values()), default=0)  # the file's key lines
        logger.info("restricted-API keys reloaded from %s: %d key(s)", path, count)
        self._audit(caller, path, "OK", count)
        return True


def _check_same_categories(current: tuple[Restriction, ...], fresh: tuple[Restriction, ...], path: str) -> None:
    """Raises ValueError when `fresh` restricts other categories than the file did: which APIs are restricted
    is checked at start-up (explicit mode needs model-repository), so it changes only with a restart."""
    before = {c for r in current if r.source == path for c in r.categories}
    after = {c for r in fresh for c in r.categories}
    if before != after:
        raise ValueError(
            f"the file now restricts {', '.join(sorted(after)) or 'nothing'} instead of "
            f"{', '.join(sorted(before))}; restart the server to change which APIs are restricted"
        )
