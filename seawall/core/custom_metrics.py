"""Custom metric families that model code creates (`pb_utils.MetricFamily`): validated, bounded, owned.

Imports `errors` and `custom_metric_checks` (what models give, checked). One `CustomMetrics` per server. Each model
instance gets an `MetricsOwner` (through its version's `ModelMetrics`); the ids it uses are its own (a stub chooses
them, and is checked like any input). Families are shared by name across owners, series by labels, and each goes
when its last owner releases it; a model version's unload closes every owner it handed out. Thread-safe (one lock):
stub messages arrive on the event loop, in-process models call from their worker threads, the metrics frontend takes
a `snapshot()`.

Limits (a model cannot grow the exposition without bound): per instance `MAX_OWNER_FAMILIES` family handles and
`MAX_OWNER_SERIES` metric handles; per server `MAX_FAMILIES` families and `MAX_SERIES` series; names, labels,
label values, descriptions and buckets are bounded in `custom_metric_checks`.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from seawall.core.custom_metric_checks import (
    MAX_DESCRIPTION_CHARS,
    Labels,
    check_buckets,
    check_labels,
    check_name,
    check_text,
    check_value,
    derived_names,
)
from seawall.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, ResourceExhaustedError

MAX_OWNER_FAMILIES = 64
MAX_OWNER_SERIES = 1024
MAX_FAMILIES = 1024
MAX_SERIES = 65536


class MetricKind(enum.Enum):
    """A family's kind; `index` is pb_utils.MetricFamily's number for it."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"

    @property
    def index(self) -> int:
        return _KINDS.index(self)

    @property
    def triton_name(self) -> str:
        """As Triton's messages name it: TRITONSERVER_METRIC_KIND_COUNTER."""
        return f"TRITONSERVER_METRIC_KIND_{self.name}"


_KINDS = (MetricKind.COUNTER, MetricKind.GAUGE, MetricKind.HISTOGRAM)


def kind_of(index: int) -> MetricKind:
    """The kind pb_utils numbers `index` (0 counter, 1 gauge, 2 histogram).

    Raises:
        InvalidArgumentError: another number.
    """
    if type(index) is not int or not 0 <= index < len(_KINDS):
        raise InvalidArgumentError("unknown metric kind")
    return _KINDS[index]


class MetricOp(enum.IntEnum):
    """What a model does to a metric (the stub protocol's numbers)."""

    INCREMENT = 0
    SET = 1
    OBSERVE = 2


_OP_NAMES = {MetricOp.INCREMENT: "Increment", MetricOp.SET: "Set", MetricOp.OBSERVE: "Observe"}
_ALLOWED = {
    MetricKind.COUNTER: (MetricOp.INCREMENT,),
    MetricKind.GAUGE: (MetricOp.INCREMENT, MetricOp.SET),
    MetricKind.HISTOGRAM: (MetricOp.OBSERVE,),
}


@dataclass(frozen=True, slots=True)
class SeriesSnapshot:
    """One series at scrape time. Histograms: `buckets` (upper bounds), cumulative `bucket_counts` (one more,
    for +Inf), `count` and `total`; counters and gauges: `value`."""

    labels: Labels
    value: float = 0.0
    buckets: tuple[float, ...] = ()
    bucket_counts: tuple[int, ...] = ()
    count: int = 0
    total: float = 0.0


@dataclass(frozen=True, slots=True)
class FamilySnapshot:
    name: str
    description: str
    kind: MetricKind
    series: tuple[SeriesSnapshot, ...]


class _Series:
    __slots__ = ("labels", "buckets", "counts", "value", "count", "total", "refs")

    def __init__(self, labels: Labels, buckets: tuple[float, ...]) -> None:
        self.labels = labels
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # per bucket (not cumulative); the last is +Inf
        self.value = 0.0
        self.count = 0
        self.total = 0.0
        self.refs = 0

    def snapshot(self, kind: MetricKind) -> SeriesSnapshot:
        if kind is not MetricKind.HISTOGRAM:
            return SeriesSnapshot(self.labels, self.value)
        cumulative: list[int] = []
        running = 0
        for count in self.counts:
            running += count
            cumulative.append(running)
        return SeriesSnapshot(self.labels, 0.0, self.buckets, tuple(cumulative), self.count, self.total)


class _Family:
    __slots__ = ("name", "description", "kind", "series", "refs")

    def __init__(self, name: str, description: str, kind: MetricKind) -> None:
        self.name = name
        self.description = description
        self.kind = kind
        self.series: dict[Labels, _Series] = {}
        self.refs = 0


