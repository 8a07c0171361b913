"""Decoupled composing models in an ensemble: which tensors stream, and how a request's responses flow.

`decoupled_label_check` gives each ensemble tensor the decoupled step it stems from (Triton's "decouple
label": the ensemble's inputs have none, a decoupled step's outputs a new one, any other step's outputs its
inputs' one) and refuses, with Triton 2.51's message, a step or the ensemble's outputs reading tensors of different
origins; an ensemble with a decoupled step is itself decoupled. `flow` runs a request of such an ensemble: each
response of a decoupled step feeds a copy of the request's tensors on which the later steps run, each set of
ensemble outputs so made is one response of the ensemble; the final flag of the decoupled step's stream goes
with the response it made (an empty final message stays an empty final message). Imports `core.config_proto`,
`core.types`, `errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from seawall.core.backend import ResponseSink
from seawall.core.config_proto import ModelConfig
from seawall.core.types import InferRequest, InferResponse, RequestedOutput, StreamResponse, Tensor
from seawall.errors import InvalidArgumentError

if TYPE_CHECKING:
    from seawall.core.ensemble_plan import Step


def decoupled_label_check(config: ModelConfig, composing: Mapping[tuple[str, int], ModelConfig]) -> bool:
    """Whether the ensemble `config` streams (one of its steps' models is decoupled).

    Raises: InvalidArgumentError (a step, or the ensemble's outputs, reading tensors of different decoupled
    origins), Triton's message.
    """
    name = config.name
    owner: dict[str, str] = {t.name: name for t in (*config.input, *config.output)}  # whom Triton names
    for step in config.ensemble_scheduling.step:
        for tensor in (*step.input_map.values(), *step.output_map.values()):
            owner.setdefault(tensor, step.model_name)
    label: dict[str, int] = {t.name: 0 for t in config.input}
    last = 0
    pending = list(config.ensemble_scheduling.step)
    while pending:
        ready = [s for s in pending if all(t in label for t in s.input_map.values())]
        if not ready:
            break  # check_config refused a data flow that never completes
        for step in ready:
            pending.remove(step)
            inputs = {label[t] for t in step.input_map.values()}
            if len(inputs) > 1:
                first = next(t for t in step.output_map.values())
                raise InvalidArgumentError(
                    f"in ensemble {name}, step of model '{owner[first]}' receives inputs originated from different "
                    "decoupled models"
                )
            model = composing[(step.model_name, step.model_version)]
            if model.model_transaction_policy.decoupled:
                last += 1
                out = last
            else:
                out = inputs.pop() if inputs else 0
            for tensor in step.output_map.values():
                label[tensor] = out
    if len({label.get(t.name, 0) for t in config.output}) > 1:
        raise InvalidArgumentError(
            f"in ensemble {name}, step of model '{name}' receives inputs originated from different decoupled models"
        )
    return last != 0


#: run one step (not decoupled) of the request on the given tensors
RunStep = Callable[["Step", Mapping[str, Tensor]], Awaitable[InferResponse]]
#: stream one decoupled step of the request on the given tensors
StreamStep = Callable[["Step", Mapping[str, Tensor]], AsyncGenerator[StreamResponse, None]]


async def flow(
    steps: Sequence[Step],
    tensors: dict[str, Tensor],
    absent: frozenset[str],
    outputs: Sequence[str],
    request: InferRequest,
    run: RunStep,
    stream: StreamStep,
) -> AsyncGenerator[tuple[list[Tensor] | None, bool], None]:
    """Yield (the ensemble outputs, or None for an empty final message; whether it is the last) for a request
    whose steps `steps` have not run yet on `tensors`.

    Raises: a step's SeawallError (as it is); InvalidArgumentError (no more step can run, an output is missing).
    """
    waiting = list(steps)
    await run_ready(waiting, tensors, absent, run)
    ready = [s for s in waiting if all(t in tensors or t in absent for _, t in s.inputs)]
    if ready:  # only decoupled steps are ready
        step = ready[0]  # a decoupled step: the later steps run once per response it sends
        waiting.remove(step)
        messages = stream(step, tensors)
        async with contextlib.aclosing(messages):
            async for message in messages:
                if message.error is not None:
                    raise message.error
                if message.response is None:
                    if message.final:
                        yield None, True
                    continue
                fork = dict(tensors)
                collect(step, message.response, fork)
                later = flow(waiting, fork, absent, outputs, request, run, stream)
                async with contextlib.aclosing(later):
                    async for produced, last in later:
                        yield produced, last and message.final
        return
    yield outputs_of(waiting, tensors, outputs, request), True


async def run_ready(waiting: list[Step], tensors: dict[str, Tensor], absent: frozenset[str], run: RunStep) -> None:
    """Run the steps of `waiting` that are not decoupled as soon as their inputs exist (independent ones
    concurrently), adding their outputs to `tensors`, until none is ready; the steps run leave `waiting`."""
    running: dict[asyncio.Future[InferResponse], Step] = {}
    try:
        while True:
            ready = [s for s in waiting if not s.decoupled and all(t in tensors or t in absent for _, t in s.inputs)]
            for step in ready:
                waiting.remove(step)
            if len(ready) == 1 and not running:  # a chain: no task needed
                collect(ready[0], await run(ready[0], tensors), tensors)
                continue
            for step in ready:
                running[asyncio.ensure_future(run(step, tensors))] = step
            if not running:
                return
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                collect(running.pop(task), task.result(), tensors)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)


def chain_order(steps: Sequence[Step], available: Iterable[str]) -> tuple[Step, ...] | None:
    """`steps` in the order they run when each can start only once the one before it ran (a chain, such as
    pre → model → post) given the tensors `available`; None when two could run at once, one streams, or the
    flow stops before the end (`run_ready` then runs them, and says why)."""
    have = set(available)
    left = list(steps)
    order = []
    while left:
        ready = [s for s in left if all(t in have for _, t in s.inputs)]
        if len(ready) != 1 or ready[0].decoupled:
            return None
        left.remove(ready[0])
        order.append(ready[0])
        have.update(t for _, t in ready[0].outputs)
    return tuple(order)


async def run_chain(chain: Sequence[Step], tensors: dict[str, Tensor], run: RunStep) -> list[Step]:
    """Run the steps of a chain (`chain_order`) one after the other, adding their outputs to `tensors`; the
    steps left when one lacks an input (a model did not produce a mapped output), as `run_ready` leaves them."""
    for index, step in enumerate(chain):
        if any(t not in tensors for _, t in step.inputs):
            return list(chain[index:])
        collect(step, await run(step, tensors), tensors)
    return []


def outputs_of(
    waiting: list[Step], tensors: Mapping[str, Tensor], outputs: Sequence[str], request: InferRequest
) -> list[Tensor]:
    """The ensemble outputs `outputs` once no more step can run.

    Raises: InvalidArgumentError (Triton's "unexpected deadlock": a step never ran, or an output is missing).
    """
    if waiting or any(name not in tensors for name in outputs):
        raise InvalidArgumentError(
            f"[request id: {request.id or '<id_unknown>'}] unexpected deadlock, at least one output is not "
            "set while no more ensemble steps can be made"
        )
    return [tensors[name] for name in outputs]


def start(feeding: Coroutine[Any, Any, None], sink: ResponseSink) -> None:
    """Run `feeding` (what fills `sink`) as a task of its own, cancelled if the sink's reader goes away."""
    task = asyncio.ensure_future(feeding)

    def cancel() -> None:
        task.cancel()

    sink.on_cancel(cancel)


async def feed(
    messages: AsyncGenerator[tuple[list[Tensor] | None, bool], None],
    sink: ResponseSink,
    request: InferRequest,
    version: str,
) -> None:
    """Put the ensemble responses of `messages` (see `flow`) into `sink`, waiting for its reader when it is full;
    end the stream with an empty final message if `messages` ends without a final one.

    Raises: as `flow`.
    """
    async with contextlib.aclosing(messages):
        async for produced, last in messages:
            response = None if produced is None else InferResponse(request.model_name, version, produced, request.id)
            sink.put(response, None, last)
            if sink.is_full:
                drained: asyncio.Future[None] = asyncio.get_running_loop().create_future()

                def wake(drained: asyncio.Future[None] = drained) -> None:
                    if not drained.done():
                        drained.set_result(None)

                sink.when_drained(wake)
                await drained
    if not sink.final:
        sink.put(None, None, True)


def step_request(step: Step, tensors: Mapping[str, Tensor], request: InferRequest) -> InferRequest:
    """The request a step's model gets: its inputs are the ensemble's tensors (the same arrays), renamed."""
    inputs = []
    for model_input, name in step.inputs:
        tensor = tensors.get(name)
        if tensor is not None:  # None: an optional ensemble input the request left out
            inputs.append(Tensor(model_input, tensor.datatype, tensor.shape, tensor.data))
    return InferRequest(
        step.model_name,
        inputs,
        step.model_version,
        request.id,
        [RequestedOutput(model_output) for model_output, _ in step.outputs],
        request.parameters,
    )


def collect(step: Step, response: InferResponse, tensors: dict[str, Tensor]) -> None:
    """Put a step's outputs into the request's tensors under their ensemble names (the arrays are not copied)."""
    produced = {t.name: t for t in response.outputs}
    for model_output, name in step.outputs:
        tensor = produced.get(model_output)
        if tensor is not None:
            tensors[name] = Tensor(name, tensor.datatype, tensor.shape, tensor.data)
