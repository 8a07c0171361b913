"""Which models are resident, in explicit control mode: a request for a repository model that is not loaded
loads it (`--load-on-request`), and under `--max-loaded-models` the least recently used idle model is unloaded
to make room for another (the load API's loads included).

Imports `core.*`, `errors`, `options`. Event loop thread only. Loads and evictions run one at a time (one lock):
a load is slow anyway, and two loads deciding at once what to evict would both pick the same victim. Concurrent
requests for a model that is loading wait for that one load (up to `--load-on-request-timeout-secs`).

Never evicted: a model with requests in flight, a model that a request has resolved and not yet dropped (`hold`:
the request may still be decoding its inputs before it is queued; a hold counts for `HOLD_LIMIT_S` after the model's
last use at most, so that a leaked reference cannot pin it), a model named by `--load-model` at start-up or whose config
sets the parameter SEAWALL_PINNED to "true" (pinned), a model that is loading, and the composing models of a loaded
ensemble (unloading one would take the ensemble down).
When nothing can go within `ROOM_WAIT_S`, the load fails with CapacityError (HTTP 507) instead of unloading a model
that is in use.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping

from seawall.core import audit
from seawall.core.config_features import is_pinned
from seawall.core.model_record import ModelRecord
from seawall.core.repository import is_valid_model_name
from seawall.errors import CapacityError, InvalidArgumentError, SeawallError, UnavailableError
from seawall.options import RepositoryOptions

logger = logging.getLogger(__name__)

#: the caller an on-request load or an eviction is audited as: the server itself, not a client
SELF = "seawall (load on request)"
#: seconds after a model's last use during which a request's hold on it keeps it (longer than a body may take)
HOLD_LIMIT_S = 60.0
#: how long a load waits for a loaded model to become evictable before it fails (507), and how often it looks
ROOM_WAIT_S = 1.0
ROOM_POLL_S = 0.005


def check_options(options: RepositoryOptions) -> None:
    """Refuse the residency settings outside explicit mode (an embedding application's Options, as the CLI does).

    Raises:
        InvalidArgumentError: --load-on-request or --max-loaded-models without --model-control-mode=explicit.
    """
    for flag, on in (("load-on-request", options.load_on_request), ("max-loaded-models", options.max_loaded_models)):
        if on and options.control_mode != "explicit":
            raise InvalidArgumentError(f"'--{flag}' requires '--model-control-mode=explicit'")


class Residency:
    """Load on request and LRU eviction over the lifecycle's models; `load(name)` / `unload(name)` are the model
    control's (explicit mode)."""

    def __init__(
        self,
        options: RepositoryOptions,
        models: Mapping[str, ModelRecord],
        knows: Callable[[str], bool],
        load: Callable[[str], Awaitable[None]],
        unload: Callable[[str], Awaitable[None]],
    ) -> None:
        self._options = options
        self._models = models
        self._knows = knows  # whether a model of that name is in a repository (or registered)
        self._load = load
        self._unload = unload
        self._used: OrderedDict[str, float] = OrderedDict()  # model → its last use, least recent first
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._held: dict[str, weakref.WeakSet[object]] = {}  # model → the resolved models requests still hold
        self._evicting: set[str] = set()  # a request for one waits for the eviction, then loads it again
        self._lock = asyncio.Lock()
        self._pinned = frozenset(options.load_models) - {"*"}
        self.evictions = 0  # models unloaded to make room (a metric)
        self.loads_on_request = 0

    def touch(self, name: str) -> None:
        """`name` served a request now (the most recently used)."""
        self._used[name] = time.monotonic()
        self._used.move_to_end(name)

    def hold(self, name: str, served: object) -> None:
        """A request resolved `name` to `served`: the model stays until the request drops it (between resolving
        and the queue, where the scheduler counts it, the request decodes its inputs)."""
        held = self._held.get(name)
        if held is None:
            held = self._held[name] = weakref.WeakSet()
        held.add(served)

    async def ensure(self, name: str) -> None:
        """Make `name` resident if a request for it may load it; otherwise leave the answer to the resolution.

        Raises:
            UnavailableError: the load failed or did not end within the timeout.
            CapacityError: no loaded model can be evicted to make room.
        """
        record = self._models.get(name)
        if record is not None and record.is_ready() and name not in self._evicting:
            self.touch(name)
            return
        if not self._options.load_on_request or not is_valid_model_name(name) or not self._knows(name):
            return  # not ours to load: the resolution answers (unknown model, not ready, ...)
        waiter = self._loading.get(name)
        if waiter is None:
            waiter = asyncio.ensure_future(self._load_on_request(name))
            self._loading[name] = waiter
            waiter.add_done_callback(lambda _: self._loading.pop(name, None))
        timeout = self._options.load_on_request_timeout_secs
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            raise UnavailableError(f"model '{name}' did not load within {timeout}s (load on request)") from None

    async def _load_on_request(self, name: str) -> None:
        try:
            with audit.audited(SELF, "load", name):
                await self.admit(name, self._load)
        except CapacityError:
            raise
        except SeawallError as error:
            logger.warning("loading model '%s' on request failed: %s", name, error.message)
            raise UnavailableError(f"model '{name}' failed to load on request: {error.message}") from None
        self.loads_on_request += 1

    async def admit(self, name: str, load: Callable[[str], Awaitable[None]]) -> None:
        """Run `load(name)` once there is room for one more model (evicting the least recently used idle ones).

        Raises:
            CapacityError: the limit is reached and no loaded model can be evicted.
        """
        async with self._lock:
            await self._make_room(name)
            await load(name)
            self.touch(name)

    async def _make_room(self, name: str) -> None:
        limit = self._options.max_loaded_models
        deadline = time.monotonic() + ROOM_WAIT_S
        while limit and self._resident(besides=name) >= limit:
            victim = self._victim(name)
            if victim is None and time.monotonic() < deadline:
                await asyncio.sleep(ROOM_POLL_S)  # models busy now are often idle a moment later
                continue
            if victim is None:
                raise CapacityError(
                    f"cannot load model '{name}': {limit} model(s) are loaded (--max-loaded-models) and none of "
                    "them can be unloaded now (in flight, pinned by --load-model or SEAWALL_PINNED, or used by an "
                    "ensemble)"
                )
            logger.info("unloading model '%s' (least recently used) to make room for '%s'", victim, name)
            self._used.pop(victim, None)
            self._evicting.add(victim)
            try:
                with audit.audited(SELF, "evict", victim):
                    await self._unload(victim)
            finally:
                self._evicting.discard(victim)
            self.evictions += 1

    def _resident(self, besides: str) -> int:
        return sum(1 for n, r in self._models.items() if n != besides and not r.unloaded and r.versions)

    def _victim(self, name: str) -> str | None:
        """The least recently used model that may go: never used since loaded first, then by last use."""
        loaded = [n for n, r in self._models.items() if not r.unloaded and r.versions]
        order = [n for n in loaded if n not in self._used] + [n for n in self._used if n in loaded]
        needed = {c for r in self._models.values() if r.is_ensemble and not r.unloaded for c in r.composing}
        stale = time.monotonic() - HOLD_LIMIT_S
        for candidate in order:
            if candidate == name or candidate in needed or candidate in self._loading or self._is_pinned(candidate):
                continue
            if self._held.get(candidate) and self._used.get(candidate, 0.0) > stale:
                continue  # a request resolved it and may still be decoding
            if _idle(self._models[candidate]):
                self._held.pop(candidate, None)
                return candidate
        return None

    def _is_pinned(self, name: str) -> bool:
        if name in self._pinned:
            return True
        return any(v.config is not None and is_pinned(v.config) for v in self._models[name].versions.values())


def _idle(record: ModelRecord) -> bool:
    return all(v.scheduler is None or v.scheduler.inflight() == 0 for v in record.versions.values())