class CustomMetrics:
    """The server's custom families (one per InferenceServer; no global registry)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        self._samples: dict[str, str] = {}  # sample name → family printing it (no two families print one name)
        self._series = 0

    def model(self, name: str, version: int) -> ModelMetrics:
        """The handle of one model version; its `close()` releases everything its instances created."""
        return ModelMetrics(self, name, version)

    def snapshot(self) -> list[FamilySnapshot]:
        """Every family with its series (labels sorted), families in creation order."""
        with self._lock:
            return [
                FamilySnapshot(
                    family.name,
                    family.description,
                    family.kind,
                    tuple(s.snapshot(family.kind) for _, s in sorted(family.series.items())),
                )
                for family in self._families.values()
            ]

    # -- under the lock, for owners ---------------------------------------------------------------------------

    def _acquire_family(self, name: str, description: str, kind: MetricKind) -> _Family:
        family = self._families.get(name)
        if family is None:
            for sample in derived_names(name, kind is MetricKind.HISTOGRAM):
                other = self._samples.get(sample)
                if other is not None:
                    raise AlreadyExistsError(f"metric family '{name}' would print samples of family '{other}'")
            if len(self._families) >= MAX_FAMILIES:
                raise ResourceExhaustedError(f"the server holds {MAX_FAMILIES} custom metric families already")
            family = self._families[name] = _Family(name, description, kind)
            for sample in derived_names(name, kind is MetricKind.HISTOGRAM):
                self._samples[sample] = name
        elif family.kind is not kind:
            raise AlreadyExistsError(
                f"metric family '{name}' already exists with kind {family.kind.name}, not {kind.name}"
            )
        family.refs += 1
        return family

    def _release_family(self, family: _Family) -> None:
        family.refs -= 1
        if family.refs <= 0 and not family.series and self._families.get(family.name) is family:
            del self._families[family.name]
            for sample in derived_names(family.name, family.kind is MetricKind.HISTOGRAM):
                self._samples.pop(sample, None)

    def _acquire_series(self, family: _Family, labels: Labels, buckets: tuple[float, ...]) -> _Series:
        series = family.series.get(labels)
        if series is None:
            if self._series >= MAX_SERIES:
                raise ResourceExhaustedError(f"the server holds {MAX_SERIES} custom metric series already")
            series = family.series[labels] = _Series(labels, buckets)
            self._series += 1
        elif series.buckets != buckets:
            raise AlreadyExistsError(f"a metric of family '{family.name}' with these labels has other buckets")
        series.refs += 1
        return series

    def _release_series(self, family: _Family, series: _Series) -> None:
        series.refs -= 1
        if series.refs <= 0 and family.series.get(series.labels) is series:
            del family.series[series.labels]
            self._series -= 1


class ModelMetrics:
    """One model version's custom metrics: an owner per instance; `close()` at unload releases them all."""

    def __init__(self, registry: CustomMetrics, name: str, version: int) -> None:
        self._registry = registry
        self.name = name
        self.version = version
        self._owners: list[MetricsOwner] = []

    def owner(self, instance: str) -> MetricsOwner:
        """A fresh owner for one instance (a restarted stub gets a new one; close the old)."""
        owner = MetricsOwner(self._registry, f"{self.name}/{self.version}/{instance}")
        self._owners.append(owner)
        return owner

    def close(self) -> None:
        """Release every family and series this version's instances created; idempotent."""
        owners, self._owners = self._owners, []
        for owner in owners:
            owner.close()


