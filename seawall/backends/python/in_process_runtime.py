"""What in-process python models run on: Seawall's `triton_python_backend_utils` loaded in the server
(`pb_utils_module`) with its log, metric and model-directory sinks, which find the calling instance through the
thread-local `thread_model`; the worker thread each instance owns (`Worker`); and the cancellation flags that
`request.is_cancelled()` reads (`SinkCancels`, `Cancelled`).

Imports `in_process_calls`, `process_io` (log lines), `user_model`, `core.backend`, `core.custom_metrics` and `errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import TypeVar

from seawall.backends.python import in_process_calls
from seawall.backends.python.process_io import log_model_line
from seawall.backends.python.user_model import PB_DIR, PB_MODULE, describe
from seawall.core.backend import ResponseSink
from seawall.core.custom_metrics import MetricOp, MetricsOwner, kind_of
from seawall.errors import InternalError, SeawallError

_T = TypeVar("_T")


def pb_utils_module() -> ModuleType:
    """Seawall's `triton_python_backend_utils`, importable under that name by in-process models.

    Raises:
        InternalError: another module of that name is already imported in the server.
    """
    path = os.path.join(PB_DIR, PB_MODULE + ".py")
    existing = sys.modules.get(PB_MODULE)
    if existing is not None:
        if os.path.realpath(str(getattr(existing, "__file__", ""))) != os.path.realpath(path):
            raise InternalError(f"another '{PB_MODULE}' module is already imported in the server")
        return existing
    spec = importlib.util.spec_from_file_location(PB_MODULE, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module._set_log_sink(_log_sink)
    module._set_metrics_sink(_metrics_sink)
    module._set_model_dir(_model_dir)
    module._set_call_handler(in_process_calls.InProcessCalls(module))
    sys.modules[PB_MODULE] = module
    return module


#: the instance whose inline execute() runs on this thread now (worker threads are named after theirs)
thread_model = threading.local()


def _log_sink(level: int, text: str, file: str = "", line: int = 0) -> None:
    """pb_utils.Logger in the server: the model file and line, as from a stub."""
    name = getattr(thread_model, "name", None) or threading.current_thread().name
    log_model_line(name, level, text, file, line)


def _model_dir() -> str:
    """pb_utils.get_model_dir() of the instance whose code runs on this thread."""
    directory = getattr(thread_model, "model_dir", None)
    if directory is None:
        raise RuntimeError("get_model_dir() is available in initialize(), execute() and finalize()")
    return str(directory)


class OwnerSink:
    """pb_utils.MetricFamily's way to the server's registry for one in-process instance (any thread)."""

    def __init__(self, owner: MetricsOwner) -> None:
        self._owner = owner

    def family(self, family: int, name: str, description: str, kind: int) -> None:
        with _as_runtime_error():
            self._owner.create_family(family, name, description, kind_of(kind))

    def metric(self, metric: int, family: int, labels: dict[str, str], buckets: list[float] | None) -> None:
        with _as_runtime_error():
            self._owner.create_metric(metric, family, labels, buckets)

    def apply(self, metric: int, op: int, value: float) -> None:
        with _as_runtime_error():
            self._owner.apply(metric, MetricOp(op), value)

    def value(self, metric: int) -> float:
        with _as_runtime_error():
            return self._owner.value(metric)

    def delete(self, kind: int, id_: int) -> None:
        (self._owner.delete_family if kind == 0 else self._owner.delete_metric)(id_)


@contextlib.contextmanager
def _as_runtime_error() -> Iterator[None]:
    """The registry's errors as the stub's sink raises them (pb_utils adds Triton's prefixes)."""
    try:
        yield
    except SeawallError as error:
        raise RuntimeError(error.message) from None


def _metrics_sink() -> OwnerSink:
    """The sink of the instance whose code runs on this thread (its worker thread, or an inline execute()).

    Raises:
        RuntimeError: no model instance runs on this thread (a thread the model started itself).
    """
    sink = getattr(thread_model, "metrics", None)
    if sink is None:
        raise RuntimeError(
            "an in-process model creates its MetricFamily objects in initialize() or execute(), not in its own threads"
        )
    return sink  # type: ignore[no-any-return]  # thread-local attribute


class Worker:
    """One thread running jobs in order; results come back to the submitting event loop.

    Results finished while the loop has not yet picked up earlier ones ride on the same wake-up: under load
    one cross-thread wake-up settles several futures.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], asyncio.Future[object]] | None] = queue.SimpleQueue()
        self._runner = threading.Thread(target=self._run, name=name, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._done: list[tuple[asyncio.Future[object], object, BaseException | None]] = []  # under _lock

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._runner.start()

    def submit(self, job: Callable[[], _T]) -> asyncio.Future[_T]:
        assert self._loop is not None
        future: asyncio.Future[_T] = self._loop.create_future()
        self._jobs.put((job, future))  # type: ignore[arg-type]  # the future's type follows the job's
        return future

    def stop(self) -> None:
        """The thread ends after the jobs already submitted (it is a daemon: a stuck job cannot hold exit)."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, future = item
            try:
                result, error = job(), None
            except Exception as exc:  # handed to the awaiting coroutine, which decides
                result, error = None, exc
            except BaseException as ended:  # sys.exit() in model code must not reach the event loop
                result, error = None, RuntimeError(describe(ended))
            with self._lock:
                self._done.append((future, result, error))
                woken = len(self._done) > 1  # a wake-up is already on its way
            if woken:
                continue
            try:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._settle_done)
            except RuntimeError:
                return  # the loop is closed: nobody is waiting any more

    def _settle_done(self) -> None:
        """Event loop thread: settle every finished job's future (a cancelled caller's is already done)."""
        with self._lock:
            done, self._done = self._done, []
        for future, result, error in done:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


class SinkCancels:
    """`request.is_cancelled()` of a decoupled batch in process: whether the reader of its sink went away (a
    bool read from the model's thread)."""

    __slots__ = ("_sinks",)

    def __init__(self, sinks: Sequence[ResponseSink]) -> None:
        self._sinks = sinks

    def is_cancelled(self, seq: int, item: int) -> bool:
        return self._sinks[item].cancelled


class Cancelled:
    """`request.is_cancelled()` of a unary batch in process: the items of the batch `cancel` was called for."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: set[int] = set()

    def is_cancelled(self, seq: int, item: int) -> bool:
        return item in self.items
