"""Trace settings of the trace extension: global and per-model, read and changed at run time, and which
requests they sample.

Imports `errors`. Values travel as lists of strings, the shape both protocols use; the trace file can only
be set at start-up (Triton's CVE-2024-0100 fix). Writing traces is `trace_file`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping

from seawall.errors import InvalidArgumentError, UnsupportedError

Settings = dict[str, list[str]]

_LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
_INTEGERS = {"trace_rate": (0, 2**32 - 1), "trace_count": (-1, 2**31 - 1), "log_frequency": (0, 2**32 - 1)}


class TraceSettings:
    """The global trace settings and the per-model overrides. Event loop thread only."""

    def __init__(
        self,
        level: tuple[str, ...] = ("OFF",),
        rate: int = 1000,
        count: int = -1,
        file: str = "",
        log_frequency: int = 0,
    ) -> None:
        self._global: Settings = {
            "trace_level": list(level),
            "trace_rate": [str(rate)],
            "trace_count": [str(count)],
            "log_frequency": [str(log_frequency)],
            "trace_file": [file],
            "trace_mode": ["triton"],
        }
        self._models: dict[str, Settings] = {}
        # sampling state per scope ("" = the global settings, else a model with overrides); reset by update()
        self._seen: dict[str, int] = {}  # requests counted towards trace_rate
        self._left: dict[str, int] = {}  # traces still to take when trace_count is not -1

    def is_on(self) -> bool:
        """Whether any request could be traced now (cheap: the inference path asks it on every request)."""
        return self._global["trace_level"] != ["OFF"] or bool(self._models)

    def sample(self, model: str) -> Settings | None:
        """The effective settings when this request of `model` is to be traced, else None: Triton's rule, every
        trace_rate-th request while trace_count lasts, counted per settings scope."""
        scope = model if model in self._models else ""
        settings = self.get(scope)
        if "TIMESTAMPS" not in settings["trace_level"] or not settings["trace_file"][0]:
            return None
        rate, count = int(settings["trace_rate"][0]), int(settings["trace_count"][0])
        left = self._left.get(scope, count)
        if rate == 0 or left == 0:
            return None
        self._seen[scope] = seen = self._seen.get(scope, 0) + 1
        if seen % rate:
            return None
        if left > 0:
            self._left[scope] = left - 1
        return settings

    def exhausted(self, model: str) -> bool:
        """Whether the trace_count of `model`'s scope has been used up (its traces are then written out)."""
        return self._left.get(model if model in self._models else "", -1) == 0

    def get(self, model: str = "") -> Settings:
        """The effective settings: the model's overrides over the global ones."""
        merged = {k: list(v) for k, v in self._global.items()}
        merged.update({k: list(v) for k, v in self._models.get(model, {}).items()})
        return merged

    def update(self, changes: Mapping[str, list[str] | None], model: str = "") -> Settings:
        """Apply `changes` (None clears a model override) and return the new effective settings.

        Raises:
            UnsupportedError: a change names `trace_file`.
            InvalidArgumentError: a value is malformed; nothing is changed then.
        """
        if "trace_file" in changes:
            raise UnsupportedError("trace file location can not be updated through network protocol")
        checked: dict[str, list[str] | None] = {}
        for key, values in changes.items():
            if key == "trace_level":
                checked[key] = None if values is None else _check_level(values)
            elif key in _INTEGERS:
                checked[key] = None if values is None else [_check_integer(key, values)]
            # unknown keys are ignored, as Triton does
        target = self._models.setdefault(model, {}) if model else self._global
        candidate = {**self.get(model), **{k: v for k, v in checked.items() if v is not None}}
        if candidate["trace_level"] != ["OFF"] and not candidate["trace_file"][0]:
            raise InvalidArgumentError("Attempting to set invalid trace setting :trace file name is not given")
        for key, value in checked.items():
            if value is None:
                if model:
                    target.pop(key, None)
            else:
                target[key] = value
        for scope in list(self._seen) + list(self._left) if not model else [model]:
            self._seen.pop(scope, None)  # new settings count afresh, as Triton's new setting object does
            self._left.pop(scope, None)
        return self.get(model)


def _check_level(values: list[str]) -> list[str]:
    levels = [v for v in values if v in _LEVELS]  # unknown level names are ignored, as Triton does
    if "TENSORS" in levels:
        raise UnsupportedError("trace level 'TENSORS' is not supported by Seawall")
    if "OFF" in levels and len(levels) > 1:
        raise InvalidArgumentError("Expect only one trace level 'OFF' is specified")
    return levels or ["OFF"]


def _check_integer(key: str, values: list[str]) -> str:
    if len(values) != 1:
        raise InvalidArgumentError(f"expect only 1 value for '{key}'")
    text = values[0]
    low, high = _INTEGERS[key]
    try:
        number = int(text, 10)
    except ValueError:
        raise InvalidArgumentError(f"Unable to parse '{key}', got: {text[:64]}") from None
    if not low <= number <= high:
        raise InvalidArgumentError(f"Unable to parse '{key}'. Expecting value >= {low}, got:{text[:64]}")
    return str(number)
