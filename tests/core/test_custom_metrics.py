"""The server's registry of custom metric families (core/custom_metrics.py) on its own: sharing by name and
labels, release when the last owner goes, the server-wide bounds, and the checks owners apply to every call (a
stub's ids and values are untrusted)."""

from __future__ import annotations

import math

import pytest

from seawall.core import custom_metrics
from seawall.core.custom_metrics import CustomMetrics, MetricKind, MetricOp
from seawall.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, ResourceExhaustedError


def test_owners_share_families_and_series_until_the_last_releases_them() -> None:
    registry = CustomMetrics()
    first = registry.model("a", 1)
    second = registry.model("b", 1)
    one, two = first.owner("a_0"), second.owner("b_0")
    one.create_family(1, "requests", "Requests", MetricKind.COUNTER)
    two.create_family(7, "requests", "other text: the first stays", MetricKind.COUNTER)
    one.create_metric(2, 1, {"model": "x"}, None)
    two.create_metric(8, 7, {"model": "x"}, None)
    one.apply(2, MetricOp.INCREMENT, 2)
    two.apply(8, MetricOp.INCREMENT, 3)
    assert one.value(2) == two.value(8) == 5.0
    (family,) = registry.snapshot()
    assert (family.name, family.description, family.kind) == ("requests", "Requests", MetricKind.COUNTER)
    assert [(s.labels, s.value) for s in family.series] == [((("model", "x"),), 5.0)]
    first.close()
    assert registry.snapshot()[0].series[0].value == 5.0  # still the second model's
    with pytest.raises(NotFoundError, match="released"):
        one.value(2)
    second.close()
    assert registry.snapshot() == []


def test_histograms_count_into_cumulative_buckets() -> None:
    registry = CustomMetrics()
    owner = registry.model("m", 1).owner("m_0")
    owner.create_family(1, "latency", "L", MetricKind.HISTOGRAM)
    owner.create_metric(2, 1, {}, [1, 2.5])
    for value in (0.5, 1, 2, 3, math.inf):
        owner.apply(2, MetricOp.OBSERVE, value)
    with pytest.raises(InvalidArgumentError, match="cannot observe NaN"):
        owner.apply(2, MetricOp.OBSERVE, math.nan)
    (series,) = registry.snapshot()[0].series
    assert (series.buckets, series.bucket_counts, series.count) == ((1.0, 2.5), (2, 3, 5), 5)


def test_every_call_is_checked() -> None:
    registry = CustomMetrics()
    owner = registry.model("m", 1).owner("m_0")
    owner.create_family(1, "g", "G", MetricKind.GAUGE)
    with pytest.raises(InvalidArgumentError, match="metric family id in use"):
        owner.create_family(1, "h", "H", MetricKind.GAUGE)
    with pytest.raises(NotFoundError, match="unknown metric family"):
        owner.create_metric(2, 99, {}, None)
    owner.create_metric(2, 1, None, None)
    with pytest.raises(InvalidArgumentError, match="metric id in use"):
        owner.create_metric(2, 1, {"a": "b"}, None)
    with pytest.raises(NotFoundError, match="'MetricFamily' has been deleted"):
        owner.apply(3, MetricOp.SET, 1)
    with pytest.raises(InvalidArgumentError, match="a metric value must be a number"):
        owner.apply(2, MetricOp.SET, "1")
    with pytest.raises(InvalidArgumentError, match="unknown metric kind"):
        custom_metrics.kind_of(3)
    with pytest.raises(InvalidArgumentError, match="bucket boundaries must be finite numbers"):
        owner.create_family(4, "h", "H", MetricKind.HISTOGRAM)
        owner.create_metric(5, 4, {}, [math.nan])
    owner.delete_family(1)
    owner.delete_family(1)  # unknown ids are ignored: deletes may race with close
    assert [f.name for f in registry.snapshot()] == ["h"]


def test_the_server_holds_a_bounded_number_of_families() -> None:
    registry = CustomMetrics()
    per_owner = custom_metrics.MAX_OWNER_FAMILIES
    owners = [registry.model(f"m{i}", 1).owner("i") for i in range(custom_metrics.MAX_FAMILIES // per_owner + 1)]
    for index in range(custom_metrics.MAX_FAMILIES):
        owners[index // per_owner].create_family(index, f"f{index}", "F", MetricKind.GAUGE)
    last = owners[-1]
    limit = f"the server holds {custom_metrics.MAX_FAMILIES} custom metric families already"
    with pytest.raises(ResourceExhaustedError, match=limit):
        last.create_family(1, "one_more", "F", MetricKind.GAUGE)
    last.create_family(2, "f0", "F", MetricKind.GAUGE)  # an existing family is no new one
    with pytest.raises(AlreadyExistsError, match="already exists with kind GAUGE, not COUNTER"):
        last.create_family(3, "f1", "F", MetricKind.COUNTER)
    owners[0].close()
    last.create_family(4, "one_more", "F", MetricKind.GAUGE)  # released families make room
