"""The InferenceServer facade: the one object every frontend and the embedding API call.

Resolve, then run: `model(name, version)` binds a request to a served model (`core.served.ServedModel`: its
config, input spec, raw-input layout and limits), whose `infer` runs the per-request pipeline; `infer(request)`
does both. The facade itself keeps lifecycle and administration (the run-time log, trace and shared-memory
settings in `core.server_settings`, mixed in).

Imports only other `core` modules, `errors` and `options`: the backends arrive as a `BackendLookup` that the
composition root builds. Knows nothing about HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping

from seawall.core import catalog, repository
from seawall.core.audit import audited
from seawall.core.backend import Backend, BackendLookup, ModelConfig
from seawall.core.busy_poll import BusyPoll
from seawall.core.control import ModelControl
from seawall.core.custom_metrics import CustomMetrics
from seawall.core.custom_metrics import FamilySnapshot as FamilySnapshot  # for the metrics frontend
from seawall.core.custom_metrics import MetricKind as MetricKind  # for the metrics frontend
from seawall.core.inference import InferencePipeline
from seawall.core.lifecycle import ModelLifecycle
from seawall.core.log_settings import LogSettings
from seawall.core.model_calls import ServerModelCalls
from seawall.core.model_config import config_to_dict as config_to_dict  # for frontends printing /config
from seawall.core.repoagent import RepoAgent, no_plugins
from seawall.core.repository import is_valid_model_name as is_valid_model_name  # for frontends checking names
from seawall.core.repository import require_valid_model_name as require_valid_model_name  # and for frontends
from seawall.core.residency import Residency, check_options
from seawall.core.response_cache import ResponseCache
from seawall.core.served import ServedModel
from seawall.core.server_settings import ServerSettings
from seawall.core.shm import SharedMemoryManager
from seawall.core.trace import TraceSettings
from seawall.core.trace_file import TraceFile
from seawall.core.types import (
    InferRequest,
    InferResponse,
    ModelIndexEntry,
    ModelMetadata,
    ModelStatistics,
    ServerMetadata,
)
from seawall.errors import (
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnsupportedError,
)
from seawall.options import Options

logger = logging.getLogger(__name__)

SERVER_VERSION = "2.51.0"
#: Extensions Seawall implements, in the order Triton 2.51 lists them.
EXTENSIONS = (
    "classification",
    "sequence",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "binary_tensor_data",
    "parameters",
    "statistics",
    "trace",
    "logging",
)


class InferenceServer(ServerSettings):
    """A Triton-compatible inference server core.

    Lifecycle: `await start()` loads the repository per the control mode; `await stop()` unloads every model,
    then stops `backends`. Without `backends` (the composition root's registry, see `seawall.open_server`) every
    model fails to load. All methods run on the event loop thread.
    """

    def __init__(
        self,
        options: Options,
        backends: BackendLookup | None = None,
        log_settings: LogSettings | None = None,
        agent_for: Callable[[str], RepoAgent] = no_plugins,
        response_cache: ResponseCache | None = None,
    ) -> None:
        self.options = options
        self._backends = backends
        self._agent_for = agent_for  # repository agents beyond the built-in checksum agent
        # shared with the process's log handler when the CLI made it; otherwise this server's own
        self.log_settings = log_settings if log_settings is not None else LogSettings(options.log)
        trace = options.trace
        self.trace_settings = TraceSettings(trace.level, trace.rate, trace.count, trace.file, trace.log_frequency)
        self._traces = TraceFile(self.trace_settings)  # writes the start-up trace file; event loop thread
        self.shared_memory = SharedMemoryManager(
            options.allow_client_shm, options.max_shm_regions, options.max_shm_bytes
        )
        # models with `response_cache { enable: true }` use the cache; None: the server has none (--cache-config)
        busy_poll = BusyPoll(options.limits.busy_poll_us)
        self._pipeline = InferencePipeline(self.shared_memory, self._traces, options.limits, response_cache, busy_poll)
        # an ensemble's steps: the same pipeline without the admission gate (the ensemble's request passed it, and
        # a draining server lets it finish, every step of it) and without --max-inflight-requests (internal: the
        # ensemble's request counts, its steps, parallel or nested, must not refuse it)
        step_limits = dataclasses.replace(options.limits, max_inflight_requests=0)
        self._step_pipeline = InferencePipeline(
            self.shared_memory, self._traces, step_limits, response_cache, busy_poll
        )
        self._step_pipeline.refusal = None
        self._lifecycle: ModelLifecycle | None = None
        self._control: ModelControl | None = None
        self._residency: Residency | None = None  # load on request / --max-loaded-models (explicit mode)
        self._custom_metrics = CustomMetrics()  # the families model code creates (pb_utils.MetricFamily)
        self._live = False
        self._draining = False

    async def start(self) -> None:
        """Scan the repositories and load the models the control mode asks for.

        Raises:
            NotFoundError: a model repository path does not exist.
            InternalError: a model failed to load and exit-on-error is set.
            UnsupportedError: a control mode this server cannot run yet.
            InvalidArgumentError: residency settings (load on request, max loaded models) outside explicit mode.
        """
        options = self.options.repository
        check_options(options)  # before any work: nothing to undo
        if not options.paths:
            raise InvalidArgumentError("at least one model repository is required (--model-repository)")
        started = time.monotonic()
        calls = ServerModelCalls(
            self.model,
            self.model_ready,
            lambda name, config, files, caller: self.load_model(name, config, files, caller=caller),
            lambda name, dependents, caller: self.unload_model(name, dependents, caller=caller),
        )
        self._lifecycle = ModelLifecycle(self.options, self._backend_for, self._agent_for, self._custom_metrics, calls)
        self._lifecycle.resolve = self._composing_model  # an ensemble step runs through the same entry
        self._control = ModelControl(self.options, self._lifecycle)
        if options.control_mode == "explicit" and (options.load_on_request or options.max_loaded_models):
            control = self._control
            self._residency = Residency(options, self._lifecycle.models, control.knows, control.load, control.unload)
        try:
            await self._control.start()
        except BaseException:
            await self.stop()
            raise
        self._set_live(True)
        models = self._lifecycle.models
        for line in catalog.model_table(models, ()):
            logger.info("%s", line)  # one record per row, as the option table
        if any(not record.is_ready() for record in models.values()) and options.exit_on_error:
            await self.stop()
            raise InternalError("failed to load all models")
        ready = sum(record.is_ready() for record in models.values())
        logger.info("loaded %d model(s) in %.2fs", ready, time.monotonic() - started)

    def _backend_for(self, name: str) -> Backend:
        if self._backends is None:
            raise UnsupportedError(f"backend '{name}' is not available: this server was built without backends")
        return self._backends.get(name)

    async def stop(self) -> None:
        """Stop accepting work, unload every model (calls `finalize`); idempotent."""
        self._set_live(False)
        if self._control is not None:
            await self._control.stop()
        self.shared_memory.close()
        if self._lifecycle is not None:
            await self._lifecycle.unload_all()
        self._traces.close()
        if self._backends is not None:
            await self._backends.stop()

    def _set_live(self, live: bool) -> None:
        self._live = live
        self._update_gate()

    def _update_gate(self) -> None:
        """Tell the pipeline whether (and why not) inference requests are accepted."""
        if not self._live:
            self._pipeline.refusal = "Server is not live"
        else:
            self._pipeline.refusal = "Server is shutting down" if self._draining else None

    def is_live(self) -> bool:
        return self._live

    def is_ready(self) -> bool:
        """Live, and (with strict readiness) every model the server tried to load is READY."""
        if not self._live or self._draining or self._lifecycle is None:
            return False
        if not self.options.repository.strict_readiness:
            return True
        return all(r.is_ready() for r in self._lifecycle.models.values() if not r.unloaded)

    def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(self.options.server_id, SERVER_VERSION, EXTENSIONS)

    @property
    def _models(self) -> catalog.Models:
        return self._lifecycle.models if self._lifecycle is not None else {}

    def model_ready(self, name: str, version: str = "") -> bool:
        """Raises: InvalidArgumentError for a version string that is not an integer."""
        repository.parse_version(version)
        try:
            return catalog.ready_version(self._models, name, version).is_ready()
        except (NotFoundError, UnavailableError):
            return False

    async def model_ready_checked(self, name: str, version: str = "") -> bool:
        """`model_ready`, and the model's own readiness: each instance's optional `check_ready()` (a python
        model's `is_ready()`), as Triton asks it at a model-readiness check.

        Raises: InvalidArgumentError for a version string that is not an integer.
        """
        if not self.model_ready(name, version):
            return False
        try:
            model = catalog.ready_version(self._models, name, version).model
        except (NotFoundError, UnavailableError):
            return False
        checks = [check for i in (model.instances if model else ()) if (check := getattr(i, "check_ready", None))]
        return all(await asyncio.gather(*(check() for check in checks)))

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        """Raises: NotFoundError (unknown model or version), InvalidArgumentError (bad version string)."""
        return catalog.model_metadata(self._models, name, version)

    def model_config(self, name: str, version: str = "") -> ModelConfig:
        """The completed configuration of a served model version.

        Raises: NotFoundError, InvalidArgumentError.
        """
        config = catalog.ready_version(self._models, name, version).config
        assert config is not None
        return config

    def repository_index(self, ready_only: bool = False) -> list[ModelIndexEntry]:
        """Every model the server knows, sorted by name then version; never-loaded models by name only."""
        never_loaded = self._control.never_loaded() if self._control is not None else []
        return catalog.repository_index(self._models, never_loaded, ready_only)

    async def load_model(
        self, name: str, config_json: str | None = None, files: Mapping[str, bytes] | None = None, *, caller: str = ""
    ) -> None:
        """Load or reload a model (explicit control mode), optionally with a JSON config and files.

        Raises:
            UnavailableError: the control mode is not explicit.
            InvalidArgumentError: bad name, config, file path, or the model failed to load.
            NotFoundError: the model is in no repository.
        """
        with audited(caller, "load", name):
            control = self._require_control()
            if self._residency is None:
                await control.load(name, config_json, files)
            else:  # room is made first under --max-loaded-models
                await self._residency.admit(name, lambda n: control.load(n, config_json, files))

    async def unload_model(self, name: str, unload_dependents: bool = False, *, caller: str = "") -> None:
        """Unload every version of a model (explicit control mode), and the ensembles that use it; with
        `unload_dependents`, also the composing models of an ensemble that were loaded only for it and that no
        other loaded model uses (Triton's dependency rules).

        Raises: UnavailableError (the control mode is not explicit).
        """
        with audited(caller, "unload", name):
            await self._require_control().unload(name, unload_dependents)

    async def register_model_directory(self, name: str, directory: str, *, caller: str = "") -> None:
        """Serve the model in `directory` as `name` from now on (explicit control mode): registers the directory
        under that name and loads it; a model that fails to load leaves nothing registered. The caller decides
        which directories are acceptable (SageMaker confines them to its model root).

        Raises:
            UnavailableError: the control mode is not explicit.
            InvalidArgumentError: bad name, not a directory, or the model failed to load.
            AlreadyExistsError: the server already has a model of that name.
        """
        with audited(caller, "register model directory", name):
            await self._require_control().register(name, directory)

    async def unregister_model_directory(self, name: str, *, caller: str = "") -> None:
        """Unload a model served through `register_model_directory` and forget its directory.

        Raises: UnavailableError (not explicit mode), NotFoundError (not registered).
        """
        with audited(caller, "unregister model directory", name):
            await self._require_control().unregister(name)

    async def poll_repository(self) -> None:
        """Rescan the repositories now (poll mode does this every --repository-poll-secs)."""
        await self._require_control().poll_once()

    def _require_control(self) -> ModelControl:
        if self._control is None or not self._live:
            raise UnavailableError("Server is not live")
        return self._control

    def model_statistics(self, name: str = "", version: str = "") -> list[ModelStatistics]:
        """Statistics of every ready model version ("" name), or of one model / version.

        Raises: InvalidArgumentError (the statistics extension answers unknown models with 400).
        """
        return catalog.model_statistics(self._models, name, version, lambda v: self._pipeline.cache_for(v) is not None)

    def custom_metric_families(self) -> list[FamilySnapshot]:
        """The metric families model code created (pb_utils.MetricFamily), for the metrics frontend."""
        return self._custom_metrics.snapshot()

    def model(self, name: str, version: str = "") -> ServedModel:
        """The served model a request for `name` / `version` ("" = highest ready version) runs on.

        Raises:
            UnavailableError: the server is not live or is shutting down, or the model has no ready version.
            NotFoundError: unknown model or version.
            InvalidArgumentError: a bad model name or version string.
        """
        self._pipeline.check_open()
        return ServedModel(catalog.ready_version(self._models, name, version), self._pipeline)

    @property
    def resolves_at_once(self) -> bool:
        """`model` is all `resolve` does (no load on request, no use to count): a frontend may call it directly and
        save a coroutine per request."""
        return self._residency is None

    async def resolve(self, name: str, version: str = "") -> ServedModel:
        """`model`, once the model is resident: with `--load-on-request` (explicit mode) a request for a
        repository model that is not loaded loads it first, and every request counts as a use for
        `--max-loaded-models`' least-recently-used eviction.

        Raises: as `model`; and UnavailableError (the load failed or timed out), CapacityError (no room).
        """
        if self._residency is None:
            return self.model(name, version)
        self._pipeline.check_open()
        await self._residency.ensure(name)
        served = self.model(name, version)
        self._residency.hold(name, served)
        return served

    def residency_counts(self) -> tuple[int, int] | None:
        """(models loaded on request, models evicted) so far; None when neither feature is on."""
        if self._residency is None:
            return None
        return self._residency.loads_on_request, self._residency.evictions

    def _composing_model(self, name: str, version: str) -> ServedModel:
        """The served model an ensemble step runs on: `model` without the admission gate (a draining server
        finishes the ensemble requests it accepted, every step of them).

        Raises: NotFoundError, UnavailableError (the composing model has no ready version).
        """
        return ServedModel(catalog.ready_version(self._models, name, version), self._step_pipeline)

    async def infer(self, request: InferRequest) -> InferResponse:
        """Resolve the request's model, then run it (`model(...).infer(request)`): validate `request` against the
        model's config, schedule it on an instance, return its response.

        Raises:
            NotFoundError: unknown model or version.
            UnavailableError: the server or the model is not ready.
            InvalidArgumentError: inputs do not match the config (name, datatype, shape, byte size).
            SeawallError: the model's own error for this request, with its code.
        """
        return await (await self.resolve(request.model_name, request.model_version)).infer(request)

    # ---------------------------------------------------------------------------------------- draining

    def start_draining(self) -> None:
        """Refuse new inference requests and report not ready; requests already accepted go on."""
        self._draining = True
        self._update_gate()

    def inflight(self) -> int:
        """Inference requests accepted and not yet answered."""
        return self._pipeline.inflight
