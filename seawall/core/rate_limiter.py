"""The rate limiter (`--rate-limit=execution_count`): before an instance of any model executes, it waits for the
resources its instance group's `rate_limiter` names; among the waiting instances the one with the lowest
execution count × priority goes first, and the others wait behind it, as in Triton.

Imports `core.backend` and `errors`. One per server (owned by the model lifecycle);
event loop thread only.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from seawall.core.backend import ModelConfig
from seawall.errors import InvalidArgumentError

GLOBAL = -2  # the device key of a `global` resource: one pool for the whole server
PER_DEVICE = -1  # `--rate-limit-resource=<name>:<count>` without a device: the count of every device
CPU_DEVICE = 0  # where Triton counts the resources of CPU instances

Key = tuple[int, str]  # (device, resource name)


class Named(Protocol):
    """What the rate limiter reads of an instance: its name (`<group name>_<index>`)."""

    @property
    def name(self) -> str: ...


@dataclass(eq=False, slots=True)
class InstanceGate:
    """What one instance needs of the rate limiter, and how often it ran (its priority grows with it)."""

    needs: Mapping[Key, int]
    priority: int  # 1 is the highest; 0 counts as 1
    executions: int = 0


@dataclass(eq=False, slots=True)
class _Staged:
    gate: InstanceGate
    future: asyncio.Future[None]
    order: tuple[int, int] = field(default=(0, 0))

    def __lt__(self, other: _Staged) -> bool:
        return self.order < other.order


class RateLimiter:
    """The server's resource pools and the instances waiting for them."""

    def __init__(self, mode: str = "off", explicit: Sequence[tuple[str, int, int]] = ()) -> None:
        self.enabled = mode == "execution_count"
        self._explicit = tuple(explicit)  # (name, count, device or PER_DEVICE) from --rate-limit-resource
        self._gates: set[InstanceGate] = set()
        self._available: dict[Key, int] = {}
        self._allocated: dict[Key, int] = {}
        self._staged: list[_Staged] = []  # a heap, lowest execution count × priority first (then arrival)
        self._arrivals = itertools.count()

    def register(self, config: ModelConfig, instances: Sequence[Named]) -> dict[int, InstanceGate]:
        """Take in the instances of a model being loaded: id(instance) → its gate (none when rate limiting is off).

        Raises:
            InvalidArgumentError: a resource the instances need is not available in that count (Triton's message).
        """
        if not self.enabled:
            return {}
        groups = {f"{g.name}_{i}": g for g in config.instance_group for i in range(max(g.count, 1))}
        gates: dict[int, InstanceGate] = {}
        for instance in instances:
            group = groups.get(instance.name)
            needs: dict[Key, int] = {}
            priority = 1
            if group is not None and group.HasField("rate_limiter"):
                for resource in group.rate_limiter.resources:
                    device = GLOBAL if getattr(resource, "global") else CPU_DEVICE
                    needs[(device, resource.name)] = resource.count
                priority = max(group.rate_limiter.priority, 1)
            gates[id(instance)] = InstanceGate(needs, priority)
        candidates = self._gates | set(gates.values())
        self._available = self._pools(candidates)
        self._gates = candidates
        self._dispatch()
        return gates

    def unregister(self, gates: Mapping[int, InstanceGate]) -> None:
        """The model unloads: its instances no longer count towards the pools' default sizes."""
        if not gates:
            return
        self._gates -= set(gates.values())
        self._available = self._pools(self._gates)
        self._dispatch()

    def _pools(self, gates: set[InstanceGate]) -> dict[Key, int]:
        """The size of each pool: by default the most any one instance needs; with --rate-limit-resource, the
        counts given (a pool not given is empty).

        Raises: InvalidArgumentError (Triton's messages).
        """
        pools: dict[Key, int] = {}
        for gate in gates:
            for key, count in gate.needs.items():
                pools[key] = max(pools.get(key, 0), count)
        shared = {name for device, name in pools if device == GLOBAL}
        for device, name in pools:
            if device != GLOBAL and name in shared:
                raise InvalidArgumentError(
                    f'Resource "{name}" is present as both global and device-specific resource in the model '
                    "configuration."
                )
        if not self._explicit:
            return pools
        for (device, name), need in pools.items():
            given = [
                count
                for resource, count, where in self._explicit
                if resource == name and (device == GLOBAL or where in (device, PER_DEVICE))
            ]
            count = max(given, default=0)
            if count < need:
                raise InvalidArgumentError(
                    f'Resource count for "{name}" is limited to {count} which will prevent scheduling of one or more '
                    f"model instances, the minimum required count is {need}"
                )
            pools[(device, name)] = count
        return pools

    async def acquire(self, gate: InstanceGate) -> None:
        """Wait until `gate`'s instance may execute (its resources are then held until `release`)."""
        if not self._staged and self._fits(gate):
            self._take(gate)
            return
        staged = _Staged(gate, asyncio.get_running_loop().create_future())
        staged.order = (gate.executions * gate.priority, next(self._arrivals))
        heapq.heappush(self._staged, staged)
        self._dispatch()
        try:
            await staged.future
        except asyncio.CancelledError:
            if staged.future.done() and not staged.future.cancelled():
                self.release(gate, executed=False)  # granted as it was cancelled: give the resources back
            else:
                staged.future.cancel()
                self._dispatch()  # it may have been the head others waited behind
            raise

    def release(self, gate: InstanceGate, executed: bool = True) -> None:
        """`gate`'s instance finished its execution: free its resources for the next waiting instance."""
        if executed:
            gate.executions += 1
        for key, count in gate.needs.items():
            self._allocated[key] -= count
        self._dispatch()

    def _fits(self, gate: InstanceGate) -> bool:
        return all(self._allocated.get(key, 0) + n <= self._available.get(key, 0) for key, n in gate.needs.items())

    def _take(self, gate: InstanceGate) -> None:
        for key, count in gate.needs.items():
            self._allocated[key] = self._allocated.get(key, 0) + count

    def _dispatch(self) -> None:
        """Grant the waiting instances their resources in order, stopping at the first that does not fit."""
        staged = self._staged
        while staged:
            head = staged[0]
            if head.future.done():  # cancelled while waiting
                heapq.heappop(staged)
                continue
            if not self._fits(head.gate):
                return
            heapq.heappop(staged)
            self._take(head.gate)
            head.future.set_result(None)
