"""Model lifecycle: load each model's versions through its backend, track (state, reason), unload.

Imports `core.*`, `errors`, `options`. States per (model, version) are the repository index.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from seawall.core import model_config, repoagent, repository
from seawall.core.backend import Backend, Model, ModelCalls, ModelConfig, ModelLoadContext
from seawall.core.model_config import ModelSpec
from seawall.core.repoagent import RepoAgent, no_plugins
from seawall.core.scheduler import BatchPolicy, Scheduler
from seawall.core.stats import StatsRecorder
from seawall.core.types import ModelState
from seawall.errors import InvalidArgumentError, SeawallError
from seawall.options import Options

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ModelVersion:
    """One version of one model: its state, and once READY its config, instances and scheduler."""

    name: str
    version: int
    state: ModelState = ModelState.UNKNOWN
    reason: str = ""
    config: ModelConfig | None = None
    spec: ModelSpec | None = None
    model: Model | None = None
    scheduler: Scheduler | None = None
    labels: dict[str, list[str]] = field(default_factory=dict)  # output → class labels (classification)
    stats: StatsRecorder = field(init=False)

    def __post_init__(self) -> None:
        self.stats = StatsRecorder(self.name, str(self.version))

    def is_ready(self) -> bool:
        return self.state is ModelState.READY

    async def unload(self, drain_secs: float = 0.0) -> None:
        """Let in-flight requests finish (up to `drain_secs`), then finalize; idempotent."""
        if self.model is None:
            return
        self.state = ModelState.UNLOADING
        if self.scheduler is not None:
            await self.scheduler.stop(drain_secs)
        if self.model is not None:
            try:
                await self.model.unload()
            except Exception:
                logger.exception("unloading model '%s' version %d failed", self.name, self.version)
        self.model, self.scheduler = None, None
        self.state, self.reason = ModelState.UNAVAILABLE, "unloaded"


@dataclass(slots=True)
class ModelRecord:
    """A model the server knows: its versions, or why it could not be loaded at all."""

    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    error: str = ""  # model-level failure (bad config, no versions): no version was attempted
    unloaded: bool = False  # unloaded on request: not a failure, and no longer counts for readiness

    def is_ready(self) -> bool:
        return not self.error and bool(self.versions) and all(v.is_ready() for v in self.versions.values())

    def failure(self) -> str:
        """Why the model is not fully ready: the model-level error or the first failed version."""
        if self.error:
            return self.error
        for number, entry in sorted(self.versions.items()):
            if not entry.is_ready():
                return f"version {number} is at {entry.state.value} state: {entry.reason}"
        return ""

    async def unload(self, drain_secs: float = 0.0) -> None:
        await asyncio.gather(*(v.unload(drain_secs) for v in self.versions.values()))


class ModelLifecycle:
    """Loads and unloads models. Owns every ModelRecord; event loop thread only."""

    def __init__(
        self,
        options: Options,
        backend_for: Callable[[str], Backend],
        agent_for: Callable[[str], RepoAgent] = no_plugins,
        calls: ModelCalls | None = None,
    ) -> None:
        self._options = options
        self._backend_for = backend_for
        self._agent_for = agent_for
        self._calls = calls  # what model code may ask of the server (BLS), handed to every backend's load
        self.models: dict[str, ModelRecord] = {}

    async def load_all(self, locations: dict[str, repository.ModelLocation]) -> None:
        """Load every model, at most `load_thread_count` at a time."""
        limit = asyncio.Semaphore(max(1, self._options.repository.load_thread_count))

        async def load_one(location: repository.ModelLocation) -> None:
            async with limit:
                await self.load(location)

        await asyncio.gather(*(load_one(loc) for loc in locations.values()))

    async def load(
        self,
        location: repository.ModelLocation,
        config: ModelConfig | None = None,
        drain_secs: float = 30.0,
        repository_dir: str | None = None,
    ) -> ModelRecord:
        """Load (or reload) one model; failures become states, not exceptions.

        With a `config` override, the repository agents of the configuration stored in `repository_dir`
        (default: the model's own directory; "" for a model in no repository) still apply: an override
        that leaves them out gets them, and one that names other agents is refused.

        A reload is all or nothing: the new versions replace the old ones only if every one of them loaded,
        and the old ones then finish their in-flight requests (up to `drain_secs`) before they unload.
        Otherwise the old model keeps serving and the failed record is returned, not installed.
        """
        record = ModelRecord(location.name)
        old = self.models.get(location.name)
        if old is None or old.unloaded or not old.versions:
            self.models[location.name] = record  # nothing serves yet: the index shows the versions LOADING
        stored_in = location.path if repository_dir is None else repository_dir
        await self._build(record, location, config, stored_in if config is not None else "")
        if old is not None and not old.unloaded and old.versions and not record.is_ready():
            if any(v.is_ready() for v in old.versions.values()):
                await record.unload()
                logger.error("reload of '%s' failed; the previous version keeps serving", location.name)
                return record
        self.models[location.name] = record
        if old is not None:
            await old.unload(drain_secs)
        return record

    async def unload(self, name: str, drain_secs: float = 30.0, forget: bool = False) -> None:
        """Unload every version of `name` after its in-flight requests finish; `forget` drops the record."""
        record = self.models.get(name)
        if record is None:
            return
        record.unloaded = True
        await record.unload(drain_secs)
        if forget:
            self.models.pop(name, None)

    async def _build(
        self, record: ModelRecord, location: repository.ModelLocation, override: ModelConfig | None, stored_in: str
    ) -> None:
        """Fill `record` with the model's versions, loaded (or with the reason they are not)."""
        if location.error:
            record.error = location.error
            return
        try:
            if override is not None and stored_in:
                self._keep_repository_agents(override, stored_in, location.name)
            config, backend = await self._prepare(location, override)
            versions = repository.select_versions(config.version_policy, repository.version_directories(location.path))
            if not versions:
                raise InvalidArgumentError(
                    f"at least one version must be available under the version policy of model '{location.name}'"
                )
        except SeawallError as error:
            record.error = error.message
            logger.error("failed to load model '%s': %s", location.name, error.message)
            return
        for number in versions:
            record.versions[number] = ModelVersion(location.name, number, ModelState.LOADING)
        from_client = override is not None
        await asyncio.gather(
            *(self._load_version(record.versions[n], config, backend, location, from_client) for n in versions)
        )

    def _keep_repository_agents(self, override: ModelConfig, stored_in: str, name: str) -> None:
        """Put the stored configuration's repository agents (checksum pins) into a load-time override.

        Raises:
            InvalidArgumentError: the override names other agents, or the stored configuration is unreadable.
        """
        stored = model_config.read_config(stored_in, self._options.repository.config_name)
        if stored is None or not stored.model_repository_agents.agents:
            return
        if (
            override.model_repository_agents.agents
            and override.model_repository_agents != stored.model_repository_agents
        ):
            raise InvalidArgumentError(
                f"load parameter 'config' of model '{name}' cannot change 'model_repository_agents': "
                "the agents of the repository's configuration always apply"
            )
        override.model_repository_agents.CopyFrom(stored.model_repository_agents)

    async def _prepare(
        self, location: repository.ModelLocation, override: ModelConfig | None
    ) -> tuple[ModelConfig, Backend]:
        options = self._options.repository
        config = override if override is not None else model_config.read_config(location.path, options.config_name)
        if config is not None and location.mapped:
            config.name = location.name  # a registered directory serves under the name it was registered with
        if config is None:
            if not options.auto_complete_config:
                raise InvalidArgumentError(
                    f"model configuration for '{location.name}' is missing and auto-complete is disabled"
                )
            config = ModelConfig(name=location.name, backend=_guess_backend(location.path))
        name = config.name or location.name
        # repository agents check the files before any model code (auto-complete included) runs
        repoagent.run_agents(config, location.path, self._agent_for)
        model_config.refuse_unsupported(config)  # before the backend is looked up: an ensemble is not a plugin
        backend = self._backend_for(model_config.backend_of(config))
        if options.auto_complete_config:
            versions = repository.version_directories(location.path)
            version_dir = os.path.join(location.path, str(versions[-1])) if versions else location.path
            config = await backend.auto_complete_config(config, location.path, version_dir)
        model_config.complete_defaults(config, name)
        model_config.validate(config, location.name)
        return config, backend

    async def _load_version(
        self,
        entry: ModelVersion,
        config: ModelConfig,
        backend: Backend,
        location: repository.ModelLocation,
        from_client: bool = False,
    ) -> None:
        def report_unavailable(reason: str) -> None:
            if entry.state is ModelState.READY:
                logger.error("model '%s' version %d is unavailable: %s", entry.name, entry.version, reason)
                entry.state, entry.reason = ModelState.UNAVAILABLE, reason

        context = ModelLoadContext(
            name=entry.name,
            version=entry.version,
            config=config,
            model_dir=location.path,
            version_dir=os.path.join(location.path, str(entry.version)),
            backend_settings=self._options.backends.settings_for(model_config.backend_of(config)),
            auto_complete=self._options.repository.auto_complete_config,
            report_unavailable=report_unavailable,
            config_from_client=from_client,
            calls=self._calls,
        )
        try:
            entry.labels = read_labels(config, location.path)
        except SeawallError as error:
            entry.state, entry.reason = ModelState.UNAVAILABLE, error.message
            return
        attempts = 1 + max(0, self._options.repository.load_retry_count)
        for attempt in range(attempts):
            try:
                entry.model = await backend.load(context)
                break
            except SeawallError as error:
                entry.reason = error.message
            except Exception:
                logger.exception("loading model '%s' version %d failed", entry.name, entry.version)
                entry.reason = "internal error while loading the model"
            if attempt + 1 < attempts:
                logger.warning("retrying load of model '%s' version %d", entry.name, entry.version)
        if entry.model is None:
            entry.state = ModelState.UNAVAILABLE
            logger.error("failed to load '%s' version %d: %s", entry.name, entry.version, entry.reason)
            return
        entry.config, entry.spec = config, model_config.compile_spec(config)
        entry.scheduler = Scheduler(entry.model.instances, BatchPolicy.from_config(config), entry.stats)
        entry.scheduler.start()
        entry.state, entry.reason = ModelState.READY, ""
        logger.info("successfully loaded '%s' version %d", entry.name, entry.version)

    async def unload_all(self, drain_secs: float = 0.0) -> None:
        await asyncio.gather(*(record.unload(drain_secs) for record in self.models.values()))


def _guess_backend(model_dir: str) -> str:
    """The backend of a model without config.pbtxt, from the files in its version directories."""
    for number in repository.version_directories(model_dir):
        for filename, backend in (
            ("model.py", "python"),
            ("model.onnx", "onnxruntime"),
            ("model.pt", "pytorch"),
        ):
            if os.path.isfile(os.path.join(model_dir, str(number), filename)):
                return backend
    return ""


MAX_LABEL_FILE_BYTES = 16 * 1024 * 1024


def read_labels(config: ModelConfig, model_dir: str) -> dict[str, list[str]]:
    """The label files of the config's outputs, one label per line, confined to the model directory.

    Raises:
        InvalidArgumentError: a label file is missing, too large, or resolves outside the model directory.
    """
    labels: dict[str, list[str]] = {}
    root = os.path.realpath(model_dir)
    for output in config.output:
        if not output.label_filename:
            continue
        path = os.path.realpath(os.path.join(root, output.label_filename))
        if os.path.commonpath([path, root]) != root or not os.path.isfile(path):
            raise InvalidArgumentError(
                f"label file of output '{output.name}' must be a file inside the model directory"
            )
        if os.path.getsize(path) > MAX_LABEL_FILE_BYTES:
            raise InvalidArgumentError(f"label file of output '{output.name}' is too large")
        with open(path, encoding="utf-8", errors="replace") as file:
            labels[output.name] = file.read().splitlines()
    return labels
