"""Trace settings of the trace extension: global and per-model, read and changed at run time.

Imports `errors`. Values travel as lists of strings, the shape both protocols use; the trace file can only
be set at start-up (Triton's CVE-2024-0100 fix). Exporting traces is not done here.
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
        return self.get(model)


def _check_level(values: list[str]) -> list[str]:
    levels = [v for v in values if v in _LEVELS]  # unknown level names are ignored, as Triton does
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
