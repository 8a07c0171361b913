"""tritonserver's command line: one table of flags → frozen `Options`, logging set-up, and `main()`.

The only parser of argv, reader of os.environ and secret files, and caller of sys.exit. May import anything
(composition root). Defaults come from the dataclasses in `options.py`; nothing here repeats them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib.metadata
import logging
import os
import re
import sys
import sysconfig
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from seawall._cli_flags import BY_NAME, FLAGS, BadValue, Flag, parse_restriction
from seawall._cli_log import LevelSwitch, LineFormatter, banner_rows, configure_logging, escape, log_start_up
from seawall.app import serve
from seawall.backends.registry import available_backends
from seawall.core.log_settings import LogSettings
from seawall.errors import SeawallError
from seawall.listeners import SAGEMAKER, BindError, enabled
from seawall.options import Limits, Options, Restriction
from seawall.security import confinement, tls
from seawall.security.report import Finding, assess, is_model_repository_guarded, model_repository_listeners

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

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


class CliError(Exception):
    """A command-line mistake: the message goes to stderr and the process exits 1."""


class HelpRequested(Exception):
    """`--help` was given; the argument is the usage text."""


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
    given = [(flag, _convert(flag, raw)) for flag, raw in _scan(argv)]
    _refuse_unsupported(given)
    warnings: list[str] = []
    notes: list[str] = []
    options = _apply(Options(), _assemble(given, environ, warnings, notes))
    if not any(flag.name == "metrics-address" for flag, _ in given):
        options = options.replace(metrics=dataclasses.replace(options.metrics, address=options.http.address))
    options = _mutual_implies_tls(options)
    _check(options, given, environ)
    _check_listeners(options)
    report = any(flag.name == "security-report" for flag, _ in given)
    variables = tuple(str(value) for flag, value in given if flag.name in _SECRET_ENV_FLAGS)
    flags = tuple(f"--{flag.name}" for flag, _ in given if flag.name in _SECRET_ARGV_FLAGS)
    return CommandLine(options, tuple(warnings), tuple(notes), report, variables, flags)


_SECRET_ENV_FLAGS = ("http-restricted-api-env", "grpc-restricted-protocol-env")
_SECRET_ARGV_FLAGS = ("http-restricted-api", "grpc-restricted-protocol")


def _scan(argv: Sequence[str]) -> list[tuple[Flag, str]]:
    """GNU getopt_long's long options: `--name=value` or `--name value`; positionals are errors."""
    given: list[tuple[Flag, str]] = []
    positional: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            positional.extend(argv[index:])
            break
        if arg in ("--help", "-h"):
            raise HelpRequested(usage())
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, equals, raw = arg[2:].partition("=")
        flag = BY_NAME.get(name) if arg.startswith("--") else None
        if flag is None:
            # the value is not echoed: a mistyped restricted-api flag would print its secret
            raise CliError(f"seawall: unrecognized option '{arg.partition('=')[0]}'")
        if not flag.kind.takes_value:
            if equals:
                raise CliError(f"seawall: option '--{name}' doesn't allow an argument")
        elif not equals:
            if index >= len(argv):
                raise CliError(f"seawall: option '--{name}' requires an argument")
            raw = argv[index]
            index += 1
        given.append((flag, raw))
    if positional:
        raise CliError(f"Unexpected argument: {positional[0]}")
    return given


def _convert(flag: Flag, raw: str) -> object:
    try:
        return flag.kind.convert(raw)
    except BadValue as exc:
        raise CliError(f'Bad option: "--{flag.name}".\n{exc}') from None


def _refuse_unsupported(given: Sequence[tuple[Flag, object]]) -> None:
    refused: list[str] = []
    for flag, value in given:
        if flag.support == "yes" or (flag.harmless is not None and flag.harmless(value)):
            continue
        if flag.support == "gpu":
            message = f"--{flag.name} is a GPU option; Seawall is a CPU-only server and does not support it"
        else:
            message = f"--{flag.name} is not yet supported by Seawall (see docs/differences.md)"
        if message not in refused:
            refused.append(message)
    if refused:
        raise CliError("\n".join(refused))


