"""The host side of a stub's custom metrics (pb_utils.MetricFamily): each metric message of the stub is done on its
instance's `MetricsOwner`, and asks are answered with a MetricAnswer.

Imports `messages`, `core.custom_metrics` and `errors`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from seawall.backends.python.messages import (
    MetricAnswer,
    MetricDelete,
    MetricFamilyNew,
    MetricMessage,
    MetricNew,
    MetricUpdate,
    MetricValue,
    float_of,
    wire_float,
)
from seawall.core.custom_metrics import MetricOp, MetricsOwner, kind_of
from seawall.errors import InvalidArgumentError, SeawallError, UnsupportedError

logger = logging.getLogger(__name__)


class MetricRelay:
    """One stub's metric messages, done on `owner` (None: refused, e.g. while the model is auto-completed)."""

    def __init__(self, label: str, owner: MetricsOwner | None, send: Callable[[MetricAnswer], None]) -> None:
        self._label = label
        self._metrics = owner
        self._send = send
        self._metric_refusals = 0  # updates refused (logged once: an honest stub checks them first)

    def on_metric(self, message: MetricMessage) -> None:
        """A custom-metric message of the model: done on the instance's owner; asks are answered."""
        owner = self._metrics
        try:
            if owner is None:
                raise UnsupportedError("custom metrics are not available while the model is auto-completed")
            if type(message) is MetricUpdate:
                if not 0 <= message.op <= 2:
                    raise InvalidArgumentError("unknown metric operation")
                owner.apply(message.metric, MetricOp(message.op), float_of(message.value))
                return
            if type(message) is MetricDelete:
                (owner.delete_family if message.kind == 0 else owner.delete_metric)(message.id)
                return
            value = 0.0
            if type(message) is MetricFamilyNew:
                owner.create_family(message.family, message.name, message.description, kind_of(message.kind))
            elif type(message) is MetricNew:
                buckets = None if message.buckets is None else [float_of(bound) for bound in message.buckets]
                owner.create_metric(message.metric, message.family, message.labels, buckets)
            elif type(message) is MetricValue:
                value = owner.value(message.metric)
            self._send(MetricAnswer(message.ask, wire_float(value), ""))  # type: ignore[union-attr]  # asks only
        except SeawallError as error:
            if type(message) is MetricUpdate or type(message) is MetricDelete:
                self._metric_refusals += 1
                if self._metric_refusals == 1:
                    logger.warning("model instance '%s': a metric update was refused: %s", self._label, error.message)
                return
            self._send(MetricAnswer(message.ask, 0.0, error.message))  # type: ignore[union-attr]  # asks only
