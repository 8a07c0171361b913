"""tritonserver's command line: one table of flags → frozen `Options`, logging set-up, and `main()`.

With its private modules (`_cli_parse`: argv and secret files; `_cli_options`: flags → Options and the checks
across them; `_cli_flags`: the table; `_cli_log`: logging), the only parser of argv, reader of os.environ and
secret files; the only caller of sys.exit. May import anything (composition root). Defaults come from the
dataclasses in `options.py`; nothing here repeats them.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from seawall import native
from seawall._cli_flags import BY_NAME, FLAGS, Flag
from seawall._cli_log import LevelSwitch, LineFormatter, banner_rows, configure_logging, escape, log_start_up
from seawall._cli_options import assemble, check, check_listeners, mutual_implies_tls
from seawall._cli_parse import (
    SECRET_ARGV_FLAGS,
    SECRET_ENV_FLAGS,
    CliError,
    HelpRequested,
    apply,
    convert,
    read_key_file,
    refuse_unsupported,
    scan,
    usage,
)
from seawall.app import serve
from seawall.backends.registry import available_backends
from seawall.core.log_settings import LogSettings
from seawall.errors import SeawallError
from seawall.listeners import BindError
from seawall.options import Options
from seawall.security import confinement
from seawall.security.report import Finding, assess

logger = logging.getLogger(__name__)

# the command line's surface: the flag table and log format live in private modules, used through here
__all__ = [
    "BY_NAME",
    "FLAGS",
    "CliError",
    "CommandLine",
    "Flag",
    "HelpRequested",
    "LevelSwitch",
    "LineFormatter",
    "banner_rows",
    "configure_logging",
    "escape",
    "format_report",
    "main",
    "parse_args",
    "parse_command_line",
    "read_key_file",
    "run",
    "usage",
]


@dataclass(frozen=True, slots=True)
class CommandLine:
    """The result of parsing: the Options plus warnings to log once logging is configured."""

    options: Options
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    security_report: bool = False  # --security-report: assess and exit
    # restricted-API secrets to forget once read: environment variables (--*-restricted-*-env) and argv flags
    secret_variables: tuple[str, ...] = ()
    secret_flags: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------- parsing


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> Options:
    """Options from tritonserver's flags in `argv` (without the program name) and the environment.

    Raises:
        CliError: an unknown flag, a bad value or an unsupported setting; the message names the flag.
        HelpRequested: `--help` was given.
    """
    return parse_command_line(argv, environ).options


def parse_command_line(argv: Sequence[str], environ: Mapping[str, str]) -> CommandLine:
    """Like `parse_args`, also returning the warnings to log once logging is configured.

    Raises:
        CliError, HelpRequested: as `parse_args`.
    """
    given = [(flag, convert(flag, raw)) for flag, raw in scan(argv)]
    refuse_unsupported(given)
    warnings: list[str] = []
    notes: list[str] = []
    options = apply(Options(), assemble(given, environ, warnings, notes))
    if not any(flag.name == "metrics-address" for flag, _ in given):
        options = options.replace(metrics=dataclasses.replace(options.metrics, address=options.http.address))
    options = mutual_implies_tls(options)
    report = any(flag.name == "security-report" for flag, _ in given)
    check(options, given, environ, report)
    check_listeners(options)
    variables = tuple(str(value) for flag, value in given if flag.name in SECRET_ENV_FLAGS)
    flags = tuple(f"--{flag.name}" for flag, _ in given if flag.name in SECRET_ARGV_FLAGS)
    return CommandLine(options, tuple(warnings), tuple(notes), report, variables, flags)


# ---------------------------------------------------------------------------------------------- running


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _version() -> str:
    try:
        return importlib.metadata.version("seawall")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def run(options: Options, log_settings: LogSettings | None = None) -> int:
    """Serve until a signal; the process exit status (1 when start-up fails, with Triton's message).
    Restricted-API key files are re-read on SIGHUP and when they change (`read_key_file`)."""
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            if not runner.run(serve(options, log_settings, read_key_file)):
                # a shutdown step was abandoned at --exit-timeout-secs or by a second signal, and what it left
                # may not end on a cancel: exit now (the kernel ends the stubs, backends/python/bootstrap.py)
                logging.shutdown()
                os._exit(0)
    except (SeawallError, OSError, ExceptionGroup) as exc:
        failure = _first_failure(exc)
        if isinstance(failure, SeawallError):
            print(f"error: creating server: {failure.code.value} - {failure.message}", file=sys.stderr)
        elif isinstance(failure, BindError):
            cause = failure.cause
            print(f"failed to start {failure.listener.bind_name} service: {cause.strerror or cause}", file=sys.stderr)
        elif isinstance(failure, OSError):
            print(f"failed to start service: {failure.strerror or failure}", file=sys.stderr)
        else:
            raise
        return 1
    return 0


def _first_failure(error: BaseException) -> BaseException:
    """The first SeawallError or OSError, looking inside exception groups (TaskGroup wraps errors)."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _first_failure(inner)
            if isinstance(found, SeawallError | OSError):
                return found
    return error


def format_report(findings: Sequence[Finding]) -> str:
    """The `--security-report` text: one line per risky setting, or a line saying there is none."""
    backends = f"backends available: {', '.join(available_backends())}"
    if not findings:
        return f"seawall security report: no risky setting is on\n{backends}"
    lines = [f"seawall security report: {len(findings)} risky setting(s)"]
    lines += [f"  {f.setting}: {f.risk}" for f in findings]
    return "\n".join([*lines, backends])


#: grpc's older TCP endpoints: the thread polling the completion queue does the socket IO itself instead of handing
#: it to EventEngine threads (measured on 2 cores: 22% less server CPU per 1 MiB gRPC inference, 2-4% for small
#: ones). grpc reads GRPC_EXPERIMENTS when it is first imported, which the listeners do lazily, after this; a value
#: the operator set (even empty: grpc's own default) wins.
GRPC_EXPERIMENTS = "-event_engine_listener,-event_engine_for_all_other_endpoints"


#: glibc's allocator serves blocks from 128 KiB up by mmap, at first, and gives the top of its heap back to the
#: kernel once 128 KiB of it are free (later thresholds follow the largest block freed, trimming at twice that):
#: a server that reads, copies and answers 1 MiB tensors for 32 clients took every page of each new buffer from
#: the kernel again (about 100-140 page faults per 1 MiB gRPC inference, ~5% of its CPU). Blocks below 8 MiB come
#: from the heap, and up to 32 MiB of free heap stay for the next requests (the process's RSS may keep that much).
MALLOC_MMAP_THRESHOLD = 8 << 20
MALLOC_TRIM_THRESHOLD = 32 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
#: variables with which an operator tunes glibc's allocator: any of them set, Seawall leaves it alone
MALLOC_VARIABLES = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def fast_defaults(environ: dict[str, str] | os._Environ[str]) -> bool:
    """The fast settings that only the environment or the C library can carry, unless the operator chose
    otherwise. True when glibc's allocator was tuned (not on another C library, or when an operator's variable
    says how)."""
    environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
    if any(name in environ for name in MALLOC_VARIABLES):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))


def main(argv: list[str] | None = None) -> None:
    """`seawall [flags]`: parse tritonserver's flags, configure logging, serve; exit 1 if start-up fails."""
    try:
        command_line = parse_command_line(sys.argv[1:] if argv is None else argv, os.environ)
    except HelpRequested as help_text:
        print(help_text)
        sys.exit(0)
    except CliError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    # the secrets are in Options now: nothing started from here on (stubs included) inherits or can read them
    confinement.forget_secrets(os.environ, command_line.secret_variables, command_line.secret_flags)
    confinement.make_non_dumpable()
    fast_defaults(os.environ)
    options = command_line.options
    findings = assess(options)
    if command_line.security_report:
        print(format_report(findings))
        sys.exit(1 if findings else 0)
    log_settings = LogSettings(options.log)
    try:
        configure_logging(log_settings, options.log.audit_file)
    except OSError as exc:
        print(f"error: cannot open --log-file or --audit-log-file: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)
    risks = [f"security: {f.setting}: {f.risk}" for f in findings]
    log_start_up(options, _version(), (*command_line.warnings, *risks), (*command_line.notes, native.describe()))
    status = run(options, log_settings)
    if status:
        sys.exit(status)
