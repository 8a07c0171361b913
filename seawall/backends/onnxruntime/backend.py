"""The onnxruntime backend (`platform: "onnxruntime_onnx"` / `backend: "onnxruntime"`): ONNX models on the CPU.

Imports `core.backend`, `core.model_config`, `core.config_proto`, `options`, `errors` and this package. Each model
version is read once through `intake` (bounded, pinned, external data confined and inlined), then every instance of
its instance groups gets its own InferenceSession over those bytes, in a worker process of its own (`isolated`,
`worker.py`), or with the SEAWALL_IN_PROCESS opt-in on a thread of the server (`instance.py`: onnxruntime releases
the GIL while it computes).
"""

from __future__ import annotations

import asyncio
import logging
import os

from seawall.backends import isolated
from seawall.backends.loaded import LoadedModel, ThreadInstance, instance_names
from seawall.backends.onnxruntime import intake, runtime, session_options, signature
from seawall.backends.onnxruntime.instance import OnnxRunner, plan_runs
from seawall.backends.python.instance import PythonModelInstance
from seawall.core.backend import ModelConfig, ModelLoadContext
from seawall.core.model_config import checksum_pins
from seawall.errors import InvalidArgumentError, UnsupportedError
from seawall.options import BackendOptions

logger = logging.getLogger(__name__)

BACKEND_NAME = "onnxruntime"
#: Upper bound on the sessions of one model version (each holds a copy of the weights).
MAX_INSTANCES = 64
#: Triton core's default for --backend-config=default-max-batch-size.
DEFAULT_MAX_BATCH_SIZE = 4

_Instance = ThreadInstance | PythonModelInstance


class OnnxBackend:
    """The Backend for ONNX models."""

    def __init__(self, options: BackendOptions | None = None) -> None:
        self._options = options or BackendOptions()
        self._models: set[LoadedModel[_Instance]] = set()  # loaded, not yet unloaded; event loop thread

    @property
    def name(self) -> str:
        return BACKEND_NAME

    def _read(self, config: ModelConfig, model_dir: str, version_dir: str, name: str) -> intake.ModelBytes:
        """The model's bytes, checked and inlined (runs on a worker thread: it reads files)."""
        filename = config.default_model_filename or intake.DIRECTORY_MODEL
        path = intake.locate(model_dir, version_dir, filename, name)
        pins = checksum_pins(config)
        return intake.read_model(path, model_dir, version_dir, pins, self._options.max_model_bytes, name)

    async def auto_complete_config(self, config: ModelConfig, model_dir: str, version_dir: str) -> ModelConfig:
        """Triton's auto-complete from the model's own signature (nothing when the config lists inputs and outputs).
        onnxruntime reads the model in a throw-away worker process (`isolated.describe`), never in the server: a
        model that crashes or hangs its parser fails its own load, and the server only checks the signature sent.

        Raises:
            UnsupportedError: onnxruntime is not installed.
            InvalidArgumentError: the model cannot be read safely, or disagrees with max_batch_size.
            InternalError: onnxruntime refused the model, or its worker died or sent an invalid signature.
            UnavailableError: the worker did not answer within auto-complete-timeout-seconds.
        """
        if config.input and config.output:
            return signature.auto_complete(config, signature.Signature((), (), ()), 0)
        name = config.name or os.path.basename(model_dir)
        named = _named(config, name)
        runtime.onnxruntime()
        settings = session_options.parse(named)
        default_max_batch_size = self._int_setting("default-max-batch-size", DEFAULT_MAX_BATCH_SIZE)
        timeout_s = self._int_setting("auto-complete-timeout-seconds", int(isolated.WORKER_TIMEOUT_S))
        model = await asyncio.to_thread(self._read, config, model_dir, version_dir, name)
        plan = isolated.plan_json(named, 0, settings)
        described = await isolated.describe(name, model_dir, BACKEND_NAME, model.data, plan, self._options, timeout_s)
        model_signature = signature.from_description(described, name)
        return signature.auto_complete(named, model_signature, default_max_batch_size)

    def _int_setting(self, key: str, default: int) -> int:
        """A --backend-config=onnxruntime,<key>=<integer> value.

        Raises:
            InvalidArgumentError: not an integer (or a negative one).
        """
        value = self._options.setting(BACKEND_NAME, key, str(default))
        try:
            number = int(value)
        except ValueError:
            number = -1
        if number < 0:
            raise InvalidArgumentError(f"backend setting '{key}' must be a non-negative integer, got '{value[:32]}'")
        return number

    async def load(self, context: ModelLoadContext) -> LoadedModel[_Instance]:
        """Read the model once, then create one session per instance (in its worker process, or here with
        SEAWALL_IN_PROCESS) and check the config against the model.

        Raises:
            UnsupportedError: onnxruntime is not installed.
            InvalidArgumentError: an unknown parameter, an unsafe or oversized model, a config that disagrees with
                the model (Triton's messages).
            InternalError: onnxruntime refused the model.
        """
        config = context.config
        runtime.onnxruntime()
        settings = session_options.parse(config)
        isolated_mode = isolated.is_isolated(config, context, self._options, BACKEND_NAME)
        names = instance_names(config, context.name, MAX_INSTANCES)
        model = await asyncio.to_thread(self._read, config, context.model_dir, context.version_dir, context.name)
        loaded: LoadedModel[_Instance]
        if isolated_mode:  # each worker creates its session and checks the config: onnxruntime never runs here
            plan = isolated.plan_json(config, context.version, settings)
            workers, release = await isolated.start_model(context, BACKEND_NAME, names, model.data, plan, self._options)
            loaded = LoadedModel(workers, self._models, release)
        else:
            sessions = [await asyncio.to_thread(runtime.create_session, model.data, settings, context.name)]
            run_plan = plan_runs(config, str(context.version), runtime.signature_of(sessions[0]), settings)
            for _ in names[1:]:  # one at a time: each holds the weights, and creation is CPU-bound
                sessions.append(await asyncio.to_thread(runtime.create_session, model.data, settings, context.name))
            batching = config.HasField("dynamic_batching")
            threads = [
                ThreadInstance(name, run_plan.model_name, "onnx", OnnxRunner(s, run_plan), batching)
                for (name, _), s in zip(names, sessions, strict=True)
            ]
            loaded = LoadedModel(threads, self._models)
        logger.info(
            "model '%s' version %d: %d onnxruntime session(s) over '%s'%s, %s",
            context.name,
            context.version,
            len(names),
            model.relative_path,
            f" with external data {', '.join(model.external_files)}" if model.external_files else "",
            "each in a worker process" if isolated_mode else "on threads of the server process",
        )
        return loaded

    async def stop(self) -> None:
        """Unload every model still loaded (server shutdown); idempotent."""
        await asyncio.gather(*(model.unload() for model in list(self._models)))


def _named(config: ModelConfig, name: str) -> ModelConfig:
    if config.name:
        return config
    named = ModelConfig()
    named.CopyFrom(config)
    named.name = name
    return named


def create(options: BackendOptions) -> OnnxBackend:
    """The registry's factory.

    Raises:
        UnsupportedError: onnxruntime or onnx is not installed (the message names the extra to install).
    """
    if not runtime.available():
        raise UnsupportedError(runtime.MISSING)
    return OnnxBackend(options)
