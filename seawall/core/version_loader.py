"""Loading one model version: its backend's model, labels and warmup, then the scheduler that serves it
(`core.scheduler`, or `core.sequence` for `sequence_batching`).

Imports `core.*`, `errors`, `options`. Failures become the version's (state, reason), never exceptions.
"""

from __future__ import annotations

import asyncio
import logging
import os

from seawall.core import config_features, model_config, repository, warmup
from seawall.core.backend import Backend, ModelCalls, ModelConfig, ModelLoadContext
from seawall.core.custom_metrics import CustomMetrics
from seawall.core.model_record import ModelVersion
from seawall.core.rate_limiter import RateLimiter
from seawall.core.request_queue import BatchPolicy
from seawall.core.scheduler import Scheduler
from seawall.core.sequence import SequenceScheduler
from seawall.core.sequence_policy import SequencePolicy
from seawall.core.types import ModelState
from seawall.errors import InvalidArgumentError, SeawallError
from seawall.options import Options

logger = logging.getLogger(__name__)


async def load_version(
    entry: ModelVersion,
    config: ModelConfig,
    backend: Backend,
    location: repository.ModelLocation,
    options: Options,
    custom_metrics: CustomMetrics | None = None,
    calls: ModelCalls | None = None,
    from_client: bool = False,
    rate_limiter: RateLimiter | None = None,
) -> None:
    """Load `entry` (LOADING) through `backend`: READY with its scheduler started, or UNAVAILABLE with the reason.
    With `rate_limiter` (--rate-limit), the instances of a dynamic or default batcher wait for its resources."""

    def report_unavailable(reason: str) -> None:
        if entry.state is ModelState.READY:
            logger.error("model '%s' version %d is unavailable: %s", entry.name, entry.version, reason)
            entry.state, entry.reason = ModelState.UNAVAILABLE, reason

    context = ModelLoadContext(
        name=entry.name,
        version=entry.version,
        config=config,
        model_dir=location.path,
        version_dir=os.path.join(location.path, str(entry.version)),
        backend_settings=options.backends.settings_for(config_features.backend_of(config)),
        auto_complete=options.repository.auto_complete_config,
        report_unavailable=report_unavailable,
        config_from_client=from_client,
        custom_metrics=(None if custom_metrics is None else custom_metrics.model(entry.name, entry.version)),
        calls=calls,
    )
    entry.custom_metrics = context.custom_metrics
    try:
        entry.labels = read_labels(config, location.path)
        sequence = SequencePolicy.from_config(config, location.path) if config.HasField("sequence_batching") else None
        samples = await asyncio.to_thread(warmup.read_samples, config, location.path, options.limits)
    except SeawallError as error:
        entry.state, entry.reason = ModelState.UNAVAILABLE, error.message
        logger.error("failed to load '%s' version %d: %s", entry.name, entry.version, entry.reason)
        return
    attempts = 1 + max(0, options.repository.load_retry_count)
    for attempt in range(attempts):
        try:
            entry.model = await backend.load(context)
            break
        except SeawallError as error:
            entry.reason = error.message
        except Exception:
            logger.exception("loading model '%s' version %d failed", entry.name, entry.version)
            entry.reason = "internal error while loading the model"
        if attempt + 1 < attempts:
            logger.warning("retrying load of model '%s' version %d", entry.name, entry.version)
    if entry.model is None:
        if entry.custom_metrics is not None:
            entry.custom_metrics.close()
        entry.state = ModelState.UNAVAILABLE
        logger.error("failed to load '%s' version %d: %s", entry.name, entry.version, entry.reason)
        return
    decoupled = bool(config.model_transaction_policy.decoupled)
    if decoupled and not all(hasattr(i, "execute_decoupled") for i in entry.model.instances):
        await entry.model.unload()
        entry.model, entry.state = None, ModelState.UNAVAILABLE
        entry.reason = f"backend '{config.backend}' does not support models with decoupled transaction policy"
        logger.error("failed to load '%s' version %d: %s", entry.name, entry.version, entry.reason)
        return
    spec = model_config.compile_spec(config)
    limiter = None if rate_limiter is None else (rate_limiter, config)
    plain = Scheduler(entry.model.instances, BatchPolicy.from_config(config), entry.stats, decoupled, limiter)
    scheduler: Scheduler | SequenceScheduler = plain
    if sequence is not None:
        scheduler = SequenceScheduler(entry.model.instances, sequence, entry.stats)
    if samples:
        try:  # a sequence model's warmup runs past its sequence batcher (no control inputs), as in Triton
            await warmup.run(samples, spec, location.path, entry.model.instances, plain)
        except SeawallError as error:
            await entry.unload()
            entry.state, entry.reason = ModelState.UNAVAILABLE, error.message
            logger.error("failed to load '%s' version %d: %s", entry.name, entry.version, entry.reason)
            return
    entry.config, entry.spec, entry.scheduler = config, spec, scheduler
    try:
        scheduler.start()  # the rate limiter refuses instances it could never run
    except SeawallError as error:
        await entry.unload()
        entry.state, entry.reason = ModelState.UNAVAILABLE, error.message
        logger.error("failed to load '%s' version %d: %s", entry.name, entry.version, entry.reason)
        return
    entry.state, entry.reason = ModelState.READY, ""
    logger.info("successfully loaded '%s' version %d", entry.name, entry.version)


MAX_LABEL_FILE_BYTES = 16 * 1024 * 1024


def read_labels(config: ModelConfig, model_dir: str) -> dict[str, list[str]]:
    """The label files of the config's outputs, one label per line, confined to the model directory.

    Raises:
        InvalidArgumentError: a label file is missing, too large, or resolves outside the model directory.
    """
    labels: dict[str, list[str]] = {}
    root = os.path.realpath(model_dir)
    for output in config.output:
        if not output.label_filename:
            continue
        path = os.path.realpath(os.path.join(root, output.label_filename))
        if os.path.commonpath([path, root]) != root or not os.path.isfile(path):
            raise InvalidArgumentError(
                f"label file of output '{output.name}' must be a file inside the model directory"
            )
        if os.path.getsize(path) > MAX_LABEL_FILE_BYTES:
            raise InvalidArgumentError(f"label file of output '{output.name}' is too large")
        with open(path, encoding="utf-8", errors="replace") as file:
            labels[output.name] = file.read().splitlines()
    return labels
