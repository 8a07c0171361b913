"""Custom metrics of Seawall's `triton_python_backend_utils` (a private helper of that module, which re-exports
`MetricFamily` and the sink setter): `MetricFamily`, its `Metric`s and the sink that carries their calls to the server.
"""

import collections as _collections
import enum as _enum
import itertools as _itertools
import weakref as _weakref

from seawall.backends.python.pb_utils._pb_tensors import TritonModelException

# -- custom metrics ------------------------------------------------------------------------------------------------
# The server keeps the values; the sink (set by the stub, or by the server for in-process models) carries each
# call there: family/metric/value wait for the server's answer, apply/delete do not. Objects the model drops are
# deleted on its next metric call (a __del__ must not write to the channel: it may run in the middle of a send).


class _MetricKind(_enum.IntEnum):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


_MetricKind.__name__ = _MetricKind.__qualname__ = "MetricKind"
_metric_ids = _itertools.count(1)
_dropped_metrics = _collections.deque()  # (sink, kind 0 family / 1 metric, id) of objects the model dropped


def _no_metrics_sink():
    raise TritonModelException("custom metrics are not available here")


_metrics_sink = [_no_metrics_sink]  # returns the sink of the calling model (the stub has one; in process: per model)


def _set_metrics_sink(sink):
    _metrics_sink[0] = sink


def _flush_dropped_metrics():
    while _dropped_metrics:
        sink, kind, id_ = _dropped_metrics.popleft()
        try:
            sink.delete(kind, id_)
        except Exception:
            pass  # the server has gone, or the model unloaded: nothing left to delete


class MetricFamily:
    """A family of metrics of one kind, shown on the server's /metrics beside Triton's own families."""

    COUNTER = _MetricKind.COUNTER
    GAUGE = _MetricKind.GAUGE
    HISTOGRAM = _MetricKind.HISTOGRAM

    def __init__(self, name, description, kind):
        if not isinstance(name, str) or not isinstance(description, str) or not isinstance(kind, _MetricKind):
            raise TypeError(
                "MetricFamily(name: str, description: str, kind: MetricFamily.COUNTER, GAUGE or HISTOGRAM): "
                f"invoked with name={name!r}, description={description!r}, kind={kind!r}"
            )
        _flush_dropped_metrics()
        self._sink = _metrics_sink[0]()
        self._id = next(_metric_ids)
        self._kind = kind
        self._metrics = []  # weak references: the metrics cleared when this family goes
        try:
            self._sink.family(self._id, name, description, int(kind))
        except Exception as exc:
            self._sink = None
            raise TritonModelException(f"Error when creating MetricFamily: {exc}") from None

    def Metric(self, labels=None, buckets=None):
        """A metric of this family with `labels` (str → str); histograms need `buckets` (a list)."""
        if labels is not None and not isinstance(labels, dict):
            raise TritonModelException("Failed to create metric. Labels must be a dictionary.")
        if buckets is not None:
            if not isinstance(buckets, list):
                raise TritonModelException("Failed to create metric. Buckets must be a list.")
            if self._kind != _MetricKind.HISTOGRAM:
                raise TritonModelException("Failed to create metric. Unexpected buckets found.")
            buckets = [_metric_number(bound) for bound in buckets]
        elif self._kind == _MetricKind.HISTOGRAM:
            raise TritonModelException("Failed to create metric. Missing required buckets.")
        labels = dict(labels or {})
        for key, value in labels.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TritonModelException("Error when creating Metric: label names and values must be strings")
        _flush_dropped_metrics()
        if self._sink is None:
            raise TritonModelException("Error when creating Metric: the MetricFamily has been deleted")
        metric = _Metric._new(self._sink, next(_metric_ids), self._kind)
        try:
            self._sink.metric(metric._id, self._id, labels, buckets)
        except Exception as exc:
            metric._cleared = True
            raise TritonModelException(f"Error when creating Metric: {exc}") from None
        self._metrics.append(_weakref.ref(metric))
        return metric

    def __del__(self):
        sink, self._sink = getattr(self, "_sink", None), None
        if sink is None:
            return
        for ref in self._metrics:
            metric = ref()
            if metric is not None:
                metric._cleared = True  # the server deletes them with the family
        _dropped_metrics.append((sink, 0, self._id))


def _metric_number(value):
    if isinstance(value, str | bytes) or value is None:
        raise TypeError(f"a metric value must be a number, not {type(value).__name__}")
    return float(value)


_KIND_NAMES = tuple(f"TRITONSERVER_METRIC_KIND_{kind}" for kind in ("COUNTER", "GAUGE", "HISTOGRAM"))
_ALLOWED_OPS = {0: (0,), 1: (0, 1), 2: (2,)}  # kind → ops: 0 increment, 1 set, 2 observe
_OP_TEXT = (("increment", "Increment"), ("set", "Set"), ("observe", "Observe"))


class _Metric:
    """One series of a MetricFamily (made by `MetricFamily.Metric`)."""

    def __init__(self, *args, **kwargs):
        raise TypeError("Metric objects are made by MetricFamily.Metric(labels=..., buckets=...)")

    @classmethod
    def _new(cls, sink, id_, kind):
        metric = object.__new__(cls)
        metric._sink = sink
        metric._id = id_
        metric._kind = int(kind)
        metric._cleared = False
        return metric

    def _check(self, verb):
        if self._cleared:
            raise TritonModelException(
                f"Failed to {verb} metric value: Invalid metric operation as the corresponding 'MetricFamily' has "
                "been deleted. The 'MetricFamily' object should be deleted AFTER its corresponding 'Metric' "
                "objects have been deleted."
            )

    def _apply(self, op, value):
        if _dropped_metrics:
            _flush_dropped_metrics()
        verb, name = _OP_TEXT[op]
        value = _metric_number(value)
        self._check(verb)
        kind = self._kind
        if op not in _ALLOWED_OPS[kind]:
            raise TritonModelException(f"Failed to {verb} metric value: {_KIND_NAMES[kind]} does not support {name}")
        if kind == 0 and not value >= 0:
            raise TritonModelException(
                f"Failed to increment metric value: {_KIND_NAMES[0]} can only be incremented monotonically by "
                "non-negative values."
            )
        if op == 2 and value != value:
            raise TritonModelException("Failed to observe metric value: a histogram cannot observe NaN")
        self._sink.apply(self._id, op, value)

    def increment(self, value):
        """Add `value` (counters: not negative; gauges: any)."""
        self._apply(0, value)

    def set(self, value):
        """Set a gauge."""
        self._apply(1, value)

    def observe(self, value):
        """Count `value` into a histogram."""
        self._apply(2, value)

    def value(self):
        """The value of a counter or gauge, as the server holds it."""
        _flush_dropped_metrics()
        self._check("get")
        if self._kind == 2:
            raise TritonModelException(f"Failed to get metric value: {_KIND_NAMES[2]} does not support Value")
        try:
            return self._sink.value(self._id)
        except Exception as exc:
            raise TritonModelException(f"Failed to get metric value: {exc}") from None

    def __del__(self):
        if not getattr(self, "_cleared", True):
            self._cleared = True
            _dropped_metrics.append((self._sink, 1, self._id))


_Metric.__name__ = _Metric.__qualname__ = "Metric"
