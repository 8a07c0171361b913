"""Plugins found in --backend-directory, --repoagent-directory and --cache-directory: Python modules with a
small entry point, loaded only from paths that pass the trust check (sshd's StrictModes idea, see
`security/trust.py`).

Part of the composition root (it imports code); the core receives the lookups it builds.

Entry points (documented in docs/plugins.md):
- repository agent `<repoagent-directory>/<name>/agent.py`: `def check(config: dict, model_dir: str) -> None`
  raising any exception to refuse the load (its message becomes the model's UNAVAILABLE reason).
- backend `<backend-directory>/<name>/backend.py`: `def create_backend(settings: dict[str, str]) -> Backend`
  (the Protocol of `seawall/core/backend.py`); `settings` are the --backend-config values for `<name>`.
- cache `<cache-directory>/<name>/cache.py`: `def create_cache(settings: dict[str, str]) -> ResponseCache`
  (`lookup(key: bytes) -> bytes | None`, `insert(key: bytes, value: bytes) -> None`); `settings` are the
  --cache-config values for `<name>`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any, cast

from seawall.backends.registry import unknown_backend
from seawall.core.backend import Backend, Execution, Model, ModelConfig, ModelLoadContext
from seawall.core.model_config import config_to_dict
from seawall.core.repoagent import RepoAgent
from seawall.core.response_cache import ResponseCache, create_local_cache
from seawall.core.types import InferRequest
from seawall.errors import InternalError, InvalidArgumentError, SeawallError, UnsupportedError
from seawall.options import BackendOptions
from seawall.security.trust import untrusted_reason

logger = logging.getLogger(__name__)

_PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


def load_module(directory: str, name: str, filename: str, allow_untrusted: tuple[str, ...]) -> ModuleType:
    """Import `<directory>/<name>/<filename>` after checking the name and the trust of every path involved.

    Raises:
        UnsupportedError: no such plugin.
        InvalidArgumentError: a bad name, or an untrusted directory or file (naming the path).
    """
    if not _PLUGIN_NAME.fullmatch(name):
        raise InvalidArgumentError(f"plugin name '{name[:64]}' is not valid")
    path = os.path.join(directory, name, filename)
    if not os.path.isfile(path):
        raise UnsupportedError(f"'{name}' is not available (no {filename} in its plugin directory)")
    real = os.path.realpath(path)
    allowed = any(os.path.commonpath([real, os.path.realpath(p)]) == os.path.realpath(p) for p in allow_untrusted)
    reason = untrusted_reason(path)
    if reason is not None and not allowed:
        raise InvalidArgumentError(f"refusing to load plugin '{name}': {reason}")
    spec = importlib.util.spec_from_file_location(f"seawall_plugin_{name}", path)
    if spec is None or spec.loader is None:
        raise UnsupportedError(f"'{name}' cannot be imported")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    logger.warning("loaded plugin '%s' from %s", name, path)
    return module


def repoagent_lookup(directory: str, allow_untrusted: tuple[str, ...] = ()) -> Callable[[str], RepoAgent]:
    """A lookup of repository agents by name from `directory` (imported once, on first use)."""
    cache: dict[str, RepoAgent] = {}

    def lookup(name: str) -> RepoAgent:
        agent = cache.get(name)
        if agent is None:
            module = load_module(directory, name, "agent.py", allow_untrusted)
            check: Any = getattr(module, "check", None)
            if not callable(check):
                raise UnsupportedError(f"repository agent '{name}' has no check(config, model_dir) function")

            def agent(config: ModelConfig, model_dir: str, check: Any = check) -> None:
                check(config_to_dict(config), model_dir)

            cache[name] = agent
        return agent

    return lookup


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Plugin code's own exceptions become one SeawallError (the seam's translation, done once)."""
    try:
        yield
    except SeawallError:
        raise
    except Exception as exc:
        logger.warning("%s failed", what, exc_info=True)
        raise InternalError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


def plugin_names(directory: str, filename: str) -> list[str]:
    """The valid plugin names in `directory` that have `filename` (unchecked for trust: names only)."""
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return []
    return [n for n in entries if _PLUGIN_NAME.fullmatch(n) and os.path.isfile(os.path.join(directory, n, filename))]


def _entry_point(module: ModuleType, function: str, kind: str, name: str) -> Callable[[dict[str, str]], object]:
    found: Any = getattr(module, function, None)
    if not callable(found):
        raise UnsupportedError(f"{kind} '{name}' has no {function}(settings) function")
    return cast(Callable[[dict[str, str]], object], found)


