"""Per model-version statistics, recorded on the event loop thread with a monotonic clock.

Imports only `core.types`. Snapshots feed the statistics extension and the Prometheus metrics.
"""

from __future__ import annotations

import time

from seawall.core.types import DURATION_STATISTICS, BatchStatistics, Duration, ModelStatistics

FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")
#: the durations `record_success` adds to, in its arguments' order
_SUCCESS_KINDS = ("success", "queue", "compute_input", "compute_infer", "compute_output")


class StatsRecorder:
    """Cumulative counters of one model version. Owned by its ModelVersion; event loop thread only."""

    __slots__ = (
        "name",
        "version",
        "last_inference_ms",
        "inference_count",
        "execution_count",
        "pending",
        "_durations",
        "_success_entries",
        "_failures",
        "_batches",
    )

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        self.last_inference_ms = 0
        self.inference_count = 0
        self.execution_count = 0
        self.pending = 0
        # kind → [count, ns]
        self._durations: dict[str, list[int]] = {k: [0, 0] for k in DURATION_STATISTICS}
        self._success_entries = tuple(self._durations[k] for k in _SUCCESS_KINDS)
        self._failures = dict.fromkeys(FAILURE_REASONS, 0)
        # batch size → [count, input ns, infer ns, output ns]
        self._batches: dict[int, list[int]] = {}

    def _add(self, kind: str, ns: int) -> None:
        entry = self._durations[kind]
        entry[0] += 1
        entry[1] += ns

    def record_execution(
        self, batch_size: int, input_ns: int = 0, infer_ns: int = 0, output_ns: int = 0, inferences: int | None = None
    ) -> None:
        """`inferences`: the batch's requests that count as inferences, when not all do (a sequence batcher's null
        requests count in the batch size only)."""
        self.execution_count += 1
        self.inference_count += batch_size if inferences is None else inferences
        entry = self._batches.setdefault(batch_size, [0, 0, 0, 0])
        entry[0] += 1
        entry[1] += input_ns
        entry[2] += infer_ns
        entry[3] += output_ns

    def record_success(self, request_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        # `_add` of each, written out: every request and every ensemble step records one (half the time of five calls)
        success, queue, compute_input, compute_infer, compute_output = self._success_entries
        success[0] += 1
        success[1] += request_ns
        queue[0] += 1
        queue[1] += queue_ns
        compute_input[0] += 1
        compute_input[1] += input_ns
        compute_infer[0] += 1
        compute_infer[1] += infer_ns
        compute_output[0] += 1
        compute_output[1] += output_ns
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_cache_hit(self, request_ns: int, lookup_ns: int) -> None:
        """A response served from the cache: a success and a (zero) queue wait, never an execution."""
        self._add("success", request_ns)
        self._add("queue", 0)
        self._add("cache_hit", lookup_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_cache_miss(self, ns: int) -> None:
        """A lookup that found nothing, and the insert of the response then computed (`ns`: both together)."""
        self._add("cache_miss", ns)

    def record_failure(self, reason: str, request_ns: int) -> None:
        self._add("fail", request_ns)
        self._failures[reason] += 1
        self.last_inference_ms = time.time_ns() // 1_000_000

    def snapshot(self, response_cache: bool = False) -> ModelStatistics:
        """The counters now; `response_cache` says the version uses the server's response cache."""
        d = {k: Duration(count, ns) for k, (count, ns) in self._durations.items()}
        return ModelStatistics(
            name=self.name,
            version=self.version,
            last_inference=self.last_inference_ms,
            inference_count=self.inference_count,
            execution_count=self.execution_count,
            **d,
            response_cache=response_cache,
            failures_by_reason=tuple(self._failures.items()),
            pending_request_count=self.pending,
            batch_stats=tuple(
                BatchStatistics(size, Duration(n, i), Duration(n, c), Duration(n, o))
                for size, (n, i, c, o) in sorted(self._batches.items())
            ),
        )
