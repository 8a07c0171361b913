"""What the backends' loaded models share: Triton's instance names, the loaded model version that owns its
instances (and leaves its backend's set of loaded models when it unloads), the instance that runs one batch
at a time on a thread of its own (the onnxruntime and pytorch runtimes release the GIL while they compute), and
the grouping of a batch's requests into runs that both runtimes' runners share.

Imports `core.backend`, `core.types`, `errors` and Triton's model_config_pb2.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Generic, Protocol, TypeVar

from seawall.core.backend import Execution, ModelConfig, queued_depth
from seawall.core.config_proto import model_config_pb2
from seawall.core.types import InferRequest, InferResponse
from seawall.errors import InternalError, InvalidArgumentError, SeawallError, UnavailableError, UnsupportedError


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


#: one batch for an instance's thread: the loop and future that await it, and its requests
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Execution]", list[InferRequest]]


class Runner(Protocol):
    """Runs one batch on the calling thread (one onnxruntime session, one TorchScript module)."""

    def execute(self, requests: Sequence[InferRequest]) -> Execution: ...


def run_grouped(
    results: list[InferResponse | SeawallError | None],
    keys: Sequence[Hashable | None],
    run: Callable[[list[int]], Iterable[InferResponse]],
) -> Execution:
    """Run the requests of a batch in groups of equal key, one `run` of a group's indices each, in order of
    their first request; a None key is a request already answered in `results` (its error). A SeawallError of a
    run answers its whole group.

    Returns every request's answer, and when the first run began and the last ended.
    """
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        if key is not None:
            groups.setdefault(key, []).append(index)
    began = ended = 0
    for members in groups.values():
        start = time.monotonic_ns()
        answers: list[InferResponse | SeawallError]
        try:
            answers = list(run(members))
        except SeawallError as error:
            answers = [error] * len(members)
        began, ended = began or start, time.monotonic_ns()
        for index, answer in zip(members, answers, strict=True):
            results[index] = answer
    done = [r if r is not None else InternalError("request was not run") for r in results]
    return Execution(done, compute_ns=(began, ended) if began else None)


class ThreadInstance:
    """A ModelInstance that runs one batch at a time of its `runner` on a thread of its own, in the order the
    batches came, and drops the runner (the runtime's session or module) once stopped. `batching`: the model has
    a dynamic batcher (fewer batches queued: `core.backend.BATCHING_PIPELINE_DEPTH`).

    The hop to the thread and back is a SimpleQueue and one call_soon_threadsafe, not `run_in_executor`: its
    executor locks, concurrent Future and chained callbacks cost about 17 µs more per batch (27 vs 10 µs per
    round trip of a no-op, median of 5 x 5000, uvloop), paid by every in-process inference.
    """

    def __init__(self, name: str, model_name: str, thread_prefix: str, runner: Runner, batching: bool) -> None:
        self._name = name
        self._depth = queued_depth(batching)
        self._runner: Runner | None = runner  # used on the thread; dropped by stop() once the thread ended
        self._model_name = model_name
        self._thread_name = f"{thread_prefix}-{name[:32]}"
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()  # the loop puts, the thread takes
        self._thread: threading.Thread | None = None  # started by the first batch; joined by stop()
        self._stopped = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def pipeline_depth(self) -> int:
        return self._depth

    def is_healthy(self) -> bool:
        return not self._stopped

    async def execute(self, requests: Sequence[InferRequest]) -> Execution:
        """Run the batch on the instance's thread (a cancelled caller leaves it running, as run_in_executor).

        Raises:
            UnavailableError: the instance was stopped.
        """
        if self._stopped:
            raise UnavailableError(f"model '{self._model_name}' instance '{self._name}' is stopped")
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._thread_name, daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Execution] = loop.create_future()
        self._jobs.put((loop, done, list(requests)))
        return await done

    async def stop(self) -> None:
        """Let the batches already queued finish, end the thread and release the runtime's objects; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join)
        self._runner = None

    def _serve(self) -> None:
        """The instance's thread: one batch at a time, each outcome handed back to the loop that awaits it."""
        while (job := self._jobs.get()) is not None:
            loop, done, requests = job
            failure: BaseException | None = None
            outcome: Execution | None = None
            try:
                assert self._runner is not None  # dropped only once stopped: no batch runs then
                outcome = self._runner.execute(requests)
            except BaseException as exc:  # the awaiting coroutine gets it, as from run_in_executor
                failure = exc
            try:
                loop.call_soon_threadsafe(_settle, done, outcome, failure)
            except RuntimeError:
                pass  # the loop is closed: nobody awaits this batch any more
            del job, done, outcome, failure  # drop the requests and tensors before waiting for the next batch


def _settle(done: asyncio.Future[Execution], outcome: Execution | None, failure: BaseException | None) -> None:
    """On the loop: the batch's outcome into its future, unless its caller was cancelled meanwhile."""
    if done.done():
        return
    if failure is not None:
        done.set_exception(failure)
    else:
        assert outcome is not None
        done.set_result(outcome)
