"""A user's `model.py` run the way Triton's python backend runs it: loading, hooks, requests and responses.

Shared by the stub process and in-process instances, so it stays light: imports numpy and the
`triton_python_backend_utils` module it is given (never the server). Model objects are untyped by nature.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from seawall.backends.python.model_source import ModelSource, RepositoryCodeError, RepositoryFinder

#: Where Seawall's `triton_python_backend_utils.py` lives: beside this package's sources (found through the
#: package, since this module's own file may be a compiled one elsewhere: seawall/native.py).
PB_DIR = os.path.join(os.path.dirname(str(importlib.import_module("seawall.backends.python").__file__)), "pb_utils")
PB_MODULE = "triton_python_backend_utils"

# User model objects and pb_utils values are untyped by nature (the module is loaded at run time).
UserObject = Any
#: One output as it leaves the model: (name, datatype, array).
Output = tuple[str, str, np.ndarray]


class BatchError(Exception):
    """Every request of the batch fails with this text (already formatted, no traceback)."""


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def load_model_class(model_file: str, module_name: str, source: ModelSource) -> UserObject:
    """Execute the model file as module `module_name` and return its TritonPythonModel class.

    The file's bytes are read once, checked against the model's pins and compiled here: bytecode beside the
    source (`__pycache__`, a `.pyc`) is never consulted.

    Raises:
        Exception: whatever importing the user's file raises; AttributeError when the class is missing;
            RepositoryCodeError when the file is unpinned or does not match its pin.
    """
    spec = source.spec(module_name, model_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        assert spec.loader is not None
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    model_class = getattr(module, "TritonPythonModel", None)
    if model_class is None:
        raise AttributeError("the model file defines no class 'TritonPythonModel'")
    return model_class


def load_from_repository(
    model_file: str, module_name: str, version_dir: str, finder: RepositoryFinder, keep_version_dir: bool
) -> UserObject:
    """Install `finder` (code of the model directory only, verified against its pins) and load the model file
    through it, as module `module_name`; returns its TritonPythonModel class.

    The modules of the version directory import by name while it loads (Python's path finder never sees that
    directory), and afterwards too if `keep_version_dir` (a stub process serves one model; in the
    server, sys.meta_path is shared). The caller removes `finder` when the model goes.

    Raises:
        Exception: as load_model_class.
    """
    source = finder.source
    source.top_level.append(version_dir)
    finder.install()
    try:
        return load_model_class(model_file, module_name, source)
    finally:
        if not keep_version_dir:
            source.top_level.clear()


def refuse_shadowing(version_dir: str, model_file: str) -> None:
    """Refuse, before an in-process model loads, a module of its version directory whose name the server process
    has already imported from elsewhere with other source (another in-process model's module, or one of the
    server's own): Python would hand the model that module instead of its own, as every in-process model shares
    one `sys.modules`. A byte-identical copy (the same helper shipped with several models) is shared.

    Raises:
        RepositoryCodeError: naming the module.
    """
    home, model_real = os.path.realpath(version_dir), os.path.realpath(model_file)
    for entry in sorted(os.listdir(version_dir)):
        path = os.path.join(version_dir, entry)
        if entry.endswith(".py") and os.path.isfile(path) and os.path.realpath(path) != model_real:
            name = entry[: -len(".py")]
        elif os.path.isfile(os.path.join(path, "__init__.py")):
            name = entry
        else:
            continue
        loaded = sys.modules.get(name)
        file = getattr(loaded, "__file__", None)
        if loaded is not None and not _within(file, home) and not _same_source(file, path):
            raise RepositoryCodeError(
                f"module '{name}' of the model directory has the name of a module the server process has already "
                "imported (another in-process model's, or the server's own): in-process models share one set of "
                "modules; rename it, or run the model in a stub"
            )


def drop_modules(version_dir: str) -> None:
    """Forget the modules an in-process model imported from its version directory (at unload: a later load, of
    this model or another, imports its own)."""
    home = os.path.realpath(version_dir)
    for name, module in list(sys.modules.items()):
        if _within(getattr(module, "__file__", None), home):
            sys.modules.pop(name, None)


def _same_source(file: object, path: str) -> bool:
    """Whether the loaded module `file` has the bytes of the model directory's `path` (a copied helper: sharing it
    changes nothing the model can see but module state)."""
    if not isinstance(file, str):
        return False
    if os.path.isdir(path):
        path = os.path.join(path, "__init__.py")
    try:
        with open(file, "rb") as loaded, open(path, "rb") as ours:
            return loaded.read(1 << 20) == ours.read(1 << 20)
    except OSError:
        return False


def _within(file: object, home: str) -> bool:
    return isinstance(file, str) and os.path.realpath(file).startswith(home + os.sep)


class UserModel:
    """One TritonPythonModel object. Not thread-safe: its owner calls it from one thread."""

    def __init__(self, pb: ModuleType, model_class: UserObject, model_name: str) -> None:
        self.pb = pb
        self.model_name = model_name
        self._model = model_class()
        self._loop: UserObject = None  # an asyncio loop, made only for `async def` hooks
        self._loop_thread: threading.Thread | None = None  # runs `_loop` for ever (decoupled async models)
        self._background: set[UserObject] = set()  # futures of execute() coroutines run in the background
        #: where the error of an execute() run in the background goes (its owner logs it)
        self.log_error: Callable[[str], object] = lambda text: sys.stderr.write(text + "\n")
        self._request_class = pb.InferenceRequest
        self._response_class = pb.InferenceResponse
        self._tensor_class = pb.Tensor

    def run(self, result: UserObject) -> UserObject:
        """Run a coroutine returned by an `async def` hook on this model's own event loop."""
        if result is None or type(result) is list:
            return result  # the usual answers of initialize and execute: no awaitable check
        if inspect.isawaitable(result):
            if self._loop_thread is not None:
                import asyncio

                return asyncio.run_coroutine_threadsafe(result, self._loop).result()  # type: ignore[arg-type]
            return self.event_loop().run_until_complete(result)
        return result

    def start_background_loop(self, setup: Callable[[], None] = lambda: None) -> None:
        """Run this model's event loop for ever on a thread of its own (`setup` runs there first): a decoupled
        model's `async def execute` then runs in the background, as in Triton, and its other `async def` hooks
        run on that loop too."""
        import asyncio

        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            setup()
            asyncio.set_event_loop(loop)
            loop.run_forever()

        self._loop_thread = threading.Thread(target=run, name=f"{self.model_name}-asyncio", daemon=True)
        self._loop_thread.start()

    def _background_done(self, future: UserObject) -> None:
        """An execute() run in the background ended (loop thread): its exception is logged, as Triton does."""
        self._background.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            text = "".join(traceback.TracebackException.from_exception(exc).format())
            self.log_error(f"execute() of decoupled model '{self.model_name}' raised in the background: {text}")

    def event_loop(self) -> UserObject:
        """This model's own asyncio event loop (made on first use)."""
        if self._loop is None:
            import asyncio  # only models with `async def` hooks pay for it

            self._loop = asyncio.new_event_loop()
        return self._loop

    @property
    def is_async(self) -> bool:
        """The model's execute is `async def`: its batches may run concurrently on its event loop."""
        return inspect.iscoroutinefunction(getattr(self._model, "execute", None))

    async def execute_async(self, requests: list[UserObject]) -> Sequence[UserObject]:
        """`await execute(requests)` on the model's event loop, checked as `execute`.

        Raises: as `execute`.
        """
        return self._checked(await self._model.execute(requests), requests)

    @property
    def checks_readiness(self) -> bool:
        """The model defines `is_ready()` (Triton then asks it at every model-readiness check)."""
        return hasattr(self._model, "is_ready")

    def is_ready(self) -> tuple[bool, str]:
        """Run the model's `is_ready()` (any thread: beside execute, as Triton runs it); (ready, why it failed).
        An `async def is_ready` runs on the model's running event loop, else on a loop of its own."""
        try:
            result = self._model.is_ready()
            if inspect.iscoroutine(result):
                import asyncio

                loop = self._loop
                if loop is not None and loop.is_running():
                    result = asyncio.run_coroutine_threadsafe(result, loop).result()
                else:
                    result = asyncio.run(result)
            if type(result) is not bool:
                return False, "is_ready() must return a boolean value"
            return result, ""
        except Exception as exc:
            return False, describe(exc)

    def initialize(self, args: dict[str, str]) -> None:
        if hasattr(self._model, "initialize"):
            self.run(self._model.initialize(args))

    def finalize(self) -> None:
        if hasattr(self._model, "finalize"):
            self.run(self._model.finalize())
        if self._loop_thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(5)
            self._loop_thread = None
            if self._loop.is_running():
                return  # a coroutine blocks it: the daemon thread goes with the process
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def request(
        self,
        inputs: Sequence[Output],
        requested: list[str],
        request_id: str,
        correlation_id: object,
        flags: int,
        parameters: dict[str, object],
    ) -> UserObject:
        """A pb_utils.InferenceRequest over `inputs` (the arrays are used as they are, never copied)."""
        tensor = self._tensor_class
        return self._request_class(
            model_name=self.model_name,
            inputs=[tensor(name, array, datatype) for name, datatype, array in inputs],
            requested_output_names=requested,
            request_id=request_id,
            correlation_id=correlation_id,
            flags=flags,
            parameters=parameters,
        )

    def execute(self, requests: list[UserObject]) -> Sequence[UserObject]:
        """Run execute(requests) and check it returned one response per request.

        Raises:
            BatchError: the return value is not a list of the right length.
            Exception: whatever the model raised.
        """
        return self._checked(self.run(self._model.execute(requests)), requests)

    def _checked(self, responses: UserObject, requests: list[UserObject]) -> Sequence[UserObject]:
        if not isinstance(responses, list | tuple):
            raise BatchError(
                f"Expected a list in the execute return, got {type(responses).__name__}"
                if responses is not None
                else "execute() returned None; a model that is not decoupled must return a list of responses"
            )
        if len(responses) != len(requests):
            raise BatchError(
                "Number of InferenceResponse objects do not match the number of requests. "
                f"InferenceRequest(s) size is {len(requests)}, "
                f"and InferenceResponse(s) size is {len(responses)}"
            )
        return responses

    def execute_decoupled(self, requests: list[UserObject]) -> None:
        """Run execute(requests) of a decoupled model, whose responses go through the requests' senders; an
        `async def execute` runs in the background once `start_background_loop` was called (this returns at once).

        Raises:
            BatchError: execute returned something else than None (as Triton's stub refuses it).
            Exception: whatever the model raised.
        """
        result = self._model.execute(requests)
        if self._loop_thread is not None and inspect.iscoroutine(result):
            import asyncio

            future = asyncio.run_coroutine_threadsafe(result, self._loop)  # not awaited: Triton does not either
            self._background.add(future)
            future.add_done_callback(self._background_done)
            return
        if self.run(result) is not None:
            raise BatchError(
                f"Python model '{self.model_name}' is using the decoupled mode and the execute function must return "
                "None."
            )

    def sent_outputs(self, wanted: list[str], response: UserObject) -> tuple[int, str] | list[Output]:
        """`outputs` of a response a decoupled model sends (`wanted`: the request's requested output names)."""
        error = response.error()
        if error is not None:
            return error.code(), error.message()
        raw = self.pb._raw
        return [(t.name(), *raw(t)) for t in response.output_tensors() if not wanted or t.name() in wanted]

    def outputs(self, request: UserObject, response: UserObject) -> tuple[int, str] | list[Output]:
        """A response's error as (TritonError code, message), or its requested outputs.

        Raises:
            BatchError: the response is not a pb_utils.InferenceResponse.
            pb_utils.TritonModelException: an output is not a pb_utils.Tensor.
        """
        if not isinstance(response, self._response_class):
            raise BatchError(f"Expected an InferenceResponse, got {type(response).__name__}")
        error = response.error()
        if error is not None:
            return error.code(), error.message()
        wanted = request.requested_output_names()
        raw = self.pb._raw
        found: list[Output] = []
        for tensor in response.output_tensors():
            name = tensor.name()
            if wanted and name not in wanted:
                continue  # not requested: never copied out of the model
            datatype, array = raw(tensor)
            found.append((name, datatype, array))
        return found
