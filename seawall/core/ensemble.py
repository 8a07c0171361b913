"""Ensembles (`platform: "ensemble"`): models whose steps are other models, run by a scheduler of their own.

`EnsembleScheduler` runs a request's steps (compiled at load by `core/ensemble_plan.py`) as soon as their inputs
exist (independent steps concurrently), each through the composing model's own `infer` (its validation, scheduler,
batching and statistics), passing tensors between steps without copying them; an ensemble with a decoupled step
streams (`ensemble_flow`). Imports `core.backend`, `core.ensemble_flow`, `core.ensemble_plan`, `core.request_queue`,
`core.stats`, `core.types`, `errors`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Protocol

from seawall.core import ensemble_flow
from seawall.core.backend import ResponseSink
from seawall.core.ensemble_plan import EnsemblePlan, Step
from seawall.core.request_queue import drain
from seawall.core.stats import StatsRecorder
from seawall.core.types import InferRequest, InferResponse, StreamResponse, Tensor
from seawall.errors import SeawallError, UnavailableError


class Runner(Protocol):
    """A composing model, as a step runs it: `ServedModel.infer` (validation, scheduling, statistics)."""

    async def infer(self, request: InferRequest) -> InferResponse: ...

    def stream(self, request: InferRequest) -> AsyncGenerator[StreamResponse, None]: ...


#: resolve(model name, version "" = latest ready) → the composing model a step runs now
Resolve = Callable[[str, str], Runner]

#: distinct sets of requested outputs whose pruned step lists one ensemble keeps
_MAX_CACHED_PLANS = 64


class EnsembleScheduler:
    """Runs requests of one ensemble version: each request's steps start as soon as their input tensors exist.

    Statistics: the ensemble's own (one execution per request, its whole duration as compute_infer); each step
    is counted by its composing model's own scheduler. Event loop thread only.
    """

    def __init__(self, plan: EnsemblePlan, version: int, resolve: Resolve, stats: StatsRecorder) -> None:
        self._plan = plan
        self.decoupled = plan.decoupled  # answers by `submit_stream` only
        self._version = str(version)
        self._resolve = resolve
        self._stats = stats
        self._inflight = 0
        self._stopped = False
        self._pruned: dict[frozenset[str], tuple[Step, ...]] = {}
        self._chains: dict[frozenset[str] | None, tuple[Step, ...] | None] = {}  # by requested outputs

    def start(self) -> None:
        """Nothing runs between requests: an ensemble has no instances."""

    async def stop(self, drain_secs: float = 0.0) -> None:
        """Refuse new requests and let running ones finish for up to `drain_secs`; idempotent."""
        self._stopped = True
        await drain(lambda: self._inflight > 0, drain_secs)

    def inflight(self) -> int:
        return self._inflight

    async def enqueue(self, request: InferRequest, batch_size: int, timeout_ns: int = 0) -> InferResponse:
        """Run the steps of `request` and answer the ensemble outputs it asked for (all when none).

        Raises:
            UnavailableError: the ensemble is being unloaded.
            SeawallError: a step's error, its code kept, prefixed "in ensemble '<name>', " as Triton does.
        """
        if self._stopped:
            raise UnavailableError(f"model '{self._plan.name}' is not ready: it is being unloaded")
        start = time.monotonic_ns()
        self._inflight += 1
        try:
            outputs = await self._run(request)
        except SeawallError as error:
            self._stats.record_failure("BACKEND", time.monotonic_ns() - start)
            raise type(error)(f"in ensemble '{self._plan.name}', {error.message}") from None
        finally:
            self._inflight -= 1
        took = time.monotonic_ns() - start
        self._stats.record_success(request_ns=took, queue_ns=0, input_ns=0, infer_ns=took, output_ns=0)
        self._stats.record_execution(batch_size, infer_ns=took)
        return InferResponse(request.model_name, self._version, outputs, request.id)

    def submit_stream(self, request: InferRequest, batch_size: int, timeout_ns: int, sink: ResponseSink) -> None:
        """Start streaming the responses of `request` (a decoupled ensemble) into `sink`; closing the sink
        (the reader went away) cancels the request's steps. `timeout_ns` is bounded by the reader (see
        `ServedModel.stream`)."""
        if self._stopped:
            sink.fail(UnavailableError(f"model '{self._plan.name}' is not ready: it is being unloaded"))
            return
        ensemble_flow.start(self._stream(request, batch_size, sink), sink)

    async def _stream(self, request: InferRequest, batch_size: int, sink: ResponseSink) -> None:
        start = time.monotonic_ns()
        self._inflight += 1
        tensors: dict[str, Tensor] = {t.name: t for t in request.inputs}
        absent = self._plan.optional_inputs.difference(tensors)
        steps, outputs, _ = self._steps(request)
        try:
            messages = ensemble_flow.flow(
                steps,
                tensors,
                absent,
                outputs,
                request,
                lambda step, have: self._step(step, have, request),
                lambda step, have: self._resolve(step.model_name, step.model_version).stream(
                    ensemble_flow.step_request(step, have, request)
                ),
            )
            await ensemble_flow.feed(messages, sink, request, self._version)
        except SeawallError as error:
            self._stats.record_failure("BACKEND", time.monotonic_ns() - start)
            sink.fail(type(error)(f"in ensemble '{self._plan.name}', {error.message}"))
            return
        finally:
            self._inflight -= 1
        took = time.monotonic_ns() - start
        self._stats.record_success(request_ns=took, queue_ns=0, input_ns=0, infer_ns=took, output_ns=0)
        self._stats.record_execution(batch_size, infer_ns=took)

    def _steps(self, request: InferRequest) -> tuple[tuple[Step, ...], tuple[str, ...], frozenset[str] | None]:
        """The steps `request` needs, the outputs it gets, and the set of outputs it asked for (None: all)."""
        if not request.outputs:
            return self._plan.steps, self._plan.outputs, None
        wanted = frozenset(o.name for o in request.outputs)
        steps = self._pruned.get(wanted)
        if steps is None:
            steps = self._plan.steps_for(wanted)
            if len(self._pruned) < _MAX_CACHED_PLANS:
                self._pruned[wanted] = steps
        return steps, tuple(name for name in self._plan.outputs if name in wanted), wanted

    async def _run(self, request: InferRequest) -> list[Tensor]:
        tensors: dict[str, Tensor] = {t.name: t for t in request.inputs}
        optional = self._plan.optional_inputs
        absent = optional.difference(tensors) if optional else optional  # a step goes on without them
        steps, outputs, wanted = self._steps(request)
        run = lambda step, have: self._step(step, have, request)  # noqa: E731
        chain = None
        if not absent:  # every ensemble input given: the same chain (or none) for every such request
            chain = self._chains[wanted] if wanted in self._chains else ensemble_flow.chain_order(steps, tensors)
            if len(self._chains) < _MAX_CACHED_PLANS:
                self._chains[wanted] = chain
        if chain is not None:  # one step after the other: no need to look for ready steps
            waiting = await ensemble_flow.run_chain(chain, tensors, run)
        else:
            waiting = list(steps)
            await ensemble_flow.run_ready(waiting, tensors, absent, run)
        return ensemble_flow.outputs_of(waiting, tensors, outputs, request)

    def _step(self, step: Step, tensors: Mapping[str, Tensor], request: InferRequest) -> Awaitable[InferResponse]:
        """The composing model's `infer` of the step's request, to await (no coroutine of its own: each response
        of a step resumes every frame between the step's future and the ensemble request)."""
        runner = self._resolve(step.model_name, step.model_version)
        return runner.infer(ensemble_flow.step_request(step, tensors, request))


class EnsembleModel:
    """The `Model` of an ensemble version: no instances, nothing to finalize."""

    @property
    def instances(self) -> tuple[()]:
        return ()

    async def unload(self) -> None:
        return None
