"""The Prometheus metrics frontend: `GET /metrics` renders per-model families read from the core per scrape.

Imports `core.server`, `core.types`, prometheus_client and `http.server`. Each frontend owns its own
CollectorRegistry (no global REGISTRY, no module-level metrics).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from seawall.core.server import FamilySnapshot, InferenceServer, MetricKind
from seawall.core.types import ModelStatistics
from seawall.frontends.http.body import BodyBudget
from seawall.frontends.http.server import HttpRequest, HttpResponse, HttpServer, OverHttpServer, error_response
from seawall.options import Options
from seawall.security import tls

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; charset=utf-8"
FAILURE_REASONS = ("CANCELED", "BACKEND", "OTHER", "REJECTED")  # Triton 2.51 order

#: (name, type, HELP text) of the per-model counts, in Triton's order.
_COUNT_FAMILIES = (
    ("nv_inference_request_success", "counter", "Number of successful inference requests, all batch sizes"),
    ("nv_inference_request_failure", "counter", "Number of failed inference requests, all batch sizes"),
    ("nv_inference_count", "counter", "Number of inferences performed (does not include cached requests)"),
    (
        "nv_inference_exec_count",
        "counter",
        "Number of model executions performed (does not include cached requests)",
    ),
)
#: (name, statistics field, HELP text) of the latency counters (`counter_latencies`).
_LATENCY_FAMILIES = (
    (
        "nv_inference_request_duration_us",
        "success",
        "Cumulative inference request duration in microseconds (includes cached requests)",
    ),
    (
        "nv_inference_queue_duration_us",
        "queue",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
    ),
    (
        "nv_inference_compute_input_duration_us",
        "compute_input",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "compute_infer",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
    ),
    (
        "nv_inference_compute_output_duration_us",
        "compute_output",
        "Cumulative inference compute output duration in microseconds (does not include cached requests)",
    ),
)
#: (name, statistics field, count or microseconds, HELP text) of the per-model response-cache counters, emitted
#: only for models that use the cache (Triton's order)
_CACHE_FAMILIES = (
    ("nv_cache_num_hits_per_model", "cache_hit", "count", "Number of cache hits per model"),
    ("nv_cache_hit_duration_per_model", "cache_hit", "us", "Total cache hit duration per model, in microseconds"),
    ("nv_cache_num_misses_per_model", "cache_miss", "count", "Number of cache misses per model"),
    (
        "nv_cache_miss_duration_per_model",
        "cache_miss",
        "us",
        "Total cache miss (insert+lookup) duration per model, in microseconds",
    ),
)
_PENDING = (
    "nv_inference_pending_request_count",
    "gauge",
    "Instantaneous number of pending requests awaiting execution per-model.",
)


def _family(name: str, kind: str, documentation: str) -> Metric:
    return Metric(name, documentation, kind)


class ModelStatisticsCollector(Collector):
    """Turns `server.model_statistics()` into Triton's per-model families on every scrape."""

    def __init__(self, server: InferenceServer, counter_latencies: bool) -> None:
        self._server = server
        self._counter_latencies = counter_latencies

    def collect(self) -> Iterator[Metric]:
        stats = self._server.model_statistics()
        success, failure, count, executions = (_family(*spec) for spec in _COUNT_FAMILIES)
        for entry in stats:
            labels = {"model": entry.name, "version": entry.version}
            success.add_sample(success.name, labels, entry.success.count)
            failures = dict(entry.failures_by_reason)
            for reason in FAILURE_REASONS:
                failure.add_sample(failure.name, {**labels, "reason": reason}, failures.get(reason, 0))
            count.add_sample(count.name, labels, entry.inference_count)
            executions.add_sample(executions.name, labels, entry.execution_count)
        yield from (success, failure, count, executions)
        if self._counter_latencies:
            yield from self._latencies(stats)
        cached = [entry for entry in stats if entry.response_cache]
        if cached:
            yield from _cache_families(cached)
        pending = _family(*_PENDING)
        for entry in stats:
            pending.add_sample(pending.name, _labels(entry), entry.pending_request_count)
        yield pending

    def _latencies(self, stats: list[ModelStatistics]) -> Iterator[Metric]:
        for name, field, documentation in _LATENCY_FAMILIES:
            family = _family(name, "counter", documentation)
            for entry in stats:
                family.add_sample(name, _labels(entry), getattr(entry, field).ns // 1000)
            yield family


class CustomMetricsCollector(Collector):
    """The families model code created (pb_utils.MetricFamily), after Triton's, in creation order. A histogram
    prints `_count`, `_sum`, then its `_bucket` lines, as Triton does; names and labels were validated when
    they were created, and every text is escaped here."""

    def __init__(self, server: InferenceServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        for family in self._server.custom_metric_families():
            yield _custom_family(family)


class ResidencyCollector(Collector):
    """Seawall's own counters of load on request and `--max-loaded-models` eviction (only when one is on)."""

    def __init__(self, server: InferenceServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        counts = self._server.residency_counts()
        if counts is None:
            return
        for (name, documentation), value in zip(_RESIDENCY_FAMILIES, counts, strict=True):
            family = _family(name, "counter", documentation)
            family.add_sample(name, {}, value)
            yield family


_RESIDENCY_FAMILIES = (
    ("seawall_model_loads_on_request", "Number of models loaded because a request asked for them"),
    ("seawall_model_evictions", "Number of models unloaded to make room under --max-loaded-models"),
)


def _custom_family(family: FamilySnapshot) -> Metric:
    metric = _family(family.name, family.kind.value, family.description)
    name = family.name
    for series in family.series:
        labels = dict(series.labels)
        if family.kind is not MetricKind.HISTOGRAM:
            metric.add_sample(name, labels, series.value)
            continue
        metric.add_sample(f"{name}_count", labels, series.count)
        metric.add_sample(f"{name}_sum", labels, series.total)
        bounds = [_format_value(bound) for bound in series.buckets] + ["+Inf"]
        for bound, count in zip(bounds, series.bucket_counts, strict=True):
            metric.add_sample(f"{name}_bucket", {**labels, "le": bound}, count)
    return metric


def _cache_families(stats: list[ModelStatistics]) -> Iterator[Metric]:
    for name, field, unit, documentation in _CACHE_FAMILIES:
        family = _family(name, "counter", documentation)
        for entry in stats:
            duration = getattr(entry, field)
            family.add_sample(name, _labels(entry), duration.count if unit == "count" else duration.ns // 1000)
        yield family


def _labels(entry: ModelStatistics) -> dict[str, str]:
    return {"model": entry.name, "version": entry.version}


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_order(item: tuple[str, str]) -> tuple[bool, str]:
    return item[0] == "le", item[0]


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1 << 53:
        return str(int(value))
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(registry: CollectorRegistry) -> bytes:
    """Prometheus text format 0.0.4, with Triton's family names (no `_total` suffix added to counters)."""
    lines: list[str] = []
    for family in registry.collect():
        lines.append(f"# HELP {family.name} {_escape_help(family.documentation)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            # sorted by name, a histogram's `le` last (as Triton prints it)
            ordered = sorted(sample.labels.items(), key=_label_order)
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in ordered)
            text = f"{{{labels}}}" if labels else ""
            lines.append(f"{sample.name}{text} {_format_value(sample.value)}")
    return ("\n".join(lines) + "\n").encode() if lines else b""


class MetricsFrontend(OverHttpServer):
    """Serves `/metrics` for `server` on `options.metrics` (address defaults to the HTTP address)."""

    def __init__(self, server: InferenceServer, options: Options, budget: BodyBudget | None = None) -> None:
        config = dict(options.metrics.config)
        counter_latencies = config.get("counter_latencies", "true").strip().lower() not in ("false", "0")
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(ModelStatisticsCollector(server, counter_latencies))
        self._registry.register(CustomMetricsCollector(server))
        self._registry.register(ResidencyCollector(server))
        address = options.metrics.address or options.http.address
        context = tls.listener_ssl_context(options.metrics.tls, "metrics")
        self._http = HttpServer(
            self.handle,
            options.limits,
            address,
            options.metrics.port,
            ssl_context=context,
            head_check=self.check_head,
            budget=budget,
        )

    def check_head(self, method: str, path: str, headers: Mapping[str, str]) -> HttpResponse | None:
        """Other paths 404, other methods 405, decided on the head (`server.HeadCheck`)."""
        if path not in ("/metrics", "/metrics/"):
            return error_response(404, "Not Found")
        if method != "GET":
            return error_response(405, "Method Not Allowed")
        return None

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """`GET /metrics` → the exposition; other paths 404, other methods 405 (never restricted)."""
        refused = self.check_head(request.method, request.path, request.headers)
        if refused is not None:
            return refused
        try:
            return HttpResponse(200, (render(self._registry),), CONTENT_TYPE)
        except Exception:
            logger.exception("failed to collect metrics")
            return error_response(500, "internal error")
