"""The python backend: runs Triton-style `model.py` files, one stub process per model instance.

Imports `core.backend`, `core.types`, `errors`, `options` and this package. Model code runs in stub
processes (see `process.py`) unless its config opts into in-process execution with the parameter
SEAWALL_IN_PROCESS = "true" (see `in_process.py`); auto-completion runs in a stub, unless the model file
certainly defines no auto_complete_config (see `hook_scan.py`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import PurePath

from google.protobuf import json_format

from seawall.backends.loaded import LoadedModel, instance_names
from seawall.backends.python import hook_scan, in_process, in_process_runtime
from seawall.backends.python.instance import PythonModelInstance
from seawall.backends.python.instance_core import InstanceSpec, hidden_prefix, hide, within
from seawall.backends.python.messages import AutoCompleted, Init, InitFailed
from seawall.backends.python.process import StubDied, StubProcess, StubSettings
from seawall.backends.python.template import StubTemplate
from seawall.core.backend import ModelConfig, ModelLoadContext
from seawall.core.model_config import api_datatype, checksum_pins, config_to_dict
from seawall.errors import (
    InternalError,
    InvalidArgumentError,
    SeawallError,
)
from seawall.options import BackendOptions

logger = logging.getLogger(__name__)

BACKEND_NAME = "python"
#: Upper bound on stub processes of one model version (a config is not allowed to fork-bomb the host).
MAX_INSTANCES = 256
_SETTINGS = {"shm-default-byte-size": 1 << 20, "shm-growth-byte-size": 1 << 20, "stub-timeout-seconds": 30}


def stub_settings(lookup: Mapping[str, str]) -> StubSettings:
    """Parse the python backend's settings (missing ones take Triton's defaults).

    Raises:
        InvalidArgumentError: a setting is not a positive integer.
    """
    values: dict[str, int] = {}
    for key, default in _SETTINGS.items():
        raw = lookup.get(key, str(default))
        try:
            values[key] = int(raw)
        except ValueError:
            values[key] = 0
        if values[key] <= 0:
            raise InvalidArgumentError(f"backend setting '{key}' of backend 'python' must be a positive integer")
    return StubSettings(
        shm_default_bytes=values["shm-default-byte-size"],
        shm_growth_bytes=values["shm-growth-byte-size"],
        timeout_s=float(values["stub-timeout-seconds"]),
    )


def model_file_path(config: ModelConfig, version_dir: str, model_name: str) -> str:
    """The model file inside `version_dir`, refusing anything that would leave it.

    Raises:
        InvalidArgumentError: the file name is absolute, has '..', escapes through a symlink or is missing.
    """
    filename = config.default_model_filename or "model.py"
    root = os.path.realpath(version_dir)
    path = os.path.realpath(os.path.join(root, filename))
    parts = PurePath(filename).parts
    if os.path.isabs(filename) or ".." in parts or os.path.commonpath([root, path]) != root or path == root:
        raise InvalidArgumentError(
            f"model file '{filename}' of model '{model_name}' must be inside the model's version directory"
        )
    if not os.path.isfile(path):
        raise InvalidArgumentError(f"model file '{filename}' of model '{model_name}' not found")
    return path


def config_json(config: ModelConfig) -> str:
    """The configuration as Triton hands it to `initialize`: JSON with every field, as `/config` prints it."""
    return json.dumps(config_to_dict(config))


_Instance = PythonModelInstance | in_process.InProcessModelInstance
#: a loaded python model version: its instances, each with a stub process (or a worker thread, in process)
PythonModel = LoadedModel[_Instance]


class PythonBackend:
    """The Backend for `backend: "python"` models."""

    def __init__(self, options: BackendOptions | None = None) -> None:
        self._options = options or BackendOptions()
        self._models: set[PythonModel] = set()  # loaded and not yet unloaded; owned by the event loop
        self._template: StubTemplate | None = None  # forks the stubs (--python-stub-start=fork), made at first use

    @property
    def name(self) -> str:
        return BACKEND_NAME

    async def load(self, context: ModelLoadContext) -> PythonModel:
        """Start one stub per instance and run initialize(args) in each.

        Raises:
            InvalidArgumentError: bad settings or model file path, too many instances.
            UnsupportedError: GPU instances.
            InternalError: initialize raised in an instance (type and text of the exception).
            UnavailableError: a stub did not answer in stub-timeout-seconds.
        """
        config = context.config
        settings = self._confined(stub_settings(context.backend_settings))
        model_file = model_file_path(config, context.version_dir, context.name)
        pins = tuple(checksum_pins(config))  # checked again on the bytes the stub compiles
        mode = in_process.in_process_mode(config, context.name)
        if mode != "false":
            self._check_in_process_allowed(context)
        configured = {output.name: api_datatype(output.data_type) for output in config.output}
        # the implicit states of a sequence model are outputs too (its sequence batcher keeps them)
        configured.update({s.output_name: api_datatype(s.data_type) for s in config.sequence_batching.state})
        base_args = {
            "model_config": config_json(config),
            "model_instance_device_id": "0",
            "model_repository": context.model_dir,
            "model_version": str(context.version),
            "model_name": context.name,
        }
        specs = [
            InstanceSpec(
                model_name=context.name,
                model_version=str(context.version),
                instance_name=name,
                model_file=model_file,
                version_dir=context.version_dir,
                args={**base_args, "model_instance_kind": kind, "model_instance_name": name},
                output_types=configured,
                hidden_prefix=hidden_prefix(context.model_dir),
                dynamic_batching=config.HasField("dynamic_batching"),
                model_dir=context.model_dir,
                pins=pins,
                decoupled=bool(config.model_transaction_policy.decoupled),
            )
            for name, kind in instance_names(config, context.name, MAX_INSTANCES)
        ]
        instances: list[_Instance]
        if mode != "false" and self._options.model_user is not None:
            raise InvalidArgumentError(
                f"model '{context.name}' asks to run in the server process (parameter {in_process.PARAMETER}), "
                "but --model-user is set: model code runs only in stub processes, as that user"
            )
        if mode != "false":
            logger.warning(
                "model '%s' version %d runs in the server process (parameter %s): a crash in its code stops the "
                "server%s; it has no isolation at all (it reads the server's memory, keys and files as its user)",
                context.name,
                context.version,
                in_process.PARAMETER,
                "; execute() runs on the event loop, so a slow one delays every request" if mode == "inline" else "",
            )
            pb = in_process_runtime.pb_utils_module()
            instances = [
                in_process.InProcessModelInstance(
                    spec, settings, pb, mode == "inline", metrics=context.custom_metrics, calls=context.calls
                )
                for spec in specs
            ]
        else:
            instances = [
                PythonModelInstance(
                    spec, settings, context.report_unavailable, metrics=context.custom_metrics, calls=context.calls
                )
                for spec in specs
            ]
        results = await asyncio.gather(*(instance.start() for instance in instances), return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            await asyncio.gather(*(instance.stop() for instance in instances))
            raise _load_error(failures[0], context.name)
        return LoadedModel(instances, self._models)

    def _check_in_process_allowed(self, context: ModelLoadContext) -> None:
        """An in-process model needs the operator's consent twice: the flag, and the repository's own config.

        Raises:
            InvalidArgumentError: --allow-in-process-models=false, or the config came through the load API.
        """
        parameter = in_process.PARAMETER
        if not self._options.allow_in_process_models:
            raise InvalidArgumentError(
                f"parameter '{parameter}' of model '{context.name}' asks to run it in the server process, "
                "which --allow-in-process-models=false forbids"
            )
        if context.config_from_client:
            raise InvalidArgumentError(
                f"parameter '{parameter}' of model '{context.name}' can only be set by the model repository's own "
                "config.pbtxt, not by a 'config' sent with a load request"
            )

    async def auto_complete_config(self, config: ModelConfig, model_dir: str, version_dir: str) -> ModelConfig:
        """Run the model's static auto_complete_config in a throw-away stub and merge what it may set.

        Raises:
            InvalidArgumentError: bad model file path, or the completed config does not parse.
            InternalError: auto_complete_config raised or the stub died.
            UnavailableError: the stub did not answer in stub-timeout-seconds.
        """
        name = config.name or os.path.basename(model_dir)
        settings = stub_settings(
            {key: self._options.setting(BACKEND_NAME, key, str(default)) for key, default in _SETTINGS.items()}
        )
        model_file = model_file_path(config, version_dir, name)
        in_stubs = in_process.in_process_mode(config, name) == "false"
        if in_stubs and self._options.model_user is None and not _may_define_auto_complete(model_file):
            # no hook to run: the stub would only import the model and answer None (Triton starts it anyway). An
            # in-process model still gets it: the stub imports model.py in a fresh interpreter first, where the
            # server's own modules (another in-process model's helper of the same name) cannot answer its imports
            logger.debug("model '%s': its model file defines no auto_complete_config; no auto-complete stub", name)
            return merge_completed_config(config, None, name)
        stub = StubProcess(
            f"{name} (auto-complete)",
            self._confined(StubSettings(4096, 4096, settings.timeout_s)),
            None,
            names=(f"model={name}", "auto-complete"),
        )
        init = Init(
            "auto_complete", name, model_file, version_dir, model_dir, checksum_pins(config), {}, config_to_dict(config)
        )
        try:
            await stub.start()
            reply = await within(
                stub.call(init), settings.timeout_s, f"auto-complete of model '{name}' did not finish in time"
            )
        except StubDied as exc:
            raise InternalError(f"auto-complete of model '{name}' failed: the stub process stopped") from exc
        finally:
            await stub.stop(graceful=False)
        if type(reply) is not AutoCompleted:
            failed = reply if type(reply) is InitFailed else InitFailed("unknown error", "")
            logger.error("model '%s': auto_complete_config failed:\n%s", name, failed.trace)
            raise InternalError(
                f"auto-complete of model '{name}' failed: {hide(failed.error, hidden_prefix(model_dir))}"
            )
        return merge_completed_config(config, reply.config, name)

    def _confined(self, settings: StubSettings) -> StubSettings:
        """`settings` with the model user, the stubs' environment (--model-user, --model-env) and the stub template
        (None: each stub is a fresh interpreter, --python-stub-start=spawn)."""
        environment = self._options.model_environment
        if self._options.python_stub_start == "fork" and self._template is None:
            self._template = StubTemplate(environment, float(_SETTINGS["stub-timeout-seconds"]))
        return dataclasses.replace(
            settings, user=self._options.model_user, environment=environment, template=self._template
        )

    async def stop(self) -> None:
        """Unload every model still loaded (server shutdown); idempotent."""
        await asyncio.gather(*(model.unload() for model in list(self._models)))
        if self._template is not None:
            await self._template.stop()


def merge_completed_config(config: ModelConfig, completed: object, name: str) -> ModelConfig:
    """`config` with the fields auto-complete may set taken from `completed` (a JSON-like dict or None).

    Raises:
        InvalidArgumentError: `completed` is not a valid model configuration.
    """
    result = ModelConfig()
    result.CopyFrom(config)
    if completed is None:
        return result
    parsed = ModelConfig()
    try:
        if not isinstance(completed, dict):
            raise TypeError("not a dict")
        json_format.ParseDict(completed, parsed)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"auto-complete of model '{name}' produced an invalid configuration: {exc}") from exc
    result.max_batch_size = parsed.max_batch_size
    del result.input[:]
    result.input.extend(parsed.input)
    del result.output[:]
    result.output.extend(parsed.output)
    if parsed.HasField("dynamic_batching") and result.WhichOneof("scheduling_choice") is None:
        result.dynamic_batching.CopyFrom(parsed.dynamic_batching)
    if parsed.HasField("model_transaction_policy"):
        result.model_transaction_policy.CopyFrom(parsed.model_transaction_policy)
    return result


def _may_define_auto_complete(model_file: str) -> bool:
    """Whether the model file may define auto_complete_config (True when it cannot be read here: its stub
    reports why). Read by the server only without --model-user: with it, the stub reads as that user."""
    try:
        with open(model_file, "rb") as source:
            return hook_scan.may_define_auto_complete(source.read(hook_scan.MAX_SCAN_BYTES + 1))
    except OSError:
        return True


def _load_error(failure: BaseException, model_name: str) -> SeawallError:
    if isinstance(failure, SeawallError):
        return failure
    logger.error("model '%s': loading failed", model_name, exc_info=failure)
    return InternalError(f"failed to load model '{model_name}'")
