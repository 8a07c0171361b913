"""Model lifecycle: load each model's versions through its backend, track (state, reason), unload.

Imports `core.*`, `errors`, `options`. States per (model, version) are the repository index (`core.model_record`);
one version loads in `core.version_loader`; ensembles load their composing models first.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from seawall.core import config_features, ensemble, ensemble_plan, model_config, repoagent, repository
from seawall.core.backend import Backend, ModelCalls, ModelConfig
from seawall.core.custom_metrics import CustomMetrics
from seawall.core.model_record import ModelRecord, ModelVersion
from seawall.core.rate_limiter import RateLimiter
from seawall.core.repoagent import RepoAgent, no_plugins
from seawall.core.types import ModelState
from seawall.core.version_loader import load_version
from seawall.errors import InvalidArgumentError, NotFoundError, SeawallError
from seawall.options import Options

__all__ = ["ModelLifecycle", "ModelRecord", "ModelVersion"]

logger = logging.getLogger(__name__)


class ModelLifecycle:
    """Loads and unloads models. Owns every ModelRecord; event loop thread only."""

    def __init__(
        self,
        options: Options,
        backend_for: Callable[[str], Backend],
        agent_for: Callable[[str], RepoAgent] = no_plugins,
        custom_metrics: CustomMetrics | None = None,
        calls: ModelCalls | None = None,
    ) -> None:
        self._options = options
        self._backend_for = backend_for
        self._agent_for = agent_for
        self._custom_metrics = custom_metrics
        self._calls = calls  # what model code may ask of the server (BLS), handed to every backend's load
        self.models: dict[str, ModelRecord] = {}
        # ensembles: their steps run each composing model through this (the server's resolve-then-run entry),
        # and loading one loads the composing models `locate` finds (control sets both)
        self.resolve: ensemble.Resolve | None = None
        self.locate: Callable[[str], repository.ModelLocation | None] = lambda name: None
        self._loading: dict[str, asyncio.Future[None]] = {}  # model → done when its load in progress ends
        self.rate_limiter = RateLimiter(options.rate_limit, options.rate_limit_resources)

    async def load_all(self, locations: dict[str, repository.ModelLocation]) -> None:
        """Load every model, at most `load_thread_count` at a time; ensembles after the other models, one at a
        time (each loads what it needs first, so a cycle of ensembles fails instead of waiting on itself)."""
        limit = asyncio.Semaphore(max(1, self._options.repository.load_thread_count))

        async def load_one(location: repository.ModelLocation) -> None:
            async with limit:
                await self.load(location)

        ensembles = [loc for loc in locations.values() if self._is_ensemble(loc)]
        await asyncio.gather(*(load_one(loc) for loc in locations.values() if loc not in ensembles))
        for location in ensembles:
            record = self.models.get(location.name)
            if record is None or record.unloaded or not (record.versions or record.error):
                await self.load(location)  # not loaded yet as another ensemble's composing model

    def _is_ensemble(self, location: repository.ModelLocation) -> bool:
        try:
            config = model_config.read_config(location.path, self._options.repository.config_name)
        except SeawallError:
            return False
        return config is not None and ensemble_plan.is_ensemble(config)

    async def load(
        self,
        location: repository.ModelLocation,
        config: ModelConfig | None = None,
        drain_secs: float = 30.0,
        repository_dir: str | None = None,
        explicit: bool = True,
        chain: tuple[str, ...] = (),
    ) -> ModelRecord:
        """Load (or reload) one model; failures become states, not exceptions.

        With a `config` override, the repository agents of the configuration stored in `repository_dir`
        (default: the model's own directory; "" for a model in no repository) still apply: an override
        that leaves them out gets them, and one that names other agents is refused.

        A reload is all or nothing: the new versions replace the old ones only if every one of them loaded,
        and the old ones then finish their in-flight requests (up to `drain_secs`) before they unload.
        Otherwise the old model keeps serving and the failed record is returned, not installed.

        An ensemble first loads the composing models that are not loaded yet (`explicit` False for them: an
        unload with `unload_dependents` may take them along); `chain` is the ensembles loading it.
        """
        record = ModelRecord(location.name, explicit=explicit)
        old = self.models.get(location.name)
        if old is None or old.unloaded or not old.versions:
            self.models[location.name] = record  # nothing serves yet: the index shows the versions LOADING
        elif not explicit:
            record.explicit = old.explicit
        stored_in = location.path if repository_dir is None else repository_dir
        loading = self._loading[location.name] = asyncio.get_running_loop().create_future()
        try:
            await self._build(record, location, config, stored_in if config is not None else "", chain)
        finally:
            if self._loading.get(location.name) is loading:
                del self._loading[location.name]
            loading.set_result(None)
        if old is not None and not old.unloaded and old.versions and not record.is_ready():
            if any(v.is_ready() for v in old.versions.values()):
                await record.unload()
                logger.error("reload of '%s' failed; the previous version keeps serving", location.name)
                return record
        self.models[location.name] = record
        if old is not None:
            await old.unload(drain_secs)
        return record

    async def unload(
        self, name: str, drain_secs: float = 30.0, forget: bool = False, unload_dependents: bool = False
    ) -> None:
        """Unload every version of `name` after its in-flight requests finish; `forget` drops the record.

        As in Triton, the ensembles that use `name` are unloaded with it (they cannot serve without it); with
        `unload_dependents`, so are the composing models of `name` that were loaded only for ensembles and that
        no other model still loaded uses, and theirs in turn.
        """
        record = self.models.get(name)
        if record is None:
            return
        record.unloaded = True
        for other in list(self.models.values()):  # first: their requests in flight still need `name`
            if name in other.composing and not other.unloaded and other.versions:
                await self.unload(other.name, drain_secs)
        await record.unload(drain_secs)
        if forget:
            self.models.pop(name, None)
        if unload_dependents:
            for composing in record.composing:
                used = self.models.get(composing)
                if used is None or used.unloaded or used.explicit:
                    continue
                if not any(composing in r.composing for r in self.models.values() if not r.unloaded):
                    await self.unload(composing, drain_secs, unload_dependents=True)

    async def _build(
        self,
        record: ModelRecord,
        location: repository.ModelLocation,
        override: ModelConfig | None,
        stored_in: str,
        chain: tuple[str, ...] = (),
    ) -> None:
        """Fill `record` with the model's versions, loaded (or with the reason they are not)."""
        if location.error:
            record.error = location.error
            return
        try:
            if override is not None and stored_in:
                self._keep_repository_agents(override, stored_in, location.name)
            config, backend = await self._prepare(location, override, record)
            versions = repository.select_versions(config.version_policy, repository.version_directories(location.path))
            if not versions:
                raise InvalidArgumentError(
                    f"at least one version must be available under the version policy of model '{location.name}'"
                )
        except SeawallError as error:
            record.error = error.message
            logger.error("failed to load model '%s': %s", location.name, error.message)
            return
        if backend is None:  # an ensemble
            await self._build_ensemble(record, config, versions, chain)
            return
        for number in versions:
            record.versions[number] = ModelVersion(location.name, number, ModelState.LOADING)
        from_client = override is not None
        await asyncio.gather(
            *(
                load_version(
                    record.versions[n],
                    config,
                    backend,
                    location,
                    self._options,
                    self._custom_metrics,
                    self._calls,
                    from_client,
                    self.rate_limiter,
                )
                for n in versions
            )
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
        self, location: repository.ModelLocation, override: ModelConfig | None, record: ModelRecord | None = None
    ) -> tuple[ModelConfig, Backend | None]:
        """The completed, valid configuration of a model and its backend (None: an ensemble, which has none)."""
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
        config_features.refuse_unsupported(config)
        if ensemble_plan.is_ensemble(config):  # not a backend (nor a plugin's)
            if record is not None:
                record.is_ensemble = True
            model_config.complete_defaults(config, name)
            model_config.validate(config, location.name)
            ensemble_plan.check_config(config)
            return config, None
        backend = self._backend_for(config_features.backend_of(config))
        if options.auto_complete_config:
            versions = repository.version_directories(location.path)
            version_dir = os.path.join(location.path, str(versions[-1])) if versions else location.path
            config = await backend.auto_complete_config(config, location.path, version_dir)
        model_config.complete_defaults(config, name)
        model_config.validate(config, location.name)
        return config, backend

    async def _build_ensemble(
        self, record: ModelRecord, config: ModelConfig, versions: list[int], chain: tuple[str, ...]
    ) -> None:
        """Load the ensemble's composing models that are not loaded, check it against them, make its versions."""
        record.composing = ensemble_plan.composing_models(config)
        try:
            plan = await self._plan_ensemble(config, chain)
        except SeawallError as error:
            record.error = error.message
            logger.error("failed to load model '%s': %s", record.name, error.message)
            return
        assert self.resolve is not None, "the server sets resolve before it loads models"
        config.model_transaction_policy.decoupled = plan.decoupled  # as Triton: what its steps make it
        for number in versions:
            entry = record.versions[number] = ModelVersion(record.name, number, ModelState.LOADING)
            entry.model = ensemble.EnsembleModel()
            entry.config, entry.spec = config, model_config.compile_spec(config)
            entry.scheduler = ensemble.EnsembleScheduler(plan, number, self.resolve, entry.stats)
            entry.state = ModelState.READY
            logger.info("successfully loaded '%s' version %d", record.name, number)

    async def _plan_ensemble(self, config: ModelConfig, chain: tuple[str, ...]) -> ensemble_plan.EnsemblePlan:
        """Raises: InvalidArgumentError, UnsupportedError (Triton's messages, see `ensemble_plan.plan`)."""
        name = config.name
        names = ensemble_plan.composing_models(config)
        missing = [n for n in names if n not in self.models and n not in self._loading and self.locate(n) is None]
        if missing:
            raise InvalidArgumentError(
                f"ensemble {name} contains models that are not available or ambiguous: {', '.join(missing)}"
            )
        last = self._cycle(name, names)
        if last is not None:
            raise InvalidArgumentError(f"circular dependency between ensembles: {name} -> ... -> {last} -> {name}")
        for composing in names:
            if composing in chain:  # a cycle the configurations did not show (changed under us): never wait on it
                raise InvalidArgumentError(
                    f"circular dependency between ensembles: {composing} -> ... -> {name} -> {composing}"
                )
        await asyncio.gather(*(self._require(n, (*chain, name)) for n in names))
        configs: dict[tuple[str, int], ModelConfig] = {}
        for step in config.ensemble_scheduling.step:
            record = self.models.get(step.model_name)
            ready = {n: v for n, v in record.versions.items() if v.is_ready()} if record is not None else {}
            if record is None or not ready:
                failure = record.failure() if record is not None else "not loaded"
                raise InvalidArgumentError(
                    f"ensemble '{name}' depends on '{step.model_name}' which has no loaded version. "
                    f"Model '{step.model_name}' loading failed with error: {failure};"
                )
            version = step.model_version
            if version >= 0 and version not in ready:
                raise InvalidArgumentError(
                    f"ensemble '{name}' depends on '{step.model_name}' whose required version {version} is not loaded."
                )
            used = ready[version] if version >= 0 else ready[max(ready)]
            assert used.config is not None
            configs[(step.model_name, version)] = used.config
        return ensemble_plan.plan(config, configs)

    def _cycle(self, name: str, composing: tuple[str, ...]) -> str | None:
        """The ensemble through which `name`'s composing models (`composing`) lead back to `name`; None: no cycle.
        Reads the configuration of each ensemble on the way (loaded, or in the repository)."""
        todo = [(name, model) for model in composing]
        seen: set[str] = set()
        while todo:
            parent, model = todo.pop()
            if model == name:
                return parent
            if model in seen:
                continue
            seen.add(model)
            config = self._config_of(model)
            if config is not None and ensemble_plan.is_ensemble(config):
                todo.extend((model, used) for used in ensemble_plan.composing_models(config))
        return None

    def _config_of(self, name: str) -> ModelConfig | None:
        record = self.models.get(name)
        if record is not None and not record.unloaded:
            for entry in record.versions.values():
                if entry.config is not None:
                    return entry.config
        location = self.locate(name)
        try:
            return model_config.read_config(location.path, self._options.repository.config_name) if location else None
        except SeawallError:
            return None

    async def _require(self, name: str, chain: tuple[str, ...]) -> None:
        """Wait for `name`'s load in progress, or load it (as a composing model) if it is not loaded."""
        loading = self._loading.get(name)
        if loading is not None:
            await asyncio.shield(loading)
            return
        record = self.models.get(name)
        if record is not None and not record.unloaded and (record.versions or record.error):
            return  # loaded, or failed: as it is (Triton does not retry a failed composing model either)
        location = self.locate(name)
        if location is None:
            raise NotFoundError(f"failed to load '{name}', failed to poll from model repository")
        await self.load(location, None, explicit=False, chain=chain)

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
