"""The slot table of the sequence batcher: which sequence holds which slot of which instance, the backlog of
sequences waiting for a slot, and the requests each sequence has queued. Bookkeeping only: nothing here runs a
request, awaits, or answers a client (`core.sequence` does, and wakes its workers when `release` says to).

Imports `core.backend`, `core.sequence_policy`, `core.types`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from seawall.core.backend import ModelInstance
from seawall.core.sequence_policy import SequenceId
from seawall.core.types import InferRequest, InferResponse


@dataclass(slots=True)
class Pending:
    """A client's request queued behind the earlier requests of its sequence."""

    request: InferRequest
    batch_size: int
    start: bool
    end: bool
    future: asyncio.Future[InferResponse]
    enqueued_ns: int


@dataclass(slots=True, eq=False)
class LiveSequence:
    """A sequence the scheduler knows: it holds a slot, or waits for one in the backlog."""

    id: SequenceId
    queue: deque[Pending] = field(default_factory=deque)
    slot: Slot | None = None
    running: bool = False
    ended: bool = False  # its END request ran: the next request must START it again
    state: dict[str, np.ndarray] = field(default_factory=dict)
    last_ns: int = 0  # when its last request finished (or it got its slot): the idle timeout counts from here


@dataclass(slots=True, eq=False)
class Slot:
    instance: ModelInstance
    sequence: LiveSequence | None = None


class SlotTable:
    """`slots_per_instance` slots on each instance, the sequences holding them and the backlog (oldest first).
    Event loop thread only (owned by one `SequenceScheduler`)."""

    def __init__(self, instances: Sequence[ModelInstance], slots_per_instance: int) -> None:
        self._instances = list(instances)
        self._slots = [Slot(i) for i in self._instances for _ in range(slots_per_instance)]
        self._slots_of = {id(i): [s for s in self._slots if s.instance is i] for i in self._instances}
        self._sequences: dict[SequenceId, LiveSequence] = {}  # every sequence with a slot or in the backlog
        self._backlog: deque[LiveSequence] = deque()

    def get(self, sequence_id: SequenceId) -> LiveSequence | None:
        return self._sequences.get(sequence_id)

    def sequences(self) -> Iterable[LiveSequence]:
        """Every sequence with a slot or in the backlog (a snapshot: the caller may release them)."""
        return list(self._sequences.values())

    def queued(self) -> int:
        """How many requests wait in the queues of all sequences."""
        return sum(len(s.queue) for s in self._sequences.values())

    def admit(self, sequence_id: SequenceId) -> LiveSequence:
        """A new sequence: on a free slot if one is, else at the end of the backlog."""
        sequence = self._sequences[sequence_id] = LiveSequence(sequence_id)
        if not self._assign(sequence):
            self._backlog.append(sequence)
        return sequence

    def _assign(self, sequence: LiveSequence) -> bool:
        """Give `sequence` a free slot (the first of the least used instance's); False: none is free."""
        free = [slot for slot in self._slots if slot.sequence is None and slot.instance.is_healthy()]
        if not free:
            return False
        used = {id(i): 0 for i in self._instances}
        for slot in self._slots:
            if slot.sequence is not None:
                used[id(slot.instance)] += 1
        free.sort(key=lambda slot: used[id(slot.instance)])
        slot = free[0]
        slot.sequence, sequence.slot, sequence.last_ns = sequence, slot, time.monotonic_ns()
        return True

    def release(self, sequence: LiveSequence) -> bool:
        """Forget `sequence` (ended, idle or failed) and free its slot for the oldest sequence of the backlog;
        True: a waiting sequence got the slot (its requests may run now)."""
        self._sequences.pop(sequence.id, None)
        slot = sequence.slot
        sequence.slot = None
        if slot is None:
            return False
        slot.sequence = None
        while self._backlog:
            waiting = self._backlog[0]
            if not waiting.queue:  # its requests were all cancelled while it waited
                self._backlog.popleft()
                self._sequences.pop(waiting.id, None)
                continue
            if self._assign(waiting):
                self._backlog.popleft()
                return True
            return False
        return False

    def clear_backlog(self) -> None:
        self._backlog.clear()

    def ready(self, instance: ModelInstance) -> list[LiveSequence]:
        """The sequences with a request `instance` may run now, oldest request first."""
        ready = []
        for slot in self._slots_of[id(instance)]:
            sequence = slot.sequence
            if sequence is not None and sequence.queue and not sequence.running:
                ready.append(sequence)
        if len(ready) > 1:
            ready.sort(key=_oldest_request)
        return ready

    def held(self, instance: ModelInstance) -> list[LiveSequence]:
        """The sequences holding a slot of `instance`, in slot order."""
        return [slot.sequence for slot in self._slots_of[id(instance)] if slot.sequence is not None]

    def in_slot_order(self, instance: ModelInstance) -> list[LiveSequence | None]:
        """The sequences of `instance` marked running, in the order of its slots up to the last one with a
        running sequence; the slots before it without one are None (a null request, as in Triton)."""
        order = [
            slot.sequence if slot.sequence is not None and slot.sequence.running else None
            for slot in self._slots_of[id(instance)]
        ]
        while order[-1] is None:
            order.pop()
        return order

    def idle(self, now_ns: int, idle_ns: int) -> tuple[list[LiveSequence], int]:
        """The sequences holding a slot with nothing queued or running since `idle_ns` before `now_ns`, and when
        the next of the others that are idle expires (0: none is idle)."""
        expired, next_ns = [], 0
        for slot in self._slots:
            sequence = slot.sequence
            if sequence is None or sequence.running or sequence.queue:
                continue
            expires = sequence.last_ns + idle_ns
            if expires <= now_ns:
                expired.append(sequence)
            elif not next_ns or expires < next_ns:
                next_ns = expires
        return expired, next_ns


def _oldest_request(sequence: LiveSequence) -> int:
    return sequence.queue[0].enqueued_ns
