"""The repository index entries: a model (`ModelRecord`) and each of its versions (`ModelVersion`).

Imports `core.*`, `errors`. A version holds its state and reason and, once READY, its config, model and scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from seawall.core.backend import Model, ModelConfig
from seawall.core.custom_metrics import ModelMetrics
from seawall.core.ensemble import EnsembleScheduler
from seawall.core.model_config import ModelSpec
from seawall.core.scheduler import Scheduler
from seawall.core.sequence import SequenceScheduler
from seawall.core.stats import StatsRecorder
from seawall.core.types import ModelState

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ModelVersion:
    """One version of one model: its state, and once READY its config, instances and scheduler."""

    name: str
    version: int
    state: ModelState = ModelState.UNKNOWN
    reason: str = ""
    config: ModelConfig | None = None
    spec: ModelSpec | None = None
    model: Model | None = None
    scheduler: Scheduler | SequenceScheduler | EnsembleScheduler | None = None
    labels: dict[str, list[str]] = field(default_factory=dict)  # output → class labels (classification)
    stats: StatsRecorder = field(init=False)
    custom_metrics: ModelMetrics | None = None  # released at unload (the families its code created)

    def __post_init__(self) -> None:
        self.stats = StatsRecorder(self.name, str(self.version))

    def is_ready(self) -> bool:
        return self.state is ModelState.READY

    async def unload(self, drain_secs: float = 0.0) -> None:
        """Let in-flight requests finish (up to `drain_secs`), then finalize; idempotent."""
        if self.model is None:
            return
        self.state = ModelState.UNLOADING
        if self.scheduler is not None:
            await self.scheduler.stop(drain_secs)
        if self.model is not None:
            try:
                await self.model.unload()
            except Exception:
                logger.exception("unloading model '%s' version %d failed", self.name, self.version)
        self.model, self.scheduler = None, None
        if self.custom_metrics is not None:
            self.custom_metrics.close()
        self.state, self.reason = ModelState.UNAVAILABLE, "unloaded"


@dataclass(slots=True)
class ModelRecord:
    """A model the server knows: its versions, or why it could not be loaded at all."""

    name: str
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    error: str = ""  # model-level failure (bad config, no versions): no version was attempted
    unloaded: bool = False  # unloaded on request: not a failure, and no longer counts for readiness
    explicit: bool = True  # loaded on its own account, not only because an ensemble needs it
    composing: tuple[str, ...] = ()  # an ensemble's composing models (its config named them, loaded or not)
    is_ensemble: bool = False

    def is_ready(self) -> bool:
        return not self.error and bool(self.versions) and all(v.is_ready() for v in self.versions.values())

    def failure(self) -> str:
        """Why the model is not fully ready: the model-level error or the first failed version."""
        if self.error:
            return self.error
        for number, entry in sorted(self.versions.items()):
            if not entry.is_ready():
                return f"version {number} is at {entry.state.value} state: {entry.reason}"
        return ""

    async def unload(self, drain_secs: float = 0.0) -> None:
        await asyncio.gather(*(v.unload(drain_secs) for v in self.versions.values()))