class _PluginBackend:
    """A backend from --backend-directory, behind the Backend seam with its exceptions translated."""

    def __init__(self, name: str, backend: Any) -> None:
        self._name = name
        self._backend = backend

    @property
    def name(self) -> str:
        return self._name

    async def auto_complete_config(self, config: ModelConfig, model_dir: str, version_dir: str) -> ModelConfig:
        hook = getattr(self._backend, "auto_complete_config", None)
        if hook is None:
            return config
        with _translated(f"auto-complete of backend '{self._name}'"):
            return cast(ModelConfig, await hook(config, model_dir, version_dir))

    async def load(self, context: ModelLoadContext) -> Model:
        with _translated(f"backend '{self._name}' loading model '{context.name}'"):
            return _PluginModel(await self._backend.load(context))

    async def stop(self) -> None:
        hook = getattr(self._backend, "stop", None)
        if hook is not None:
            with _translated(f"stopping backend '{self._name}'"):
                await hook()


class _PluginModel:
    """A plugin's model behind the Model seam: its instances adapted to the instance protocol."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.instances = tuple(_PluginInstance(instance) for instance in model.instances)

    async def unload(self) -> None:
        await self._model.unload()


class _PluginInstance:
    """A plugin's instance behind the ModelInstance seam: `pipeline_depth` 1 unless it says otherwise, and its
    results (a list, docs/plugins.md) as an `Execution` (timing included when it returns one)."""

    def __init__(self, instance: Any) -> None:
        self._instance = instance
        depth = getattr(instance, "pipeline_depth", 1)
        self.pipeline_depth = depth if type(depth) is int else 1

    @property
    def name(self) -> str:
        return str(self._instance.name)

    def is_healthy(self) -> bool:
        return bool(self._instance.is_healthy())

    async def execute(self, requests: Sequence[InferRequest]) -> Execution:
        results = await self._instance.execute(requests)
        return results if isinstance(results, Execution) else Execution(results)


def backend_lookup(options: BackendOptions, allow_untrusted: tuple[str, ...] = ()) -> Callable[[str], Backend]:
    """A lookup of backends by name from --backend-directory, for the names that are not built in."""

    def lookup(name: str) -> Backend:
        if _PLUGIN_NAME.fullmatch(name) and not os.path.isfile(
            os.path.join(options.backend_directory, name, "backend.py")
        ):
            raise unknown_backend(name, plugin_names(options.backend_directory, "backend.py"))
        try:
            module = load_module(options.backend_directory, name, "backend.py", allow_untrusted)
        except UnsupportedError as error:
            raise UnsupportedError(f"backend {error.message}") from None
        create = _entry_point(module, "create_backend", "backend", name)
        settings = options.settings_for(name)
        with _translated(f"create_backend of backend '{name}'"):
            backend = create(settings)
        if not callable(getattr(backend, "load", None)):
            raise UnsupportedError(f"create_backend of backend '{name}' returned no backend (it has no load method)")
        return _PluginBackend(name, backend)

    return lookup


def create_cache(options: BackendOptions, allow_untrusted: tuple[str, ...] = ()) -> ResponseCache | None:
    """The response cache of --cache-config: the built-in `local` cache, or a plugin from --cache-directory;
    None when no cache is configured.

    Raises:
        InvalidArgumentError: bad settings, a bad name, or an untrusted plugin path (naming it).
        UnsupportedError: no such cache, or its module lacks create_cache / returns no cache.
        InternalError: the plugin's create_cache raised.
    """
    if not options.cache_config:
        return None
    name = options.cache_config[0][0]
    settings = {key: value for _, key, value in options.cache_config}
    if name == "local":
        return create_local_cache(settings)
    try:
        module = load_module(options.cache_directory, name, "cache.py", allow_untrusted)
    except UnsupportedError as error:
        raise UnsupportedError(f"cache {error.message}") from None
    create = _entry_point(module, "create_cache", "cache", name)
    with _translated(f"create_cache of cache '{name}'"):
        cache = create(settings)
    if not (callable(getattr(cache, "lookup", None)) and callable(getattr(cache, "insert", None))):
        raise UnsupportedError(f"create_cache of cache '{name}' returned no cache (it needs lookup and insert)")
    return cast(ResponseCache, cache)
