"""Log settings of the logging extension: levels and format change at run time; the file never does.

Imports `errors` and `options`. The CLI's log handler reads this object on every record, so a change
applies at once (Triton's CVE-2024-0087 fix: the log file is set on the command line only).
"""

from __future__ import annotations

from collections.abc import Mapping

from seawall.errors import InvalidArgumentError, UnsupportedError
from seawall.options import LogOptions

LogValue = bool | int | str

_BOOLEANS = ("log_info", "log_warning", "log_error")
_FORMATS = ("default", "ISO8601")
_MAX_VERBOSE = 2**31 - 1


class LogSettings:
    """The live log settings of one server. Read by log handlers (any thread), written on the event loop."""

    def __init__(self, options: LogOptions) -> None:
        self.info = options.info
        self.warning = options.warning
        self.error = options.error
        self.verbose = options.verbose
        self.format: str = options.format
        self.file = options.file  # start-up only

    def as_dict(self) -> dict[str, LogValue]:
        return {
            "log_file": self.file,
            "log_info": self.info,
            "log_warning": self.warning,
            "log_error": self.error,
            "log_verbose_level": self.verbose,
            "log_format": self.format,
        }

    def update(self, changes: Mapping[str, LogValue | None]) -> dict[str, LogValue]:
        """Apply `changes` (None values and unknown keys are skipped, as in Triton); all or nothing.

        Raises:
            UnsupportedError: `log_file` is given.
            InvalidArgumentError: a value has the wrong type or an unknown format.
        """
        if changes.get("log_file") is not None:
            raise UnsupportedError("log file location can not be updated through network protocol")
        checked: dict[str, LogValue] = {}
        for key in _BOOLEANS:
            value = changes.get(key)
            if value is not None:
                if not isinstance(value, bool):
                    raise InvalidArgumentError(f"expect boolean for '{key}'")
                checked[key] = value
        verbose = changes.get("log_verbose_level")
        if verbose is not None:
            if isinstance(verbose, bool) or not isinstance(verbose, int) or not 0 <= verbose <= _MAX_VERBOSE:
                raise InvalidArgumentError("expect int32 for 'log_verbose_level'")
            checked["log_verbose_level"] = verbose
        log_format = changes.get("log_format")
        if log_format is not None:
            if not isinstance(log_format, str):
                raise InvalidArgumentError("expect string for 'log_format'")
            if log_format not in _FORMATS:
                raise InvalidArgumentError(f"invalid argument for --log_format, got: {log_format[:32]!r}")
            checked["log_format"] = log_format
        self.info = bool(checked.get("log_info", self.info))
        self.warning = bool(checked.get("log_warning", self.warning))
        self.error = bool(checked.get("log_error", self.error))
        self.verbose = int(checked.get("log_verbose_level", self.verbose))
        self.format = str(checked.get("log_format", self.format))
        return self.as_dict()