def _put(tree: dict[str, object], path: str, value: object) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        child = tree.setdefault(name, {})
        assert isinstance(child, dict)
        tree = child
    tree[leaf] = value


def _get(tree: Mapping[str, object], path: str) -> object:
    node: object = tree
    for name in path.split("."):
        if not isinstance(node, dict) or name not in node:
            return None
        node = node[name]
    return node


def _assemble(
    given: Sequence[tuple[Flag, object]], environ: Mapping[str, str], warnings: list[str], notes: list[str]
) -> dict[str, object]:
    """The changes to apply to `Options()`, as a tree of dotted targets; environment defaults first."""
    tree = _environment_defaults(environ)
    for flag, value in given:
        if flag.name.endswith(("-file", "-env")) and "-restricted-" in flag.name:
            target = "http.restricted" if flag.name.startswith("http") else "grpc.restricted"
            noun = "api" if flag.name.startswith("http") else "protocol"
            previous = _get(tree, target)
            if flag.name.endswith("-file"):
                loaded = _read_restrictions(flag.name, str(value), noun)
            else:
                loaded = [_restriction_from_environment(flag.name, str(value), noun, environ)]
            _put(tree, target, [*(previous if isinstance(previous, list) else []), *loaded])
        elif flag.target and flag.repeat:
            if flag.name in _SECRET_ARGV_FLAGS:
                value = dataclasses.replace(value, on_command_line=True)  # type: ignore[type-var]
            previous = _get(tree, flag.target)
            items = value if isinstance(value, list) else [value]
            _put(tree, flag.target, [*(previous if isinstance(previous, list) else []), *items])
        elif flag.target:
            _put(tree, flag.target, value)
    if _get(tree, "repository.paths") is None and environ.get("AIP_STORAGE_URI"):
        _put(tree, "repository.paths", [environ["AIP_STORAGE_URI"]])
    names = {flag.name: value for flag, value in given}  # the last value of each flag
    if "strict-model-config" in names:
        warnings.append(
            "'--strict-model-config' has been deprecated! Please use '--disable-auto-complete-config' instead."
        )
        if "disable-auto-complete-config" not in names:
            _put(tree, "repository.auto_complete_config", not names["strict-model-config"])
    _assemble_cache(tree, names, warnings)
    _assemble_model_isolation(tree, given, environ, warnings)
    _assemble_trace(tree, [value for flag, value in given if flag.name == "trace-config"])
    for target, flag_name, noun in (
        ("http.restricted", "http-restricted-api", "api"),
        ("grpc.restricted", "grpc-restricted-protocol", "protocol"),
    ):
        _check_groups(_get(tree, target), flag_name, noun)  # a secret on argv is a security report finding
    if environ.get("TRITON_SERVER_ESCAPE_LOG_MESSAGES") == "0":
        warnings.append("TRITON_SERVER_ESCAPE_LOG_MESSAGES=0 is ignored: Seawall always escapes log messages")
    if "http-thread-count" in names:
        notes.append(
            "--http-thread-count is ignored: Seawall's HTTP service runs on one asyncio event loop "
            "(run several processes with --reuse-http-port to use more cores)"
        )
    return tree


def _assemble_cache(tree: dict[str, object], names: Mapping[str, object], warnings: list[str]) -> None:
    """The deprecated --response-cache-byte-size as `local,size=<n>`; one cache only (Triton's messages)."""
    if "response-cache-byte-size" in names:
        size = names["response-cache-byte-size"]
        warning = (
            "'--response-cache-byte-size' has been deprecated! This will default to the 'local' cache "
            "implementation with the provided byte size for its config. Please use '--cache-config' instead. "
            f"The equivalent --cache-config CLI args would be: '--cache-config=local,size={size}'"
        )
        if "cache-config" in names:
            raise CliError(
                f"Warning: {warning}\nError: Incompatible flags --response-cache-byte-size and --cache-config both "
                "provided. Please provide one or the other."
            )
        warnings.append(warning)
        _put(tree, "backends.cache_config", [("local", "size", str(size))])
    settings = _get(tree, "backends.cache_config")
    caches = sorted({name for name, _, _ in settings}) if isinstance(settings, list) else []
    if len(caches) > 1:
        raise CliError(f'Bad option: "--cache-config".\nonly one cache can be configured. Got {", ".join(caches)}')


