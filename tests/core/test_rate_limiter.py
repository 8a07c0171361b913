"""The rate limiter's rules in process (core/rate_limiter.py); the end-to-end order and load errors against the
real Triton are in tests/differential/test_rate_limiter.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from google.protobuf import text_format

from seawall.core.config_proto import ModelConfig
from seawall.core.rate_limiter import RateLimiter
from seawall.errors import InvalidArgumentError


@dataclass
class Instance:
    name: str


def config(name: str, resources: str, priority: int = 1, count: int = 1) -> ModelConfig:
    text = (
        f'name: "{name}" instance_group [ {{ name: "{name}" count: {count} kind: KIND_CPU '
        f"rate_limiter {{ resources [ {resources} ] priority: {priority} }} }} ]"
    )
    return text_format.Parse(text, ModelConfig())


def instances(name: str, count: int = 1) -> list[Instance]:
    return [Instance(f"{name}_{i}") for i in range(count)]


def test_off_ignores_resources() -> None:
    limiter = RateLimiter("off", [("R", 1, -1)])
    assert limiter.register(config("m", '{ name: "R" count: 5 }'), instances("m")) == {}


def test_a_resource_both_global_and_per_device_is_refused() -> None:
    limiter = RateLimiter("execution_count")
    limiter.register(config("a", '{ name: "R" global: true count: 1 }'), instances("a"))
    with pytest.raises(InvalidArgumentError) as error:
        limiter.register(config("b", '{ name: "R" count: 1 }'), instances("b"))
    assert error.value.message == (
        'Resource "R" is present as both global and device-specific resource in the model configuration.'
    )
    limiter.register(config("c", '{ name: "R" global: true count: 3 }'), instances("c"))  # still usable


def test_explicit_counts_by_device() -> None:
    # CPU instances count on device 0: a count for device 1 does not help, one for every device does
    limiter = RateLimiter("execution_count", [("R", 4, 1)])
    with pytest.raises(InvalidArgumentError) as error:
        limiter.register(config("m", '{ name: "R" count: 2 }'), instances("m"))
    assert "limited to 0 which will prevent scheduling" in error.value.message
    limiter = RateLimiter("execution_count", [("R", 4, 1), ("R", 2, -1), ("G", 3, 7)])
    limiter.register(config("m", '{ name: "R" count: 2 }, { name: "G" global: true count: 3 }'), instances("m"))


async def test_waiting_instances_go_by_execution_count_times_priority_behind_the_head() -> None:
    limiter = RateLimiter("execution_count")
    holder = limiter.register(config("h", '{ name: "R" count: 2 }'), instances("h"))
    low = limiter.register(config("low", '{ name: "R" count: 1 }', priority=3), instances("low"))
    high = limiter.register(config("high", '{ name: "R" count: 1 }', priority=1), instances("high"))
    free = limiter.register(config("free", '{ name: "other" count: 1 }'), instances("free"))
    (hold,), (slow,), (fast,), (loose,) = (list(g.values()) for g in (holder, low, high, free))
    slow.executions = fast.executions = 1  # scaled: low 3, high 1
    loose.executions = 5  # scaled 5: last
    await limiter.acquire(hold)
    order: list[str] = []

    async def run(name: str, gate: object) -> None:
        await limiter.acquire(gate)  # type: ignore[arg-type]
        order.append(name)

    tasks = [asyncio.create_task(run("low", slow)), asyncio.create_task(run("high", fast))]
    await asyncio.sleep(0)
    behind = asyncio.create_task(run("free", loose))  # needs nothing held, but waits behind the head
    await asyncio.sleep(0)
    assert order == []
    limiter.release(hold)
    await asyncio.gather(*tasks, behind)
    assert order == ["high", "low", "free"]  # both fit in R: 2 once the holder released it
    assert (hold.executions, fast.executions) == (1, 1)


async def test_a_cancelled_waiter_no_longer_blocks_the_others() -> None:
    limiter = RateLimiter("execution_count")
    (big,) = limiter.register(config("big", '{ name: "R" count: 2 }'), instances("big")).values()
    (small,) = limiter.register(config("small", '{ name: "R" count: 1 }', priority=2), instances("small")).values()
    (other,) = limiter.register(config("o", '{ name: "R" count: 1 }'), instances("o")).values()
    await limiter.acquire(other)  # holds 1 of 2
    waiting = asyncio.create_task(limiter.acquire(big))  # the head: needs both
    await asyncio.sleep(0)
    later = asyncio.create_task(limiter.acquire(small))
    await asyncio.sleep(0)
    assert not later.done()
    waiting.cancel()
    await asyncio.wait_for(later, 5)  # the remaining 1 of R
    limiter.release(small)
    limiter.release(other)
    await asyncio.wait_for(limiter.acquire(big), 5)
