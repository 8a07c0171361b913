"""Log lines for the command line: Triton's prefixes, escaping that keeps one record on one line, the banner.

Part of the command line, private to `cli.py` (the only place that configures logging).
Imports only `options`.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from collections.abc import Sequence

from seawall.backends.registry import available_backends
from seawall.core import text_table
from seawall.core.log_settings import LogSettings
from seawall.listeners import GRPC, LISTENERS, enabled
from seawall.options import Options
from seawall.security.report import is_loopback

logger = logging.getLogger("seawall.cli")

#: Every character that could end a line, move the cursor, or reorder text on a terminal, as an escape:
#: C0 and C1 controls (\n, \r, ESC, NEL...), DEL, Unicode line/paragraph separators and bidi controls.
#: The backslash is escaped too, so an escaped sequence can't be forged.
_ESCAPES: dict[int, str] = {
    **{code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))},
    **{code: f"\\u{code:04x}" for code in (0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F))},
    **{code: f"\\u{code:04x}" for code in range(0x2066, 0x206A)},
    ord("\\"): "\\\\",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def escape(text: str) -> str:
    """`text` with control characters escaped, so a client-supplied value can never start a log line."""
    return text.translate(_ESCAPES)


class LineFormatter(logging.Formatter):
    """Triton's prefixes: `default` is `I1125 19:05:39.244314 <pid> <file>:<line>] message`, `ISO8601` is
    `2024-05-20T20:03:26Z I <pid> <file>:<line>] message`. The message and any traceback are escaped."""

    def __init__(self, settings: LogSettings) -> None:
        super().__init__()
        self._settings = settings  # read on every record: the logging extension changes the format live

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        level = "E" if record.levelno >= logging.ERROR else "W" if record.levelno >= logging.WARNING else "I"
        if self._settings.format == "ISO8601":
            prefix = f"{when:%Y-%m-%dT%H:%M:%SZ} {level}"
        else:
            prefix = f"{level}{when:%m%d %H:%M:%S.%f}"
        return f"{prefix} {record.process} {record.filename}:{record.lineno}] {escape(text)}"


class LevelSwitch(logging.Filter):
    """Triton's separate switches --log-info, --log-warning, --log-error; DEBUG needs --log-verbose > 0."""

    def __init__(self, settings: LogSettings) -> None:
        super().__init__()
        self._log = settings  # read on every record: the logging extension changes levels live

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return self._log.error
        if record.levelno >= logging.WARNING:
            return self._log.warning
        if record.levelno >= logging.INFO:
            return self._log.info
        return self._log.verbose > 0


#: Control characters only: an audit line's fields are JSON-quoted already, so its backslashes are escapes
#: that must stay as they are (doubling them would let a quoted field end early).
_AUDIT_ESCAPES = {code: text for code, text in _ESCAPES.items() if code != ord("\\")}


class AuditFormatter(logging.Formatter):
    """`2024-05-20T20:03:26.123456Z AUDIT <pid>] caller="..." action="..." ...`: one fixed format, whatever
    the logging extension sets (`log_format` changes the other lines only)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        return f"{when:%Y-%m-%dT%H:%M:%S.%fZ} AUDIT {record.process}] {record.getMessage().translate(_AUDIT_ESCAPES)}"


class _OwnedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that owns its stream (the --log-file) and closes it with itself."""

    def close(self) -> None:
        self.acquire()
        try:
            self.flush()
            self.stream.close()
        finally:
            self.release()
        super().close()


def _append_handler(path: str, flags: int = 0) -> logging.Handler:
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | flags, 0o600)
    return _OwnedStreamHandler(os.fdopen(descriptor, "a", encoding="utf-8", errors="backslashreplace"))


def _replace_handlers(logger_: logging.Logger, handler: logging.Handler) -> None:
    for previous in list(logger_.handlers):
        logger_.removeHandler(previous)
        previous.close()
    logger_.addHandler(handler)
    logger_.propagate = False  # a library that configures the root logger must not print our lines twice