class MetricsOwner:
    """The families and metrics one instance holds, by the ids it chose. Every method may be called from any
    thread; the errors are meant for the model (pb_utils turns them into TritonModelException)."""

    def __init__(self, registry: CustomMetrics, label: str) -> None:
        self._registry = registry
        self.label = label
        self._families: dict[int, _Family] = {}
        self._metrics: dict[int, tuple[_Family, _Series, int]] = {}  # id → (family, series, family id)
        self._closed = False

    def create_family(self, family_id: int, name: object, description: object, kind: MetricKind) -> None:
        """Raises:
        InvalidArgumentError: a bad name or description, a reused id.
        AlreadyExistsError: the name is taken by a family of another kind.
        ResourceExhaustedError: over a limit.
        """
        checked = check_name(name)
        text = check_text(description, "the description", MAX_DESCRIPTION_CHARS)
        registry = self._registry
        with registry._lock:
            self._check_open()
            if family_id in self._families:
                raise InvalidArgumentError("metric family id in use")
            if len(self._families) >= MAX_OWNER_FAMILIES:
                raise ResourceExhaustedError(f"a model instance may hold {MAX_OWNER_FAMILIES} metric families")
            self._families[family_id] = registry._acquire_family(checked, text, kind)

    def create_metric(
        self, metric_id: int, family_id: int, labels: Mapping[str, str] | None, buckets: Sequence[float] | None
    ) -> None:
        """Raises:
        InvalidArgumentError: bad labels or buckets, unknown family id, a reused id.
        AlreadyExistsError: the series exists with other buckets.
        ResourceExhaustedError: over a limit.
        """
        registry = self._registry
        with registry._lock:
            self._check_open()
            family = self._families.get(family_id)
            if family is None:
                raise NotFoundError("unknown metric family")
            if metric_id in self._metrics:
                raise InvalidArgumentError("metric id in use")
            if len(self._metrics) >= MAX_OWNER_SERIES:
                raise ResourceExhaustedError(f"a model instance may hold {MAX_OWNER_SERIES} metrics")
            key = check_labels(labels or {}, family.kind is MetricKind.HISTOGRAM)
            bounds = check_buckets(buckets, family.kind is MetricKind.HISTOGRAM)
            series = registry._acquire_series(family, key, bounds)
            self._metrics[metric_id] = (family, series, family_id)

    def apply(self, metric_id: int, op: MetricOp, value: object) -> None:
        """Increment, set or observe.

        Raises:
            InvalidArgumentError: the kind does not allow `op`, a negative increment of a counter, not a number.
            NotFoundError: unknown metric id.
        """
        number = check_value(value)
        with self._registry._lock:
            family, series = self._metric(metric_id)
            kind = family.kind
            if op not in _ALLOWED[kind]:
                raise InvalidArgumentError(f"{kind.triton_name} does not support {_OP_NAMES[op]}")
            if op is MetricOp.INCREMENT:
                if kind is MetricKind.COUNTER and not number >= 0:  # NaN included
                    raise InvalidArgumentError(
                        f"{kind.triton_name} can only be incremented monotonically by non-negative values."
                    )
                series.value += number
            elif op is MetricOp.SET:
                series.value = number
            else:
                if math.isnan(number):
                    raise InvalidArgumentError("a histogram cannot observe NaN")
                index = 0
                for bound in series.buckets:
                    if number <= bound:
                        break
                    index += 1
                series.counts[index] += 1
                series.count += 1
                series.total += number

    def value(self, metric_id: int) -> float:
        """Raises:
        InvalidArgumentError: a histogram (no single value).
        NotFoundError: unknown metric id.
        """
        with self._registry._lock:
            family, series = self._metric(metric_id)
            if family.kind is MetricKind.HISTOGRAM:
                raise InvalidArgumentError(f"{family.kind.triton_name} does not support Value")
            return series.value

    def delete_metric(self, metric_id: int) -> None:
        """Release one metric handle (unknown ids are ignored: deletes may race with close)."""
        with self._registry._lock:
            entry = self._metrics.pop(metric_id, None)
            if entry is not None:
                self._registry._release_series(entry[0], entry[1])

    def delete_family(self, family_id: int) -> None:
        """Release one family handle and the metrics created through it (as Triton clears them)."""
        registry = self._registry
        with registry._lock:
            family = self._families.pop(family_id, None)
            if family is None:
                return
            for metric_id in [m for m, entry in self._metrics.items() if entry[2] == family_id]:
                _, series, _ = self._metrics.pop(metric_id)
                registry._release_series(family, series)
            registry._release_family(family)

    def close(self) -> None:
        """Release everything; later calls fail (a model still running after unload changes nothing)."""
        registry = self._registry
        with registry._lock:
            self._closed = True
            for family, series, _ in self._metrics.values():
                registry._release_series(family, series)
            self._metrics.clear()
            for family in self._families.values():
                registry._release_family(family)
            self._families.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise NotFoundError("the model instance's metrics are released (the model is unloading)")

    def _metric(self, metric_id: int) -> tuple[_Family, _Series]:
        self._check_open()
        entry = self._metrics.get(metric_id)
        if entry is None:
            raise NotFoundError(
                "Invalid metric operation as the corresponding 'MetricFamily' has been deleted. The "
                "'MetricFamily' object should be deleted AFTER its corresponding 'Metric' objects have been deleted."
            )
        return entry[0], entry[1]
