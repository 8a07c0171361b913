"""What waits in a scheduler's queue: a `Pending` request, the `BatchPolicy` that says how requests are batched
and how long they may wait (priority levels and their `QueuePolicy`), and the `PriorityQueue` of a model with levels.

Imports `core.backend`, `core.config_proto`, `core.types` and `errors`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seawall.core.backend import ModelConfig, ModelInstance, ResponseSink
from seawall.core.config_proto import model_config_pb2
from seawall.core.types import InferRequest
from seawall.errors import OverloadedError, SeawallError


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
    level: int = 0  # index of its priority level (`BatchPolicy.level_of`)


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """A `ModelQueuePolicy`: how long a request of one priority level may wait, and how many may."""

    default_timeout_ns: int = 0  # 0 = none
    allow_timeout_override: bool = False
    delay: bool = False  # timeout_action DELAY: a request past its timeout is not rejected
    max_queue_size: int = 0  # 0 = unlimited

    @classmethod
    def from_config(cls, policy: Any) -> QueuePolicy:
        return cls(
            default_timeout_ns=policy.default_timeout_microseconds * 1000,
            allow_timeout_override=policy.allow_timeout_override,
            delay=policy.timeout_action == model_config_pb2.ModelQueuePolicy.DELAY,
            max_queue_size=policy.max_queue_size,
        )

    def timeout_ns(self, requested_ns: int) -> int:
        """The queue timeout of a request: the policy's, which a request may shorten (or replace when the policy
        allows overrides); 0 (none) under DELAY, where a late request still runs."""
        if self.delay:
            return 0
        if not requested_ns:
            return self.default_timeout_ns
        if self.allow_timeout_override or not self.default_timeout_ns:
            return requested_ns
        return min(requested_ns, self.default_timeout_ns)


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How many requests one execution may take, how long the oldest may wait for more, and the queue's priority
    levels with their policies (`dynamic_batching`)."""

    max_batch_size: int = 0  # 0: one request per execution
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_ns: int = 0
    default_timeout_ns: int = 0  # the default queue policy's timeout: 0 = none
    allow_timeout_override: bool = False
    priority_levels: int = 0  # 0: one level
    default_priority_level: int = 0
    # the queue policy of each level (index level - 1; one entry without levels)
    queue_policies: tuple[QueuePolicy, ...] = ()
    preserve_ordering: bool = False  # responses leave in the order their requests were dispatched

    @classmethod
    def from_config(cls, config: ModelConfig) -> BatchPolicy:
        if not config.HasField("dynamic_batching"):
            return cls()
        batching = config.dynamic_batching
        default = QueuePolicy.from_config(batching.default_queue_policy)
        policies = [default]
        if batching.priority_levels:
            policies = [
                QueuePolicy.from_config(batching.priority_queue_policy[level])
                if level in batching.priority_queue_policy
                else default
                for level in range(1, batching.priority_levels + 1)
            ]
        return cls(
            max_batch_size=max(config.max_batch_size, 0),
            preferred_batch_sizes=tuple(sorted(batching.preferred_batch_size)),
            max_queue_delay_ns=batching.max_queue_delay_microseconds * 1000,
            default_timeout_ns=default.default_timeout_ns,
            allow_timeout_override=default.allow_timeout_override,
            priority_levels=batching.priority_levels,
            default_priority_level=batching.default_priority_level,
            queue_policies=tuple(policies),
            preserve_ordering=batching.preserve_ordering,
        )

    @property
    def is_plain(self) -> bool:
        """One level without a size limit: a plain FIFO queue serves it."""
        return self.priority_levels == 0 and not any(p.max_queue_size for p in self.queue_policies)

    @property
    def holds_in_queue(self) -> bool:
        """Requests wait in the queue for an idle instance, never in a busy one's pipeline, so that batches grow
        while the instances are busy and order, sizes and timeouts are the queue's, as in Triton: the model
        batches (max_batch_size > 1), or queue policies apply (levels, sizes, timeouts, DELAY)."""
        return self.max_batch_size > 1 or self.has_queue_policies

    @property
    def has_queue_policies(self) -> bool:
        """Priority levels, queue sizes, timeouts or DELAY: Triton then forms no batch ahead of a busy instance."""
        return not self.is_plain or any(p.default_timeout_ns or p.delay for p in self.queue_policies)

    def level_of(self, request: InferRequest) -> int:
        """The index of the request's priority level: its `priority` parameter, the default level when it has
        none, 0, or one above the model's levels (as Triton)."""
        if not self.priority_levels:
            return 0
        priority = request.parameters.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool) or not 0 < priority <= self.priority_levels:
            priority = self.default_priority_level
        return priority - 1

    def timeout_ns(self, requested_ns: int, level: int = 0) -> int:
        """The queue timeout of a request of `level` that asked for `requested_ns` (0: none asked)."""
        if not self.queue_policies:
            if not requested_ns:  # most requests: no policy object to build
                return self.default_timeout_ns
            return QueuePolicy(self.default_timeout_ns, self.allow_timeout_override).timeout_ns(requested_ns)
        return self.queue_policies[level].timeout_ns(requested_ns)


class PriorityQueue:
    """The queue of a model with priority levels or a `max_queue_size`: a FIFO per level, highest level (1) first.

    Offers what the scheduler uses of a deque (`append`, `popleft`, `remove`, `[0]`, `len`); `append` refuses a
    request its level has no room for.
    """

    __slots__ = ("_levels", "_limits", "_size")

    def __init__(self, policy: BatchPolicy) -> None:
        self._levels: list[deque[Pending]] = [deque() for _ in policy.queue_policies or (QueuePolicy(),)]
        self._limits = [p.max_queue_size for p in policy.queue_policies] or [0]
        self._size = 0

    def append(self, pending: Pending) -> None:
        """Raises: OverloadedError (Triton's "Exceeds maximum queue size": the level is full)."""
        level = self._levels[pending.level]
        limit = self._limits[pending.level]
        if limit and len(level) >= limit:
            raise OverloadedError(f"[request id: {pending.request.id or '<id_unknown>'}] Exceeds maximum queue size")
        level.append(pending)
        self._size += 1

    def appendleft(self, pending: Pending) -> None:
        """Put a request taken off the queue back at the head of its level (never refused)."""
        self._levels[pending.level].appendleft(pending)
        self._size += 1

    def popleft(self) -> Pending:
        for level in self._levels:
            if level:
                self._size -= 1
                return level.popleft()
        raise IndexError("pop from an empty queue")

    def remove(self, pending: Pending) -> None:
        """Raises: ValueError (not queued)."""
        self._levels[pending.level].remove(pending)
        self._size -= 1

    def __getitem__(self, index: int) -> Pending:
        if index != 0:
            raise IndexError("only the head of the queue can be read")
        for level in self._levels:
            if level:
                return level[0]
        raise IndexError("empty queue")

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0


def fail(pending: Pending, error: SeawallError) -> None:
    """Answer a request that will not run with `error` (a decoupled one in its sink: its future is not awaited)."""
    if pending.sink is None:
        pending.future.set_exception(error)
    else:
        pending.sink.fail(error)
        pending.future.set_result(None)


async def drain(busy: Callable[[], bool], drain_secs: float) -> None:
    """Wait up to `drain_secs` for `busy()` to turn false (a stopping scheduler letting its requests finish;
    what is left the caller then fails)."""
    deadline = time.monotonic() + drain_secs
    while busy() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
