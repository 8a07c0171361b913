"""Isolation of the onnxruntime and pytorch backends: each instance of a model runs in a worker process, a stub of
the python backend that serves one of Seawall's own backends instead of a model.py (`backends/worker_model.py`).

Imports the python backend's instance machinery (start-up within the stub timeout, the crash budget and restarts,
shared-memory tensors, cancellation, statistics, `ps` names), its `ipc` and `in_process` (the opt-out parameter),
`core.backend`, `options` and `errors`. The server keeps the model's intake (bounds, pins, external data) and its
config checks; a worker only ever gets the checked bytes, in a sealed shared region, and a plan computed here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from seawall.backends.python import ipc
from seawall.backends.python.in_process import PARAMETER
from seawall.backends.python.instance import PythonModelInstance
from seawall.backends.python.instance_core import InstanceSpec, hidden_prefix, within
from seawall.backends.python.messages import DESCRIBE_MODE, AutoCompleted, Init, InitFailed
from seawall.backends.python.process import StubDied, StubProcess, StubSettings
from seawall.core.backend import ModelConfig, ModelLoadContext
from seawall.core.model_config import api_datatype
from seawall.errors import InternalError, InvalidArgumentError, SeawallError, UnsupportedError
from seawall.options import BackendOptions

logger = logging.getLogger(__name__)

#: How long a worker may take to start (import its runtime, create its session or module) and to finalize: an
#: onnxruntime or torch import alone takes seconds of CPU, many at once on a busy machine far longer, and Triton,
#: whose runtimes load in process, has no such limit to match (the python backend's stub timeout is 30 s).
WORKER_TIMEOUT_S = 120.0


def is_isolated(config: ModelConfig, context: ModelLoadContext | None, options: BackendOptions, backend: str) -> bool:
    """Whether the model runs in worker processes (the default) rather than on threads of the server: its config's
    SEAWALL_IN_PROCESS "true" opts out, allowed by --allow-in-process-models and only from the repository's own
    config.pbtxt (`context` None: auto-complete, which only reads the value).

    Raises:
        InvalidArgumentError: another value, or an opt-out that is not allowed.
    """
    name = context.name if context is not None else config.name
    if PARAMETER not in config.parameters:
        return True
    value = str(config.parameters[PARAMETER].string_value).strip().lower()
    if value not in ("true", "false"):
        raise InvalidArgumentError(
            f"parameter '{PARAMETER}' of model '{name}' must be \"true\" or \"false\" for the {backend} backend"
        )
    if value == "false":
        return True
    if context is None:
        return False
    if not options.allow_in_process_models:
        raise InvalidArgumentError(
            f"parameter '{PARAMETER}' of model '{name}' asks to run it in the server process, which "
            "--allow-in-process-models=false forbids"
        )
    if context.config_from_client:
        raise InvalidArgumentError(
            f"parameter '{PARAMETER}' of model '{name}' can only be set by the model repository's own config.pbtxt, "
            "not by a 'config' sent with a load request"
        )
    if options.model_user is not None:
        raise InvalidArgumentError(
            f"model '{name}' asks to run in the server process (parameter {PARAMETER}), but --model-user is set: "
            "models run only in worker processes, as that user"
        )
    logger.warning(
        "model '%s' version %d runs in the server process (parameter %s): a crash of %s stops the server",
        name,
        context.version,
        PARAMETER,
        backend,
    )
    return False


#: The load errors a worker's initialize may raise (runtime refusals, config checks): they fail the load as they
#: would in process, not as "Failed to initialize model instance". Worker code is Seawall's: only it names these.
_LOAD_ERRORS: dict[str, type[SeawallError]] = {
    cls.__name__: cls for cls in (InvalidArgumentError, InternalError, UnsupportedError)
}


@dataclass(frozen=True, slots=True)
class WorkerSpec(InstanceSpec):
    """An instance spec whose start-up failures keep the error the backend raised in the worker."""

    def initialize_failed(self, error: str, trace: str) -> SeawallError:
        refusal = _refusal(error, self.hide)
        if refusal is None:
            return InstanceSpec.initialize_failed(self, error, trace)
        return refusal  # the load reports any SeawallError


def _refusal(error: str, hide: Callable[[str], str]) -> SeawallError | None:
    """The load error a worker's "<class>: <message>" names, when it is one of _LOAD_ERRORS."""
    kind, _, message = error.partition(": ")
    refusal = _LOAD_ERRORS.get(kind)
    return None if refusal is None or not message else refusal(hide(message))


