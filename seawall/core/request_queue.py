"""What waits in a scheduler's queue: a `Pending` request, and the `BatchPolicy` that says how requests are
batched and how long they may wait.

Imports `core.backend`, `core.types` and `errors`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from seawall.core.backend import ModelConfig, ModelInstance, ResponseSink
from seawall.core.types import InferRequest
from seawall.errors import SeawallError


@dataclass(slots=True)
class Pending:
    """One request from its enqueue until it is answered."""

    request: InferRequest
    batch_size: int
    future: asyncio.Future[Any]  # InferResponse; for a decoupled request None, once execute returned
    enqueued_ns: int
    deadline_ns: int  # 0: may wait forever
    sink: ResponseSink | None = None  # a decoupled request's responses
    instance: ModelInstance | None = None  # set once an instance runs it
    idle_only: bool = False  # a BLS call from this model's own executions: only an idle instance may take it


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How many requests one execution may take, and how long the oldest may wait for more."""

    max_batch_size: int = 0  # 0: one request per execution
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_ns: int = 0
    default_timeout_ns: int = 0  # queue policy: 0 = none
    allow_timeout_override: bool = False

    @classmethod
    def from_config(cls, config: ModelConfig) -> BatchPolicy:
        if not config.HasField("dynamic_batching"):
            return cls()
        batching = config.dynamic_batching
        queue = batching.default_queue_policy
        return cls(
            max_batch_size=max(config.max_batch_size, 0),
            preferred_batch_sizes=tuple(sorted(batching.preferred_batch_size)),
            max_queue_delay_ns=batching.max_queue_delay_microseconds * 1000,
            default_timeout_ns=queue.default_timeout_microseconds * 1000,
            allow_timeout_override=queue.allow_timeout_override,
        )

    def timeout_ns(self, requested_ns: int) -> int:
        """The queue timeout of a request: the policy's, which a request may shorten (or replace when
        the policy allows overrides)."""
        if not requested_ns:
            return self.default_timeout_ns
        if self.allow_timeout_override or not self.default_timeout_ns:
            return requested_ns
        return min(requested_ns, self.default_timeout_ns)


def fail(pending: Pending, error: SeawallError) -> None:
    """Answer a request that will not run with `error` (a decoupled one in its sink: its future is not awaited)."""
    if pending.sink is None:
        pending.future.set_exception(error)
    else:
        pending.sink.fail(error)
        pending.future.set_result(None)
