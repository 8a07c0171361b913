"""Model control: which models load when (control modes none/poll/explicit), repository polling, the
load/unload requests of the model-repository extension (load-time configuration and file overrides), and
model directories registered at run time under a name (Triton's repository registration with a model mapping).

Imports `core.*`, `errors`, `options`. Override files are written only inside a fresh private directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping

from google.protobuf import json_format

from seawall.core import repository
from seawall.core.backend import ModelConfig
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
        override = _parse_config(name, config_json) if config_json is not None else None
        async with self._lock(name):
            if files:
                if override is None:
                    raise InvalidArgumentError("load parameter 'config' must be specified with 'file:' overrides")
                location = repository.ModelLocation(name, self._write_overrides(name, files))
            elif name in self._registered:
                location = self._registered[name]
            else:
                self._known.update(repository.scan(self._options.repository.paths))
                if name not in self._known:
                    raise NotFoundError(f"failed to load '{name}', failed to poll from model repository")
                location = self._known[name]
            record = await self._lifecycle.load(location, override, self._options.exit_timeout_secs)
        if not record.is_ready():
            raise InvalidArgumentError(f"load failed for model '{name}': {record.failure()};\n")

    async def unload(self, name: str) -> None:
        """Unload every version of `name` (explicit mode); unknown names are accepted, as Triton does.

        Raises:
            UnavailableError: not in explicit mode.
            InvalidArgumentError: an invalid model name.
        """
        if self._mode != "explicit":
            raise UnavailableError(_NOT_EXPLICIT)
        repository.require_valid_model_name(name)
        async with self._lock(name):
            await self._lifecycle.unload(name, self._options.exit_timeout_secs)

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

    def _write_overrides(self, name: str, files: Mapping[str, bytes]) -> str:
        """Write `file:<path>` overrides into a fresh private directory; return the model directory.

        Every path is checked before anything is written: relative, no `..`, no empty or hidden tricks.
        """
        for path in files:
            _check_override_path(path)
        root = tempfile.mkdtemp(prefix="seawall-model-")  # mode 0700, owned by us
        model_dir = os.path.join(root, name)
        os.mkdir(model_dir, 0o700)
        for path, content in files.items():
            target = os.path.join(model_dir, *path.split("/"))
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            if os.path.commonpath([os.path.realpath(target), model_dir]) != model_dir:
                shutil.rmtree(root, ignore_errors=True)
                raise InvalidArgumentError(f"override file '{path[:128]}' must stay within the model directory")
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(content)
        previous = self._override_dirs.pop(name, None)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        self._override_dirs[name] = root
        return model_dir

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


def _parse_config(name: str, config_json: str) -> ModelConfig:
    config = ModelConfig()
    try:
        json_format.Parse(config_json, config)
    except json_format.ParseError as exc:
        raise InvalidArgumentError(f"failed to parse load parameter 'config': {exc}") from None
    if config.name and config.name != name:
        raise InvalidArgumentError(f"model name '{config.name}' in 'config' does not match '{name}'")
    return config


def _check_override_path(path: str) -> None:
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in parts)
        or len(path) > 1024
    ):
        raise InvalidArgumentError(f"override file '{path[:128]}' must be a relative path inside the model directory")


def _fingerprint(model_dir: str) -> tuple[object, ...]:
    """What a change to the model looks like: files at the model level and in each version directory."""
    seen: list[object] = []
    try:
        for entry in sorted(os.scandir(model_dir), key=lambda e: e.name):
            if not entry.is_dir():
                stat = entry.stat(follow_symlinks=True)
                seen.append((entry.name, stat.st_mtime_ns, stat.st_size))
            elif entry.name != "__pycache__":  # a directory's own mtime moves when caches appear in it
                for inner in sorted(os.scandir(entry.path), key=lambda e: e.name):
                    if inner.is_file():
                        inner_stat = inner.stat(follow_symlinks=True)
                        seen.append((entry.name, inner.name, inner_stat.st_mtime_ns, inner_stat.st_size))
    except OSError:
        return ()
    return tuple(seen)