class ModelRegion:
    """A model's checked bytes in a sealed memfd: every worker (and every restart) maps the same pages."""

    def __init__(self, data: bytes) -> None:
        self.size = len(data)
        self._fd: int | None = ipc.sealed_region([0], [data], self.size)

    def new_fd(self) -> int:
        """A new descriptor of the region, for one worker (it is closed once passed)."""
        assert self._fd is not None
        return os.dup(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def plan_json(config: ModelConfig, model_version: int, settings: object) -> str:
    """What a worker needs beyond the model bytes: the config and the backend's parsed settings (a slotted class
    the worker rebuilds with `Settings(**plan["settings"])`)."""
    fields = {field: getattr(settings, field) for field in type(settings).__slots__}  # type: ignore[attr-defined]
    return json.dumps(
        {
            "config": base64.b64encode(config.SerializeToString()).decode("ascii"),
            "model_version": str(model_version),
            "settings": fields,
        }
    )


async def describe(
    name: str, model_dir: str, worker: str, data: bytes, plan: str, options: BackendOptions, timeout_s: float
) -> object:
    """What a throw-away worker process says about the model in `data` (auto-complete: the runtime parses a model
    only in a worker, never in the server). The answer is untrusted JSON-like data: the backend checks it.

    Raises:
        InternalError: the worker died (a crash of the runtime while parsing) or the runtime refused the model.
        InvalidArgumentError / UnsupportedError: the backend's own refusals, raised in the worker.
        UnavailableError: no answer within `timeout_s` (the worker is killed).
    """
    region = ModelRegion(data)
    settings = StubSettings(4096, 4096, timeout_s, user=options.model_user, environment=options.model_environment)
    stub = StubProcess(f"{name} (auto-complete)", settings, None, names=(f"model={name}", "auto-complete"))
    args = {"seawall_worker": worker, "model_bytes": str(region.size), "seawall_plan": plan}
    init = Init(DESCRIBE_MODE, name, "", model_dir, model_dir, [], args, None)
    late = f"auto-complete of model '{name}' did not finish within {timeout_s:g} s: its {worker} worker was stopped"
    try:
        await stub.start()
        stub.regions.pass_call_region(region.new_fd(), b"m")
        reply = await within(stub.call(init), timeout_s, late)
    except StubDied as exc:
        logger.error("model '%s': the %s worker describing it for auto-complete died: %s", name, worker, exc)
        raise InternalError(
            f"auto-complete of model '{name}' failed: its {worker} worker process stopped while reading the model"
        ) from None
    finally:
        await stub.stop(graceful=False)
        region.close()
    if type(reply) is AutoCompleted:
        return reply.config
    failed = reply if type(reply) is InitFailed else InitFailed("unknown error", "")
    logger.error("model '%s': the %s worker describing it for auto-complete failed:\n%s", name, worker, failed.trace)
    prefix = hidden_prefix(model_dir)
    refusal = _refusal(failed.error, lambda text: text.replace(prefix, ""))
    raise refusal or InternalError(f"auto-complete of model '{name}' failed: {failed.error.replace(prefix, '')}")


async def start_model(
    context: ModelLoadContext,
    worker: str,
    names: Sequence[tuple[str, str]],
    data: bytes,
    plan: str,
    options: BackendOptions,
) -> tuple[list[PythonModelInstance], Callable[[], None]]:
    """The workers of one model version over its checked bytes `data` (one sealed region they all map), and what
    releases that region once they have all stopped. Raises as `start_workers`."""
    region = ModelRegion(data)
    try:
        return await start_workers(context, worker, names, region, plan, options), region.close
    except BaseException:
        region.close()
        raise


async def start_workers(
    context: ModelLoadContext,
    worker: str,
    names: Sequence[tuple[str, str]],
    region: ModelRegion,
    plan: str,
    options: BackendOptions,
) -> list[PythonModelInstance]:
    """One started worker process per instance (`names`: name and kind), serving the model in `region` with
    `plan` (the backend's JSON run plan).

    Raises:
        InternalError: a worker could not create its session or module, or died while starting.
        UnavailableError: a worker did not start within the stub timeout.
    """
    config = context.config
    outputs = {}
    for output in config.output:
        outputs[output.name] = api_datatype(output.data_type)
    settings = StubSettings(timeout_s=WORKER_TIMEOUT_S, user=options.model_user, environment=options.model_environment)
    base = {
        "model_name": context.name,
        "model_version": str(context.version),
        "model_repository": context.model_dir,
        "model_instance_device_id": "0",
        "model_bytes": str(region.size),
        "seawall_plan": plan,
    }
    instances = [
        PythonModelInstance(
            WorkerSpec(
                model_name=context.name,
                model_version=str(context.version),
                instance_name=name,
                model_file="",
                version_dir=context.version_dir,
                args={**base, "model_instance_name": name, "model_instance_kind": kind},
                output_types=outputs,
                hidden_prefix=hidden_prefix(context.model_dir),
                dynamic_batching=config.HasField("dynamic_batching"),
                model_dir=context.model_dir,
                worker=worker,
                model_region=region.new_fd,
            ),
            settings,
            context.report_unavailable,
        )
        for name, kind in names
    ]
    results = await asyncio.gather(*(instance.start() for instance in instances), return_exceptions=True)
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        await asyncio.gather(*(instance.stop() for instance in instances))
        raise failures[0]
    return instances
