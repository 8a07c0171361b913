"""The names, labels, texts, buckets and values model code gives its custom metrics, checked: Prometheus' grammar,
Triton's reserved prefix, and bounds on every size, so that no model can inject text into the exposition or a log.

Imports only `errors`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from seawall.errors import InvalidArgumentError

Labels = tuple[tuple[str, str], ...]

#: Prometheus metric and label names (label names starting with "__" are Prometheus' own).
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
#: Triton's own families ("nv_inference_count", ...) and any it may add: never a model's.
RESERVED_PREFIX = "nv_"
MAX_NAME_CHARS = 128
MAX_DESCRIPTION_CHARS = 1024
MAX_LABELS = 16
MAX_LABEL_VALUE_CHARS = 256
MAX_BUCKETS = 64
#: Characters text may not hold: controls (but tab and newline, which the exposition escapes) and Unicode line
#: separators, so a value can never start a line of its own in the exposition or a log.
_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def check_text(text: object, what: str, limit: int) -> str:
    if type(text) is not str:
        raise InvalidArgumentError(f"{what} must be a string")
    if len(text) > limit:
        raise InvalidArgumentError(f"{what} is longer than {limit} characters")
    if _FORBIDDEN.search(text):
        raise InvalidArgumentError(f"{what} holds control characters")
    return text


def check_name(name: object) -> str:
    if type(name) is not str or not name:
        raise InvalidArgumentError("Invalid metric name: a metric name must be a non-empty string")
    if len(name) > MAX_NAME_CHARS or not _NAME.match(name):
        raise InvalidArgumentError(
            f"Invalid metric name '{name[:MAX_NAME_CHARS]}': it must match [a-zA-Z_:][a-zA-Z0-9_:]* "
            f"and have at most {MAX_NAME_CHARS} characters"
        )
    if name.lower().startswith(RESERVED_PREFIX):
        raise InvalidArgumentError(
            f"Invalid metric name '{name}': names starting with '{RESERVED_PREFIX}' are Triton's own"
        )
    return name


def check_labels(labels: Mapping[str, str], histogram: bool) -> Labels:
    if not isinstance(labels, Mapping):
        raise InvalidArgumentError("Labels must be a dictionary.")
    if len(labels) > MAX_LABELS:
        raise InvalidArgumentError(f"a metric has at most {MAX_LABELS} labels")
    checked: list[tuple[str, str]] = []
    for key, value in labels.items():
        if type(key) is not str or not _LABEL.match(key) or key.startswith("__") or len(key) > MAX_NAME_CHARS:
            raise InvalidArgumentError(f"Invalid label name '{str(key)[:MAX_NAME_CHARS]}'")
        if histogram and key == "le":
            raise InvalidArgumentError("label name 'le' is reserved for the buckets of a histogram")
        checked.append((key, check_text(value, f"the value of label '{key}'", MAX_LABEL_VALUE_CHARS)))
    return tuple(sorted(checked))


def check_buckets(buckets: Sequence[float] | None, histogram: bool) -> tuple[float, ...]:
    if not histogram:
        if buckets is not None:
            raise InvalidArgumentError("Unexpected buckets found.")
        return ()
    if buckets is None:
        raise InvalidArgumentError("Missing required buckets.")
    if len(buckets) > MAX_BUCKETS:
        raise InvalidArgumentError(f"a histogram has at most {MAX_BUCKETS} buckets")
    bounds: list[float] = []
    for bound in buckets:
        if type(bound) not in (int, float) or not math.isfinite(bound):
            raise InvalidArgumentError("bucket boundaries must be finite numbers")
        if bounds and bound <= bounds[-1]:
            raise InvalidArgumentError("Bucket Boundaries must be strictly sorted")
        bounds.append(float(bound))
    return tuple(bounds)


def check_value(value: object) -> float:
    if type(value) not in (int, float):
        raise InvalidArgumentError("a metric value must be a number")
    return float(value)  # type: ignore[arg-type]  # int or float, checked above


def derived_names(name: str, histogram: bool) -> tuple[str, ...]:
    """The sample names a family prints (a histogram: `_bucket`, `_count`, `_sum`)."""
    if histogram:
        return (f"{name}_bucket", f"{name}_count", f"{name}_sum")
    return (name,)
