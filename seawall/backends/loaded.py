"""What the backends' loaded models share: Triton's instance names, the loaded model version that owns its
instances (and leaves its backend's set of loaded models when it unloads), and the instance that runs one batch
at a time on a thread of its own (the onnxruntime and pytorch runtimes release the GIL while they compute).

Imports `core.backend`, `core.types`, `errors` and Triton's model_config_pb2.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

from seawall.core.backend import Execution, ModelConfig
from seawall.core.config_proto import model_config_pb2
from seawall.core.types import InferRequest
from seawall.errors import InvalidArgumentError, UnavailableError, UnsupportedError


def instance_names(config: ModelConfig, model_name: str, max_instances: int) -> list[tuple[str, str]]:
    """Triton's instance names and kinds (`model_instance_kind`: CPU or MODEL): `<group name>_<i>`, a group
    without a name being `<model>_<group index>`.

    Raises:
        UnsupportedError: a group asks for GPUs.
        InvalidArgumentError: more than `max_instances` instances.
    """
    if not config.instance_group:
        return [(f"{model_name}_0", "CPU")]
    names: list[tuple[str, str]] = []
    for index, group in enumerate(config.instance_group):
        if group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU:
            raise UnsupportedError(f"instance group kind KIND_GPU of model '{model_name}' is not supported")
        base = group.name or f"{model_name}_{index}"
        count = group.count if group.count > 0 else 1
        if len(names) + count > max_instances:
            raise InvalidArgumentError(f"model '{model_name}' asks for more than {max_instances} instances")
        kind = "MODEL" if group.kind == model_config_pb2.ModelInstanceGroup.KIND_MODEL else "CPU"
        names.extend((f"{base}_{i}", kind) for i in range(count))
    return names


class _Stoppable(Protocol):
    async def stop(self) -> None: ...


_I = TypeVar("_I", bound=_Stoppable)


class LoadedModel(Generic[_I]):
    """A loaded model version: its instances; `unload` stops them all (each finishes its running work), then calls
    `release`, and takes the model out of `loaded`, its backend's set of models to stop at shutdown. Idempotent."""

    def __init__(
        self, instances: Sequence[_I], loaded: set[LoadedModel[_I]], release: Callable[[], None] | None = None
    ) -> None:
        self._instances = tuple(instances)
        self._loaded = loaded
        self._release = release  # what the instances shared (a worker model's region), dropped once all stopped
        self._unloaded = False
        loaded.add(self)

    @property
    def instances(self) -> tuple[_I, ...]:
        return self._instances

    async def unload(self) -> None:
        if self._unloaded:
            return
        self._unloaded = True
        self._loaded.discard(self)
        await asyncio.gather(*(instance.stop() for instance in self._instances))
        if self._release is not None:
            self._release()


class ThreadInstance:
    """A ModelInstance that runs one batch at a time on a thread of its own: subclasses give `_execute` (on the
    thread) and `_release` (drop the runtime's objects once stopped)."""

    def __init__(self, name: str, model_name: str, thread_prefix: str) -> None:
        self._name = name
        self._model_name = model_name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{thread_prefix}-{name[:32]}")
        self._stopped = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def pipeline_depth(self) -> int:
        return 1

    def is_healthy(self) -> bool:
        return not self._stopped

    async def execute(self, requests: Sequence[InferRequest]) -> Execution:
        """Run the batch on the instance's thread.

        Raises:
            UnavailableError: the instance was stopped.
        """
        if self._stopped:
            raise UnavailableError(f"model '{self._model_name}' instance '{self._name}' is stopped")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._execute, list(requests))

    async def stop(self) -> None:
        """Let a running batch finish, end the thread and release the runtime's objects; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await asyncio.to_thread(self._executor.shutdown, True)
        self._release()

    def _execute(self, requests: list[InferRequest]) -> Execution:
        raise NotImplementedError

    def _release(self) -> None:
        """Drop what the instance holds of its runtime (a session, a module)."""
