"""Model control: which models load when (control modes none/poll/explicit), repository polling, the
load/unload requests of the model-repository extension (load-time configuration and file overrides), and
model directories registered at run time under a name (Triton's repository registration with a model mapping).

Imports `core.*`, `errors`, `options`. The overrides of a load request are checked and written by
`core.overrides` (off the event loop); their directory is removed once no loaded model uses it (a failed load, a
later load, an unload, server stop).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Mapping

from seawall.core import overrides, repository
from seawall.core.lifecycle import ModelLifecycle
from seawall.core.types import ModelIndexEntry
from seawall.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, UnavailableError
from seawall.options import Options

logger = logging.getLogger(__name__)

_NOT_EXPLICIT = "explicit model load / unload is not allowed if polling is enabled"
_NOT_EXPLICIT_REGISTER = "repository registration is not allowed if model control mode is not EXPLICIT"


class ModelControl:
    """Runs the control mode over a ModelLifecycle. Owns the poll task and override directories."""

    def __init__(self, options: Options, lifecycle: ModelLifecycle) -> None:
        self._options = options
        self._lifecycle = lifecycle
        self._known: dict[str, repository.ModelLocation] = {}  # every model directory seen in the repositories
        self._fingerprints: dict[str, tuple[object, ...]] = {}
        self._override_dirs: dict[str, str] = {}  # model → private temp dir holding its override files
        self._registered: dict[str, repository.ModelLocation] = {}  # model → directory registered at run time
        self._locks: dict[str, asyncio.Lock] = {}
        self._poller: asyncio.Task[None] | None = None
        self._last_rescan = 0.0  # when `knows` last rescanned the repositories for an unknown name
        lifecycle.locate = self._locate  # an ensemble's composing models load from the same repositories

    def _locate(self, name: str) -> repository.ModelLocation | None:
        """Where the model `name` is (registered, or in a repository, rescanned if not seen yet); None: nowhere."""
        if name in self._registered:
            return self._registered[name]
        if name not in self._known:
            self._known.update(repository.scan(self._options.repository.paths))
        location = self._known.get(name)
        return location if location is not None and not location.error else None

    def knows(self, name: str) -> bool:
        """Whether `name` is a model this server could load: registered, or in a repository (scanned at
        start-up and by every load; unknown names rescan at most once a second, so that requests for made-up
        names cannot make the server scan its repositories at their rate)."""
        if name in self._registered or name in self._known:
            location = self._registered.get(name) or self._known[name]
            return not location.error
        now = time.monotonic()
        if now - self._last_rescan < 1.0:
            return False
        self._last_rescan = now
        return self._locate(name) is not None

    @property
    def _mode(self) -> str:
        return self._options.repository.control_mode

    async def start(self) -> None:
        """Load the start-up models of the control mode and start polling in poll mode.

        Raises:
            NotFoundError: a repository is missing, or a --load-model name is not in any repository.
        """
        self._known = repository.scan(self._options.repository.paths)
        selected = dict(self._known)
        if self._mode == "explicit":
            names = self._options.repository.load_models
            if names != ("*",):
                missing = [n for n in names if n not in self._known]
                if missing:
                    raise NotFoundError(f"failed to load '{missing[0]}', failed to poll from model repository")
                selected = {n: self._known[n] for n in names}
        await self._lifecycle.load_all(selected)
        self._fingerprints = {n: _fingerprint(loc.path) for n, loc in selected.items()}
        if self._mode == "poll" and self._options.repository.poll_secs > 0:
            self._poller = asyncio.create_task(self._poll_forever())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        for path in self._override_dirs.values():
            shutil.rmtree(path, ignore_errors=True)
        self._override_dirs.clear()
        self._registered.clear()

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def load(self, name: str, config_json: str | None = None, files: Mapping[str, bytes] | None = None) -> None:
        """Load or reload `name` (explicit mode), optionally with a JSON config and override files.

        Raises:
            UnavailableError: not in explicit mode.
            InvalidArgumentError: bad name, config or override path; or the model failed to load.
            NotFoundError: the model is in no repository and no files were given.
        """
        if self._mode != "explicit":
            raise UnavailableError(_NOT_EXPLICIT)
        repository.require_valid_model_name(name)
        override = overrides.parse_config(name, config_json) if config_json is not None else None
        if files:
            if override is None:
                raise InvalidArgumentError("load parameter 'config' must be specified with 'file:' overrides")
            paths = overrides.check_override_files(
                files, self._options.repository.max_override_files, self._options.repository.max_override_bytes
            )
        async with self._lock(name):
            new_dir = ""
            if files:
                root = await asyncio.to_thread(overrides.write_overrides, name, paths, files)
                new_dir = root
                location = repository.ModelLocation(name, os.path.join(root, name))
                stored = self._registered.get(name) or repository.scan(self._options.repository.paths).get(name)
                repository_dir = stored.path if stored is not None and not stored.error else ""
            elif name in self._registered:
                location, repository_dir = self._registered[name], self._registered[name].path
            else:
                self._known.update(repository.scan(self._options.repository.paths))
                if name not in self._known:
                    raise NotFoundError(f"failed to load '{name}', failed to poll from model repository")
                location, repository_dir = self._known[name], self._known[name].path
            try:
                record = await self._lifecycle.load(
                    location, override, self._options.exit_timeout_secs, repository_dir=repository_dir
                )
            except BaseException:
                await overrides.remove_directory(new_dir)
                raise
            if self._lifecycle.models.get(name) is record and any(v.is_ready() for v in record.versions.values()):
                await overrides.remove_directory(
                    self._override_dirs.pop(name, "")
                )  # the model no longer runs from the old files
                if new_dir:
                    self._override_dirs[name] = new_dir
            else:
                await overrides.remove_directory(
                    new_dir
                )  # nothing runs from the new files (the old model may still serve)
        if not record.is_ready():
            end = "\n" if record.is_ensemble and record.error else ";\n"  # Triton's ensemble messages have no ';'
            raise InvalidArgumentError(f"load failed for model '{name}': {record.failure()}{end}")

    async def unload(self, name: str, unload_dependents: bool = False) -> None:
        """Unload every version of `name` (explicit mode); unknown names are accepted, as Triton does.

        The ensembles that use `name` are unloaded with it; `unload_dependents` also unloads the composing models
        of `name` loaded only for it (see `ModelLifecycle.unload`).

        Raises:
            UnavailableError: not in explicit mode.
            InvalidArgumentError: an invalid model name.
        """
        if self._mode != "explicit":
            raise UnavailableError(_NOT_EXPLICIT)
        repository.require_valid_model_name(name)
        async with self._lock(name):
            await self._lifecycle.unload(name, self._options.exit_timeout_secs, unload_dependents=unload_dependents)
            await overrides.remove_directory(self._override_dirs.pop(name, ""))

    async def register(self, name: str, model_dir: str) -> None:
        """Load the model in `model_dir` as `name` (explicit mode): Triton's repository registration with a
        model mapping followed by a load, in one step. A model that fails to load leaves nothing registered.

        Raises:
            UnavailableError: not in explicit mode.
            InvalidArgumentError: a bad name, `model_dir` is not a directory, or the model failed to load.
            AlreadyExistsError: `name` is already a model of this server (registered or in a repository).
        """
        if self._mode != "explicit":
            raise UnavailableError(_NOT_EXPLICIT_REGISTER)
        repository.require_valid_model_name(name)
        if not os.path.isdir(model_dir):
            raise InvalidArgumentError(f"failed to register '{name}', model directory not found")
        async with self._lock(name):
            if name in self._registered or name in self._known or name in self._lifecycle.models:
                raise AlreadyExistsError(f"failed to register '{name}', there is a conflicting mapping for '{name}'")
            location = repository.ModelLocation(name, os.path.realpath(model_dir), mapped=True)
            self._registered[name] = location
            record = await self._lifecycle.load(location, None, self._options.exit_timeout_secs)
            if not record.is_ready():
                await self._lifecycle.unload(name, 0.0, forget=True)
                del self._registered[name]
                raise InvalidArgumentError(f"load failed for model '{name}': {record.failure()};\n")
        logger.info("model '%s' registered and loaded", name)

    async def unregister(self, name: str) -> None:
        """Unload every version of a registered model (after its in-flight requests) and forget it.

        Raises:
            UnavailableError: not in explicit mode.
            NotFoundError: `name` was not registered with `register`.
        """
        if self._mode != "explicit":
            raise UnavailableError(_NOT_EXPLICIT_REGISTER)
        repository.require_valid_model_name(name)
        async with self._lock(name):
            if name not in self._registered:
                raise NotFoundError(f"failed to unregister '{name[:128]}', model not registered")
            await self._lifecycle.unload(name, self._options.exit_timeout_secs, forget=True)
            del self._registered[name]
        logger.info("model '%s' unloaded and unregistered", name)

    def never_loaded(self) -> list[ModelIndexEntry]:
        """Index rows for repository models that were never loaded (explicit mode shows them by name)."""
        return [ModelIndexEntry(n) for n in sorted(self._known) if n not in self._lifecycle.models]

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._options.repository.poll_secs)
            try:
                await self.poll_once()
            except Exception:
                logger.exception("polling the model repository failed")

    async def poll_once(self) -> None:
        """Load new models, unload removed ones, reload changed ones (the old version serves on failure)."""
        found = repository.scan(self._options.repository.paths)
        reloaded: set[str] = set()  # (re)loaded below: their ensembles are checked again (removed: unloaded)
        for name in sorted(set(self._known) - set(found)):
            async with self._lock(name):
                logger.info("model '%s' was removed from the repository: unloading", name)
                await self._lifecycle.unload(name, self._options.exit_timeout_secs, forget=True)
                self._fingerprints.pop(name, None)
        self._known = found
        for name, location in sorted(found.items()):
            fingerprint = _fingerprint(location.path)
            if self._fingerprints.get(name) == fingerprint:
                continue
            async with self._lock(name):
                logger.info("model '%s' changed in the repository: loading", name)
                await self._lifecycle.load(location, None, self._options.exit_timeout_secs)
            self._fingerprints[name] = fingerprint
            reloaded.add(name)
        await self._recheck_ensembles(set(reloaded), reloaded, found)

    async def _recheck_ensembles(
        self, touched: set[str], reloaded: set[str], found: Mapping[str, repository.ModelLocation]
    ) -> None:
        """As Triton in poll mode: an ensemble whose composing model changed or came back is checked again (loaded
        anew); one that no longer fits its composing models is unloaded, not left serving the old plan. (One whose
        composing model went is unloaded with it, `ModelLifecycle.unload`.)"""
        pending = set(touched)
        while pending:
            name = pending.pop()
            for record in list(self._lifecycle.models.values()):
                ensemble = record.name
                if not record.is_ensemble or name not in record.composing or ensemble in reloaded:
                    continue
                location = found.get(ensemble)
                if location is None:
                    continue
                reloaded.add(ensemble)
                pending.add(ensemble)  # ensembles of ensembles
                async with self._lock(ensemble):
                    logger.info("model '%s' uses '%s', which changed: checking it again", ensemble, name)
                    loaded = await self._lifecycle.load(location, None, self._options.exit_timeout_secs)
                    if not loaded.is_ready():
                        logger.error("ensemble '%s' is unloaded: %s", ensemble, loaded.failure())
                        await self._lifecycle.unload(ensemble, self._options.exit_timeout_secs)


#: Entries of one model directory a poll looks at; a larger tree counts as changed at every poll.
MAX_FINGERPRINT_ENTRIES = 100_000


def _fingerprint(model_dir: str) -> tuple[object, ...]:
    """What a change to the model looks like: every file and directory under the model directory, at any
    depth, `__pycache__` included (a planted bytecode file must trigger a reload, whose checks refuse it)."""
    seen: list[object] = []
    try:
        for directory, subdirs, files in os.walk(model_dir, followlinks=False):
            subdirs.sort()
            relative = os.path.relpath(directory, model_dir)
            for name in sorted(files) + subdirs:
                path = os.path.join(directory, name)
                try:
                    stat = os.stat(path)  # a link: its target's change counts
                except OSError:
                    stat = os.lstat(path)
                seen.append((relative, name, stat.st_mode, stat.st_ino, stat.st_mtime_ns, stat.st_size))
            if len(seen) > MAX_FINGERPRINT_ENTRIES:
                return (object(),)  # never equal: a reload checks it all again
    except OSError:
        return ()
    return tuple(seen)
