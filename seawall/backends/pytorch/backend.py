"""The pytorch backend (`platform: "pytorch_libtorch"` / `backend: "pytorch"`): TorchScript models on the CPU.

Imports `core.backend`, `core.model_config`, `core.config_proto`, `options`, `errors` and this package. Each model
version's file is read once through `archive` (bounded, pinned, checked to be a TorchScript archive), then every
instance gets its own module from `torch.jit.load` in a worker process of its own (`isolated`, `worker.py`), or
with the SEAWALL_IN_PROCESS opt-in on a thread of the server (`instance.py`: torch releases the GIL). Auto-complete
is Triton's: none (TorchScript keeps no signature).
"""

from __future__ import annotations

import asyncio
import logging

from seawall.backends import isolated
from seawall.backends.loaded import LoadedModel, ThreadInstance, instance_names
from seawall.backends.python.instance import PythonModelInstance
from seawall.backends.pytorch import archive, naming, runtime
from seawall.backends.pytorch.instance import TorchRunner, plan_runs
from seawall.core.backend import ModelConfig, ModelLoadContext
from seawall.core.model_config import checksum_pins
from seawall.errors import UnsupportedError
from seawall.options import BackendOptions

logger = logging.getLogger(__name__)

BACKEND_NAME = "pytorch"
MAX_INSTANCES = 64

_Instance = ThreadInstance | PythonModelInstance


class TorchBackend:
    """The Backend for TorchScript models."""

    def __init__(self, options: BackendOptions | None = None) -> None:
        self._options = options or BackendOptions()
        self._models: set[LoadedModel[_Instance]] = set()  # loaded, not yet unloaded; event loop thread

    @property
    def name(self) -> str:
        return BACKEND_NAME

    async def auto_complete_config(self, config: ModelConfig, model_dir: str, version_dir: str) -> ModelConfig:
        """Triton's pytorch backend completes nothing: the config is returned as given."""
        logger.warning(
            "skipping model configuration auto-complete for '%s': not supported for pytorch backend", config.name
        )
        result = ModelConfig()
        result.CopyFrom(config)
        return result

    async def load(self, context: ModelLoadContext) -> LoadedModel[_Instance]:
        """Read and check the archive, bind the config to `forward()`, and start one module per instance (each in a
        worker process, or on a thread of the server with SEAWALL_IN_PROCESS).

        Raises:
            UnsupportedError: torch missing or older than 2.6.
            InvalidArgumentError: unknown parameter, unsafe/oversized/non-TorchScript file, config mismatch.
            InternalError: torch refused the archive, or Triton's INTERNAL config errors.
        """
        config = context.config
        runtime.torch()
        settings = naming.parse_settings(config)
        isolated_mode = isolated.is_isolated(config, context, self._options, BACKEND_NAME)
        names = instance_names(config, context.name, MAX_INSTANCES)
        data, relative = await asyncio.to_thread(
            archive.read_model,
            context.model_dir,
            context.version_dir,
            config.default_model_filename or "model.pt",
            checksum_pins(config),
            self._options.max_model_bytes,
            context.name,
        )
        model: LoadedModel[_Instance]
        if isolated_mode:  # each worker loads the archive and binds the config; torch never sees it in the server
            plan = isolated.plan_json(config, context.version, settings)
            workers, release = await isolated.start_model(context, BACKEND_NAME, names, data, plan, self._options)
            model = LoadedModel(workers, self._models, release)
        else:
            scripts = [await asyncio.to_thread(runtime.load, data, settings, context.name) for _ in names]
            plan_ = plan_runs(config, context.name, str(context.version), scripts[0], settings)
            batching = config.HasField("dynamic_batching")
            threads = [
                ThreadInstance(n, plan_.model_name, "torch", TorchRunner(s, plan_), batching)
                for (n, _), s in zip(names, scripts, strict=True)
            ]
            model = LoadedModel(threads, self._models)
        logger.info(
            "model '%s' version %d: %d TorchScript module(s) from '%s', %s",
            context.name,
            context.version,
            len(names),
            relative,
            "each in a worker process" if isolated_mode else "on threads of the server process",
        )
        return model

    async def stop(self) -> None:
        await asyncio.gather(*(model.unload() for model in list(self._models)))


def create(options: BackendOptions) -> TorchBackend:
    """The registry's factory. Raises: UnsupportedError when torch is not installed (naming the extra)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise UnsupportedError(runtime.MISSING)
    return TorchBackend(options)