def _assemble_model_isolation(
    tree: dict[str, object], given: Sequence[tuple[Flag, object]], environ: Mapping[str, str], warnings: list[str]
) -> None:
    """--model-user and --model-env → the stubs' (uid, gid) and their whole environment (an allowlist)."""
    user = None
    for flag, value in given:
        if flag.name == "model-user":
            try:
                user = confinement.resolve_model_user(str(value))
            except ValueError as exc:
                raise CliError(f'Bad option: "--model-user".\n{exc}') from None
    if user is not None:
        if os.geteuid() != 0:
            raise CliError('Bad option: "--model-user".\nswitching the stubs\' user needs the server to run as root')
        _put(tree, "backends.model_user", (user.uid, user.gid))
        installation = sorted({sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")})
        blocked = confinement.unreadable_path(user, installation)
        if blocked is not None:
            warnings.append(
                f"--model-user: {user.name or user.uid} cannot read {blocked}, part of the Python installation: "
                "model code can import only the modules the stub loads before it switches user (install Python "
                "where that user can read it)"
            )
    extra = [str(value) for flag, value in given if flag.name == "model-env"]
    secret = {str(value) for flag, value in given if flag.name in _SECRET_ENV_FLAGS}
    try:
        _put(tree, "backends.model_environment", list(confinement.stub_environment(environ, extra, secret, user)))
    except ValueError as exc:
        raise CliError(f'Bad option: "--model-env".\n{exc}') from None


_TRACE_LEVELS = {"off": "OFF", "false": "OFF", "timestamps": "TIMESTAMPS", "true": "TIMESTAMPS", "on": "TIMESTAMPS",
                 "min": "TIMESTAMPS", "max": "TIMESTAMPS", "tensors": "TENSORS"}  # fmt: skip
_TRACE_INTEGERS = {"rate": (0, 2**32 - 1), "count": (-1, 2**31 - 1), "log-frequency": (0, 2**32 - 1)}


def _assemble_trace(tree: dict[str, object], settings: Sequence[object]) -> None:
    """--trace-config (triton mode) → `trace.*`. Tracing on needs a file; TENSORS and OpenTelemetry are refused."""
    levels: list[str] = []
    for item in settings:
        assert isinstance(item, tuple)  # _trace_setting's (mode, setting, value)
        mode, key, value = (str(part) for part in item)
        scoped = f"{mode},{key}" if mode else key
        if mode == "opentelemetry" or (key == "mode" and not mode and value.lower() != "triton"):
            raise CliError("--trace-config opentelemetry is not yet supported by Seawall (see docs/differences.md)")
        if key == "level" and not mode:
            if value.lower() not in _TRACE_LEVELS:
                raise CliError(f'Bad option: "--trace-config".\ninvalid value for trace level option: {value}')
            levels.append(_TRACE_LEVELS[value.lower()])
        elif key in _TRACE_INTEGERS and (mode == "triton") == (key == "log-frequency"):
            low, high = _TRACE_INTEGERS[key]
            number = int(value, 10) if value.lstrip("-").isdigit() and value.count("-") <= 1 else None
            if number is None or not low <= number <= high:
                raise CliError(f'Bad option: "--trace-config".\n{scoped} must be an integer in [{low}, {high}]')
            _put(tree, f"trace.{key.replace('-', '_')}", number)
        elif scoped == "triton,file":
            _put(tree, "trace.file", value)
        elif scoped != "mode":
            raise CliError(f"Bad option: \"--trace-config\".\nunknown trace setting '{scoped}'")
    if levels:
        level = "OFF" if "OFF" in levels else ("TENSORS" if "TENSORS" in levels else "TIMESTAMPS")
        if level == "TENSORS":
            raise CliError("--trace-config level=TENSORS is not yet supported by Seawall (see docs/differences.md)")
        if level != "OFF" and not _get(tree, "trace.file"):
            raise CliError(f"--trace-config level={level} needs a trace file: --trace-config triton,file=<path>")
        _put(tree, "trace.level", [level])


def _environment_defaults(environ: Mapping[str, str]) -> dict[str, object]:
    """The settings tritonserver (or its SageMaker entrypoint) takes from AIP_* and SAGEMAKER_* variables; flags
    override them."""
    tree: dict[str, object] = {}
    if environ.get("AIP_MODE") == "PREDICTION":
        _put(tree, "http.allow", False)
        _put(tree, "grpc.allow", False)
        _put(tree, "vertex.allow", True)
    if "AIP_HTTP_PORT" in environ:
        raw = environ["AIP_HTTP_PORT"]
        if not raw.isdigit() or int(raw) > 65535:
            raise CliError(f"AIP_HTTP_PORT must be a port number. Got {raw[:32]}")
        _put(tree, "vertex.port", int(raw))
    for variable, target in (
        ("AIP_PREDICT_ROUTE", "vertex.predict_route"),
        ("AIP_HEALTH_ROUTE", "vertex.health_route"),
    ):
        if environ.get(variable):
            _put(tree, target, environ[variable])
    if environ.get("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"):
        _put(tree, "sagemaker.default_model", environ["SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"])
    if environ.get("SAGEMAKER_MULTI_MODEL") == "true":  # the container entrypoint's test in Triton
        _put(tree, "sagemaker.multi_model", True)
    mode = environ.get("SAGEMAKER_TRITON_PING_MODE")
    if mode is not None:
        if mode not in ("ready", "live"):
            raise CliError(f"SAGEMAKER_TRITON_PING_MODE must be 'ready' or 'live'. Got {mode[:32]}")
        _put(tree, "sagemaker.ping_mode", mode)
    return tree


def _mutual_implies_tls(options: Options) -> Options:
    """`--<listener>-use-ssl-mutual` turns on `--<listener>-use-ssl` too, as in Triton."""
    changes: dict[str, object] = {}
    for name in ("http", "grpc", "metrics"):
        listener = getattr(options, name)
        if listener.tls.use_ssl_mutual and not listener.tls.use_ssl:
            changes[name] = dataclasses.replace(listener, tls=dataclasses.replace(listener.tls, use_ssl=True))
    return options.replace(**changes) if changes else options


def _read_restrictions(flag_name: str, path: str, noun: str) -> list[Restriction]:
    """Restrictions from a secret file, one `<categories>:<key>=<value>` a line; `#` starts a comment."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CliError(f'Bad option: "--{flag_name}".\ncannot read {path}: {reason}') from None
    found = []
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            # the line holds a secret, so an error names its number, never its text
            error = f"{path}:{number}: format is '<config name>:<setting>=<value>'"
            try:
                found.append(dataclasses.replace(parse_restriction(line.strip(), noun, error), source=path))
            except BadValue as exc:
                raise CliError(f'Bad option: "--{flag_name}".\n{exc}') from None
    return found


def _restriction_from_environment(flag_name: str, variable: str, noun: str, environ: Mapping[str, str]) -> Restriction:
    """A restriction whose whole `<categories>:<key>=<value>` text is in environment variable `variable`."""
    text = environ.get(variable)
    if text is None:
        raise CliError(f'Bad option: "--{flag_name}".\nenvironment variable {variable} is not set')
    try:
        # the variable holds a secret: an error names the variable, never its text
        return parse_restriction(text.strip(), noun, f"{variable}: format is '<config name>:<setting>=<value>'")
    except BadValue as exc:
        raise CliError(f'Bad option: "--{flag_name}".\n{exc}') from None


def _check_groups(restrictions: object, flag_name: str, noun: str) -> None:
    """One group per category (Triton), except that lines of one key file may repeat a category: several keys
    are then valid at once, so a key can be rotated without a moment where neither works."""
    seen: dict[str, str] = {}  # category → the key file it came from ("" = argv or environment)
    for restriction in restrictions if isinstance(restrictions, list) else []:
        for category in restriction.categories:
            if category in seen and not (restriction.source and seen[category] == restriction.source):
                raise CliError(
                    f'Bad option: "--{flag_name}".\n'
                    f"restricted {noun} '{category}' can not be specified in multiple config groups"
                )
            seen[category] = restriction.source


_D = TypeVar("_D", bound="DataclassInstance")


def _apply(base: _D, tree: Mapping[str, object]) -> _D:
    changes: dict[str, object] = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            value = _apply(getattr(base, name), value)
        elif isinstance(value, list):
            value = tuple(value)
        changes[name] = value
    return dataclasses.replace(base, **changes)


def _check(options: Options, given: Sequence[tuple[Flag, object]], environ: Mapping[str, str]) -> None:
    """Start-up checks across flags, in Triton's order where Triton has them."""
    repository = options.repository
    if repository.load_models and repository.control_mode != "explicit":
        raise CliError("Error: Use of '--load-model' requires setting '--model-control-mode=explicit' as well.")
    if "*" in repository.load_models and len(repository.load_models) > 1:
        raise CliError("Error: '--load-model=*' must be the only --load-model given.")
    _check_model_repository_guard(options)
    _check_grpc_keys(options.grpc.restricted)
    _check_http_limits(options.limits)
    services = [(listener.check_name, listener.settings(options)) for listener in enabled(options)]
    for index, (name, one) in enumerate(services):
        for other, two in services[index + 1 :]:
            # port 0 asks the OS for a free port, so two services on port 0 never collide
            if one.port != 0 and (one.address, one.port) == (two.address, two.port):
                raise CliError(
                    f"The server cannot listen to {name} requests and {other} requests at the same "
                    f"address and port {one.address}:{one.port}"
                )
    if not repository.paths:
        raise CliError("error: creating server: Invalid argument - --model-repository must be specified")
    for path in repository.paths:
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path):
            raise CliError(f"model repository '{path}': cloud storage is not yet supported by Seawall")


def _check_grpc_keys(restrictions: Sequence[Restriction]) -> None:
    for restriction in restrictions:
        if restriction.key != restriction.key.lower():
            raise CliError(
                f"--grpc-restricted-protocol key '{restriction.key}' has upper-case letters: gRPC metadata "
                f"keys are lower-case, so no client could send 'triton-grpc-protocol-{restriction.key}'. "
                "Use a lower-case key."
            )


def read_key_file(path: str, family: str) -> tuple[Restriction, ...]:
    """The restrictions of a `--http-restricted-api-file` ("http") or `--grpc-restricted-protocol-file`
    ("grpc") read again, for key rotation: the same rules as at start-up.

    Raises:
        ValueError: the file cannot be read or is malformed; the reason names a line number, never a key.
    """
    flag, noun = (
        ("http-restricted-api-file", "api") if family == "http" else ("grpc-restricted-protocol-file", "protocol")
    )
    try:
        found = _read_restrictions(flag, path, noun)
        _check_groups(found, flag, noun)
        if family == "grpc":
            _check_grpc_keys(found)
    except CliError as exc:
        raise ValueError(str(exc).rpartition("\n")[2]) from None
    return tuple(found)


def _check_model_repository_guard(options: Options) -> None:
    """Explicit mode lets clients load model code: refuse to start unless every listener that reaches the
    load API restricts model-repository, or the operator opted in (--allow-unrestricted-model-repository)."""
    repository = options.repository
    if repository.control_mode != "explicit" or repository.allow_unrestricted_model_repository:
        return
    unguarded = [name for name, _ in model_repository_listeners(options) if not is_model_repository_guarded(_)]
    if unguarded:
        raise CliError(
            f"error: --model-control-mode=explicit lets clients load model code, and model-repository is not "
            f"restricted on {', '.join(unguarded)}. Restrict it (--http-restricted-api / "
            "--grpc-restricted-protocol model-repository:<header>=<value>, or their -file forms), or start "
            "anyway with --allow-unrestricted-model-repository=true"
        )


def _check_http_limits(limits: Limits) -> None:
    if limits.http_max_inflight_body_bytes < limits.max_request_bytes:
        raise CliError(
            f'Bad option: "--http-max-inflight-body-bytes".\nmust be at least --http-max-input-size '
            f"({limits.max_request_bytes}), or no request of the largest size could ever be read. "
            f"Got {limits.http_max_inflight_body_bytes}"
        )
    if limits.http_max_connections_per_peer > limits.http_max_connections:
        raise CliError(
            f'Bad option: "--http-max-connections-per-peer".\nmust not exceed --http-max-connections '
            f"({limits.http_max_connections}). Got {limits.http_max_connections_per_peer}"
        )


def _check_listeners(options: Options) -> None:
    """The SageMaker port range, Vertex AI's routes, and every listener's TLS files (errors name the flag)."""
    port_range = options.sagemaker.safe_port_range
    if options.sagemaker.allow and port_range is not None:
        low, high = port_range
        for entry in enabled(options):
            port = entry.settings(options).port
            if entry is not SAGEMAKER and port != 0 and not low <= port <= high:
                raise CliError(
                    f"The server cannot listen to {entry.check_name} requests at port {port}, allowed port range is "
                    f"[{low}, {high}] (--sagemaker-safe-port-range)"
                )
    vertex = options.vertex
    if vertex.allow:
        for name, route in (("PREDICT", vertex.predict_route), ("HEALTH", vertex.health_route)):
            if not route:
                # Triton's message, with its API_/AIP_ slip
                raise CliError(f"API_{name}_ROUTE is not defined for Vertex AI endpoint")
            if not route.startswith("/") or not route.isprintable():
                raise CliError(f"AIP_{name}_ROUTE must be a path starting with '/'")
        if vertex.predict_route == vertex.health_route:
            raise CliError("AIP_PREDICT_ROUTE and AIP_HEALTH_ROUTE must differ")
    for listener in enabled(options):
        tls_options = listener.tls(options) if listener.tls else None
        if tls_options is not None and tls.is_enabled(tls_options):
            try:
                tls.server_ssl_context(tls_options, listener.key)  # built again by the listener; this fails fast
            except SeawallError as exc:
                raise CliError(f"error: creating server: {exc.code.value} - {exc.message}") from None


def _default_text(defaults: Options, flag: Flag) -> str:
    if not flag.target or flag.repeat or not flag.kind.takes_value:
        return ""
    value: object = functools.reduce(getattr, flag.target.split("."), defaults)
    if value == "" or value is None:
        return ""
    return f" Default: {str(value).lower() if isinstance(value, bool) else value}."


def usage() -> str:
    """The --help text, grouped like tritonserver's, with defaults read from the Options dataclasses."""
    defaults = Options()
    lines = ["Usage: seawall [options]", "  --help", "\tPrint usage"]
    section = ""
    for flag in FLAGS:
        if flag.section != section:
            section = flag.section
            lines += ["", f"{section}:"]
        lines.append(f"  --{flag.name} {flag.kind.metavar}".rstrip())
        status = {"yes": "", "later": " [not yet supported]", "gpu": " [GPU only: not supported]"}[flag.support]
        lines.append(f"\t{flag.help}{_default_text(defaults, flag)}{status}")
    return "\n".join(lines)


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


def fast_defaults(environ: dict[str, str] | os._Environ[str]) -> None:
    """The fast settings that only the environment can carry, unless the operator chose otherwise."""
    environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)


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
    log_start_up(options, _version(), (*command_line.warnings, *risks), command_line.notes)
    status = run(options, log_settings)
    if status:
        sys.exit(status)