def configure_logging(log: LogSettings, audit_file: str = "") -> None:
    """Send the `seawall` logger to stdout, or append to `log.file` (created 0600), with Triton's prefixes.

    Audit lines (`seawall.audit`) get their own sink, which no run-time log setting filters or reformats:
    `audit_file` (created 0600, never through a symlink), else the log file, else stderr.

    Raises:
        OSError: the log file or the audit file cannot be opened.
    """
    if audit_file:
        audit: logging.Handler = _append_handler(audit_file, os.O_NOFOLLOW)
    elif log.file:
        audit = _append_handler(log.file)
    else:
        audit = logging.StreamHandler(sys.stderr)
    audit.setFormatter(AuditFormatter())
    handler = _append_handler(log.file) if log.file else logging.StreamHandler(sys.stdout)
    handler.setFormatter(LineFormatter(log))
    handler.addFilter(LevelSwitch(log))
    root = logging.getLogger("seawall")
    _replace_handlers(root, handler)
    root.setLevel(logging.DEBUG)  # LevelSwitch decides, so that run-time changes of verbosity apply
    audit_logger = logging.getLogger("seawall.audit")
    _replace_handlers(audit_logger, audit)
    audit_logger.setLevel(logging.INFO)


def banner_rows(options: Options, version: str) -> list[tuple[str, str]]:
    """Triton's start-up option table, plus Seawall's listeners. Restriction values never appear."""
    repository = options.repository
    rows = [("server_id", options.server_id), ("server_version", version)]
    rows += [(f"model_repository_path[{index}]", path) for index, path in enumerate(repository.paths)]
    rows += [
        ("model_control_mode", f"MODE_{repository.control_mode.upper()}"),
        ("strict_model_config", str(int(not repository.auto_complete_config))),
        ("model_config_name", repository.config_name),
        ("rate_limit", "EXEC_COUNT" if options.rate_limit == "execution_count" else "OFF"),
        # Triton's own rendering (its missing comma included)
        *(
            (f"rate_limit_resource[{index}]", f'{{"name":"{name}", "count":{count} "device":{device}}}')
            for index, (name, count, device) in enumerate(options.rate_limit_resources)
        ),
        ("strict_readiness", str(int(repository.strict_readiness))),
        ("exit_on_error", str(int(repository.exit_on_error))),
        ("exit_timeout", str(options.exit_timeout_secs)),
        ("cache_enabled", str(int(bool(options.backends.cache_config)))),
        ("backend_directory", options.backends.backend_directory),
        ("backends", ", ".join(available_backends())),
    ]
    for listener in LISTENERS:
        settings = listener.settings(options)
        address, port = settings.address, settings.port
        where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        rows.append((f"{listener.banner}_service", where if settings.allow else "disabled"))
    for listener in LISTENERS:
        tls = listener.tls(options) if listener.tls else None
        if tls is not None and listener.settings(options).allow and (tls.use_ssl or tls.use_ssl_mutual):
            rows.append((f"{listener.banner}_tls", "mutual" if tls.use_ssl_mutual else "on"))
    for name, restrictions in (
        ("http_restricted_api", options.http.restricted),
        ("grpc_restricted_protocol", options.grpc.restricted),
    ):
        for restriction in restrictions:
            rows.append((name, f"{','.join(restriction.categories)}:{restriction.key}=<redacted>"))
    return rows


def log_start_up(options: Options, version: str, warnings: Sequence[str], notes: Sequence[str]) -> None:
    """Log the option table, the command line's warnings, and each risky setting that is on, once."""
    for line in text_table.render(("Option", "Value"), banner_rows(options, version)):
        logger.info("%s", line)  # one record per row: a record never spans lines
    for warning in warnings:
        logger.warning("%s", warning)
    for note in notes:
        logger.info("%s", note)
    for listener in enabled(options):
        address = listener.address(options)
        if is_loopback(address):
            logger.info(
                "%s service binds %s only; set --%s-address to expose it", listener.label, address, listener.flag
            )
        elif listener.restricted is None:
            logger.warning("%s service listens on %s; it has no access restriction", listener.label, address)
        elif not listener.restricted(options):
            restriction_flag = "--grpc-restricted-protocol" if listener is GRPC else "--http-restricted-api"
            logger.warning(
                "%s service listens on %s and no %s is set: every API is open to anyone who can reach it",
                listener.label,
                address,
                restriction_flag,
            )
