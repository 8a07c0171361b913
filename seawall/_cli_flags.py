"""The table of tritonserver's flags (name, type, help, target) and the value types they parse.

Part of the command line, private to `cli.py`, which is the only user. Imports only `options`.
Value errors carry Triton's messages; `cli.py` adds the `Bad option: "--<flag>".` line.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from seawall.options import API_CATEGORIES, Restriction

Support = Literal["yes", "later", "gpu"]


class BadValue(Exception):
    """A flag's value failed its type; the parser adds the flag's name."""


@dataclass(frozen=True, slots=True)
class Kind:
    metavar: str
    convert: Callable[[str], object]
    takes_value: bool = True


@dataclass(frozen=True, slots=True)
class Flag:
    """One tritonserver flag: name (without `--`), type, help, and the Options field it sets."""

    name: str
    kind: Kind
    help: str
    target: str = ""  # dotted path into Options; "" = assembled by hand, or not supported
    repeat: bool = False
    support: Support = "yes"
    # the values that change nothing (Triton's default, or "off"), so an unsupported flag may be given them
    harmless: Callable[[object], bool] | None = None
    section: str = ""


# ---------------------------------------------------------------------------------------------- values


def _int_in(low: int, high: int, what: str = "") -> Callable[[str], int]:
    def convert(raw: str) -> int:
        if re.fullmatch(r"[+-]?[0-9]+", raw) is None:
            raise BadValue(f"Invalid option value. Got {raw}")
        value = int(raw)
        bound = 2**31 if high < 2**31 else 2**63  # Triton's stoi or stoll
        if not -bound <= value < bound or (what == "" and not low <= value <= high):
            raise BadValue(f"Provided option value is out of bound. Got {raw}")
        if not low <= value <= high:
            raise BadValue(f"{what}. Got {raw}")
        return value

    return convert


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("true", "on", "1"):
        return True
    if lowered in ("false", "off", "0"):
        return False
    raise BadValue(f"invalid value for bool option: {raw}")


def _float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise BadValue(f"Invalid option value. Got {raw}") from None


def _verbose(raw: str) -> int:
    if raw.lower() in ("true", "on", "false", "off"):
        return int(_bool(raw))
    return _INT32(raw)


def _choice(flag: str, choices: Sequence[str], *, fold: bool) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        for choice in choices:
            if raw == choice or (fold and raw.lower() == choice.lower()):
                return choice
        raise BadValue(f"invalid argument for --{flag}")

    return convert


def _address(raw: str) -> str:
    # Triton accepts `ipv6:[::1]`; an empty host would make asyncio bind every interface, so refuse it
    host = raw.removeprefix("ipv6:").strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise BadValue("empty address (use 0.0.0.0 to listen on every interface)")
    return host


def _not_empty(flag: str) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        if not raw:
            raise BadValue(f"Error: empty argument for --{flag}")
        return raw

    return convert


def _restriction(flag: str, noun: str) -> Callable[[str], Restriction]:
    def convert(raw: str) -> Restriction:
        return parse_restriction(raw, noun, f"--{flag} option format is '<config name>:<setting>=<value>'. Got {raw}")

    return convert


def parse_restriction(raw: str, noun: str, format_error: str) -> Restriction:
    # Triton splits on the first ':' and then on the first '=' after it; the value may hold ':' and '='
    categories, colon, setting = raw.partition(":")
    key, equals, value = setting.partition("=")
    if not (colon and equals and categories and key and value):
        raise BadValue(format_error)
    names = tuple(categories.split(","))
    for name in names:
        if name not in API_CATEGORIES:
            raise BadValue(f"unknown restricted {noun} '{name}'")
    return Restriction(names, key, value)


def _backend_setting(raw: str) -> tuple[str, str, str]:
    error = f"--backend-config option format is '<backend name>,<setting>=<value>'. Got {raw}"
    backend, comma, setting = raw.partition(",")
    if not comma:
        backend, setting = "", raw
    elif not backend:
        raise BadValue(
            "No backend specified. --backend-config option format is <backend name>,<setting>=<value> or "
            f"<setting>=<value>. Got {raw}"
        )
    name, equals, value = setting.partition("=")
    if not (equals and name and value):
        raise BadValue(error)
    return (backend, name, value)


def _cache_setting(raw: str) -> tuple[str, str, str]:
    """`<cache name>,<setting>=<value>` of --cache-config, with Triton's two messages."""
    name, comma, setting = raw.partition(",")
    if not comma:
        raise BadValue(f"No cache specified. --cache-config option format is <cache name>,<setting>=<value>. Got {raw}")
    key, equals, value = setting.partition("=")
    if not (name and equals and key and value):
        raise BadValue(f"--cache-config option format is '<cache name>,<setting>=<value>'. Got {raw}")
    return (name, key, value)


def _trace_setting(raw: str) -> tuple[str, str, str]:
    """`[<mode>,]<setting>=<value>` of --trace-config → (mode, setting, value), with Triton's messages."""
    mode, comma, setting = raw.partition(",")
    if not comma:
        mode, setting = "", raw
    key, equals, value = setting.partition("=")
    if (comma and not mode) or not equals or not key:
        raise BadValue(f"--trace-config option format is [<mode>,]<setting>=<value>. Got {raw}")
    if mode and mode.lower() not in ("triton", "opentelemetry"):
        raise BadValue(
            f'invalid value for trace mode option: {mode}. Available options are "triton" and "opentelemetry"'
        )
    return (mode.lower(), key, value)


def _setting(flag: str, *, named: Literal["no", "optional", "required"], form: str) -> Callable[[str], str]:
    """`[<name>,]<setting>=<value>` syntax check for the structured flags Seawall does not act on yet."""

    def convert(raw: str) -> str:
        name, comma, setting = raw.partition(",") if named != "no" else ("", "", raw)
        if named == "optional" and not comma:
            setting = raw
        if named == "required" and not comma:
            raise BadValue(f"No {flag.split('-')[0]} specified. --{flag} option format is {form}. Got {raw}")
        key, equals, _ = setting.partition("=")
        if (comma and not name) or not equals or not key or (named == "no" and "," in key):
            raise BadValue(f"--{flag} option format is {form}. Got {raw}")
        return raw

    return convert


def _pair(separator: str, second: Callable[[str], object], *, optional_third: bool = False) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        parts = raw.split(separator)
        if len(parts) != 2 and not (optional_third and len(parts) == 3):
            raise BadValue(f"--<option> argument requires format <first>{separator}<second>. Found: {raw}")
        if optional_third:
            for number in parts[1:]:
                _INT32(number)
        else:
            _INT32(parts[0])
            second(parts[1])
        return raw

    return convert


def _rate_limit_resource(raw: str) -> tuple[str, int, int]:
    """`<name>:<count>[:<device>]` of --rate-limit-resource → (name, count, device; -1: every device)."""
    _pair(":", _INT32, optional_third=True)(raw)
    name, count, *device = raw.split(":")
    return (name, int(count), int(device[0]) if device else -1)


def _port_range(raw: str) -> tuple[int, int]:
    low, dash, high = raw.partition("-")
    if not dash:
        raise BadValue(f"--<option> argument requires format <first>-<second>. Found: {raw}")
    first, second = _PORT(low), _PORT(high)
    if first > second:
        raise BadValue(f"the range {raw} is empty")
    return first, second


def _tls_flags(listener: str, label: str) -> tuple[Flag, ...]:
    """Triton's five gRPC TLS flags, for one listener (`--<listener>-use-ssl`, ...)."""
    target = f"{listener}.tls"
    return (
        Flag(f"{listener}-use-ssl", K_BOOL, f"TLS on {label}.", f"{target}.use_ssl"),
        Flag(
            f"{listener}-use-ssl-mutual",
            K_BOOL,
            f"Mutual TLS on {label}: clients need a certificate signed by --{listener}-root-cert (implies TLS).",
            f"{target}.use_ssl_mutual",
        ),
        Flag(f"{listener}-server-cert", K_STRING, "PEM server certificate chain.", f"{target}.server_cert"),
        Flag(f"{listener}-server-key", K_STRING, "PEM server private key.", f"{target}.server_key"),
        Flag(f"{listener}-root-cert", K_STRING, "PEM CA bundle verifying client certificates.", f"{target}.root_cert"),
    )


_INT32 = _int_in(-(2**31), 2**31 - 1)
_INT64 = _int_in(-(2**63), 2**63 - 1)
_PORT = _int_in(0, 65535, "port must be in the range 0-65535 (0 = any free port)")
_COUNT = _int_in(1, 2**31 - 1, "must be at least 1")
_NON_NEGATIVE = _int_in(0, 2**31 - 1, "must not be negative")

K_STRING = Kind("<string>", str)
K_INT = Kind("<integer>", _INT32)
K_INT64 = Kind("<integer>", _INT64)
K_PORT = Kind("<integer>", _PORT)
K_COUNT = Kind("<integer>", _COUNT)
K_NON_NEGATIVE = Kind("<integer>", _NON_NEGATIVE)
K_BYTE_COUNT = Kind("<integer>", _int_in(1, 2**63 - 1, "must be at least 1"))
K_BOOL = Kind("<boolean>", _bool)
K_FLOAT = Kind("<float>", _float)
K_ADDRESS = Kind("<string>", _address)
K_SWITCH = Kind("", lambda _raw: False, takes_value=False)


def _kind(metavar: str, convert: Callable[[str], object]) -> Kind:
    return Kind(metavar, convert)


# ---------------------------------------------------------------------------------------------- the table


def _section(title: str, *flags: Flag) -> tuple[Flag, ...]:
    return tuple(dataclasses.replace(flag, section=title) for flag in flags)


_Harmless = tuple[object, ...] | Callable[[object], bool]


def _later(name: str, kind: Kind, help: str, *, repeat: bool = False, harmless: _Harmless = ()) -> Flag:
    return Flag(name, kind, help, repeat=repeat, support="later", harmless=_among(harmless))


def _gpu(name: str, kind: Kind, help: str, *, repeat: bool = False, harmless: _Harmless = ()) -> Flag:
    return Flag(name, kind, help, repeat=repeat, support="gpu", harmless=_among(harmless))


def _among(values: _Harmless) -> Callable[[object], bool] | None:
    """`harmless` for an unsupported flag: its converted value is one of `values` (none: always refused)."""
    if callable(values):
        return values
    return (lambda value: value in values) if values else None


def _metrics_setting(raw: str) -> tuple[str, str]:
    """`<setting>=<value>` of --metrics-config → (setting, value), with Triton's format message."""
    key, _, value = _setting("metrics-config", named="no", form="<setting>=<value>")(raw).partition("=")
    return (key, value)


def _metrics_setting_harmless(value: object) -> bool:
    # counter_latencies is implemented and Triton ignores unknown settings; the latency summaries and histograms
    # are not implemented, so only their "off" value is accepted
    key, setting = value if isinstance(value, tuple) else ("", "")
    return key not in ("summary_latencies", "histogram_latencies") or str(setting).lower() in ("false", "0")


def _device_value(values: tuple[float, ...]) -> Callable[[object], bool]:
    """`harmless` of a `<device>:<value>` GPU flag: the value (any device) is one of `values`."""
    return lambda value: float(str(value).partition(":")[2]) in values


_SETTING = "<<string>,<string>=<string>>"
_RESTRICTED = "<<string>:<string>=<string>>"

FLAGS: tuple[Flag, ...] = (
    *_section(
        "Server",
        Flag("id", K_STRING, "Identifier for this server.", "server_id"),
        Flag(
            "exit-timeout-secs",
            K_NON_NEGATIVE,
            "Seconds to wait for in-flight requests on exit.",
            "exit_timeout_secs",
        ),
    ),
    *_section(
        "Logging",
        Flag("log-verbose", _kind("<integer>", _verbose), "Verbose logging level; 0 disables.", "log.verbose"),
        Flag("log-info", K_BOOL, "Enable/disable info-level logging.", "log.info"),
        Flag("log-warning", K_BOOL, "Enable/disable warning-level logging.", "log.warning"),
        Flag("log-error", K_BOOL, "Enable/disable error-level logging.", "log.error"),
        Flag(
            "log-format",
            _kind("<string>", _choice("log-format", ("default", "ISO8601"), fold=False)),
            'Log line format: "default" or "ISO8601".',
            "log.format",
        ),
        Flag("log-file", K_STRING, "Append logs to this file (created 0600) instead of stdout.", "log.file"),
        Flag(
            "audit-log-file",
            _kind("<path>", _not_empty("audit-log-file")),
            "Seawall: append audit lines to this file (created 0600, never through a symlink); "
            "default: the log file, else stderr.",
            "log.audit_file",
        ),
    ),
    *_section(
        "Model Repository",
        Flag("model-store", K_STRING, "Equivalent to --model-repository.", "repository.paths", repeat=True),
        Flag(
            "model-repository",
            K_STRING,
            "Path to a model repository (repeatable).",
            "repository.paths",
            repeat=True,
        ),
        Flag("exit-on-error", K_BOOL, "Exit if anything fails during start-up.", "repository.exit_on_error"),
        Flag(
            "disable-auto-complete-config",
            K_SWITCH,
            "Backends may not complete model configurations.",
            "repository.auto_complete_config",
        ),
        Flag("strict-readiness", K_BOOL, "Ready only when every model is ready.", "repository.strict_readiness"),
        Flag(
            "model-control-mode",
            _kind("<string>", _choice("model-control-mode", ("none", "poll", "explicit"), fold=True)),
            'Model control mode: "none", "poll" or "explicit".',
            "repository.control_mode",
        ),
        Flag(
            "allow-unrestricted-model-repository",
            K_BOOL,
            "Seawall: let explicit mode start although model-repository is not restricted on every listener "
            "(any client can then load model code).",
            "repository.allow_unrestricted_model_repository",
        ),
        Flag(
            "repository-poll-secs",
            K_NON_NEGATIVE,
            "Seconds between repository scans in poll mode (0 disables polling).",
            "repository.poll_secs",
        ),
        Flag(
            "load-model",
            K_STRING,
            "Model to load at start-up in explicit mode ('*' for all).",
            "repository.load_models",
            repeat=True,
        ),
        Flag(
            "model-config-name",
            _kind("<string>", _not_empty("model-config-name")),
            "Use <model>/configs/<name>.pbtxt when present.",
            "repository.config_name",
        ),
        Flag("model-load-thread-count", K_COUNT, "Models loaded in parallel.", "repository.load_thread_count"),
        Flag(
            "model-load-retry-count",
            K_NON_NEGATIVE,
            "Retries of a failing model load.",
            "repository.load_retry_count",
        ),
        Flag(
            "max-override-files",
            K_COUNT,
            "Seawall: most 'file:' overrides in one model load request.",
            "repository.max_override_files",
        ),
        Flag(
            "max-override-bytes",
            K_COUNT,
            "Seawall: most decoded bytes of the 'file:' overrides of one model load request.",
            "repository.max_override_bytes",
        ),
        Flag(
            "load-on-request",
            K_BOOL,
            "Seawall (explicit mode): a request for a repository model that is not loaded loads it.",
            "repository.load_on_request",
        ),
        Flag(
            "load-on-request-timeout-secs",
            K_COUNT,
            "Seawall: seconds a request waits for the load it triggered.",
            "repository.load_on_request_timeout_secs",
        ),
        Flag(
            "max-loaded-models",
            K_NON_NEGATIVE,
            "Seawall (explicit mode): most models loaded at once; the least recently used idle one is unloaded "
            "to make room (0 = no limit).",
            "repository.max_loaded_models",
        ),
        _later("model-namespacing", K_BOOL, "Namespace models by repository.", harmless=(False,)),
        _gpu("enable-peer-access", K_BOOL, "CUDA peer access.", harmless=(True, False)),
    ),
    *_section(
        "HTTP",
        Flag("allow-http", K_BOOL, "Start the HTTP service.", "http.allow"),
        Flag("http-address", K_ADDRESS, "HTTP bind address.", "http.address"),
        Flag("http-port", K_PORT, "HTTP port (0 = any free port).", "http.port"),
        Flag("reuse-http-port", K_BOOL, "Set SO_REUSEPORT on the HTTP socket.", "http.reuse_port"),
        _later("http-header-forward-pattern", K_STRING, "Forward matching HTTP headers as parameters.", harmless=("",)),
        Flag(
            "http-thread-count",
            K_COUNT,
            "Accepted and ignored: Seawall's HTTP service is asyncio.",
        ),
        Flag(
            "http-restricted-api",
            _kind(_RESTRICTED, _restriction("http-restricted-api", "api")),
            "<api>[,<api>...]:<header>=<value> (repeatable).",
            "http.restricted",
            repeat=True,
        ),
        Flag(
            "http-restricted-api-file",
            _kind("<path>", str),
            "Seawall: read --http-restricted-api lines from a file (keeps secrets out of argv); re-read on "
            "SIGHUP and when it changes.",
            repeat=True,
        ),
        Flag(
            "http-restricted-api-env",
            _kind("<variable>", str),
            "Seawall: read one --http-restricted-api value from an environment variable (cannot rotate).",
            repeat=True,
        ),
        Flag(
            "http-max-input-size",
            _kind("<integer>", _int_in(1, 2**63 - 1, "must be greater than 0")),
            "Largest HTTP request body, also after decompression.",
            "limits.max_request_bytes",
        ),
        *_tls_flags("http", "HTTP"),
    ),
    *_section(
        "GRPC",
        Flag("allow-grpc", K_BOOL, "Start the GRPC service.", "grpc.allow"),
        Flag("grpc-address", K_ADDRESS, "GRPC bind address.", "grpc.address"),
        Flag("grpc-port", K_PORT, "GRPC port (0 = any free port).", "grpc.port"),
        Flag("reuse-grpc-port", K_BOOL, "Set SO_REUSEPORT on the GRPC socket.", "grpc.reuse_port"),
        Flag(
            "grpc-server",
            _kind("<string>", _choice("grpc-server", ("aio", "lean"), fold=False)),
            "Seawall: the gRPC stack: lean (Seawall's own HTTP/2, the default) or aio (grpc.aio).",
            "grpc.server",
        ),
        _later("grpc-header-forward-pattern", K_STRING, "Forward matching metadata as parameters.", harmless=("",)),
        _later("grpc-infer-allocation-pool-size", K_INT, "Reusable infer state objects.", harmless=(8,)),
        *_tls_flags("grpc", "GRPC"),
        _later(
            "grpc-infer-response-compression-level",
            _kind(
                "<string>",
                _choice("grpc_infer_response_compression_level", ("none", "low", "medium", "high"), fold=False),
            ),
            "Infer response compression.",
            harmless=("none",),
        ),
        Flag("grpc-keepalive-time", K_COUNT, "Keepalive ping period (ms).", "grpc.keepalive_time_ms"),
        Flag("grpc-keepalive-timeout", K_COUNT, "Keepalive ack timeout (ms).", "grpc.keepalive_timeout_ms"),
        Flag(
            "grpc-keepalive-permit-without-calls",
            K_BOOL,
            "Keepalive pings (both ways) also without calls.",
            "grpc.keepalive_permit_without_calls",
        ),
        Flag(
            "grpc-http2-max-pings-without-data",
            K_NON_NEGATIVE,
            "Pings sent without data (0 = unlimited).",
            "grpc.http2_max_pings_without_data",
        ),
        Flag(
            "grpc-http2-min-recv-ping-interval-without-data",
            K_NON_NEGATIVE,
            "Client pings closer than this (ms) without data are strikes.",
            "grpc.http2_min_recv_ping_interval_without_data_ms",
        ),
        Flag(
            "grpc-http2-max-ping-strikes",
            K_NON_NEGATIVE,
            "Ping strikes before GOAWAY (0 = unlimited).",
            "grpc.http2_max_ping_strikes",
        ),
        Flag(
            "grpc-max-connection-age",
            K_NON_NEGATIVE,
            "Close connections (GOAWAY) after this many ms (0 = never).",
            "grpc.max_connection_age_ms",
        ),
        Flag(
            "grpc-max-connection-age-grace",
            K_NON_NEGATIVE,
            "Grace (ms) for calls after the maximum age (0 = unlimited).",
            "grpc.max_connection_age_grace_ms",
        ),
        Flag(
            "grpc-restricted-protocol",
            _kind(_RESTRICTED, _restriction("grpc-restricted-protocol", "protocol")),
            "<protocol>[,<protocol>...]:<key>=<value> (repeatable).",
            "grpc.restricted",
            repeat=True,
        ),
        Flag(
            "grpc-restricted-protocol-file",
            _kind("<path>", str),
            "Seawall: read --grpc-restricted-protocol lines from a file; re-read on SIGHUP and when it changes.",
            repeat=True,
        ),
        Flag(
            "grpc-restricted-protocol-env",
            _kind("<variable>", str),
            "Seawall: read one --grpc-restricted-protocol value from an environment variable (cannot rotate).",
            repeat=True,
        ),
        _later("grpc-infer-thread-count", K_INT, "GRPC infer handler threads.", harmless=(2,)),
        _later("grpc-max-response-pool-size", K_INT, "Queued responses per stream.", harmless=(2**31 - 1,)),
    ),
    *_section(
        "Sagemaker",
        Flag("allow-sagemaker", K_BOOL, "Start the SageMaker service.", "sagemaker.allow"),
        Flag("sagemaker-address", K_ADDRESS, "Seawall: SageMaker bind address.", "sagemaker.address"),
        Flag("sagemaker-port", K_PORT, "SageMaker port (0 = any free port).", "sagemaker.port"),
        Flag(
            "sagemaker-safe-port-range",
            _kind("<<integer>-<integer>>", _port_range),
            "The other services must listen on ports inside this range.",
            "sagemaker.safe_port_range",
        ),
        Flag(
            "sagemaker-thread-count",
            K_COUNT,
            "Accepted and ignored: Seawall's SageMaker service is asyncio.",
        ),
        Flag(
            "sagemaker-model-root",
            K_STRING,
            "Seawall: multi-model 'url's must be directories under this path.",
            "sagemaker.model_root",
        ),
        Flag(
            "sagemaker-max-models",
            K_COUNT,
            "Seawall: most models loaded through the multi-model endpoint at once (more: 507).",
            "sagemaker.max_models",
        ),
    ),
    *_section(
        "Vertex",
        Flag("allow-vertex-ai", K_BOOL, "Start the Vertex AI service.", "vertex.allow"),
        Flag("vertex-ai-address", K_ADDRESS, "Seawall: Vertex AI bind address.", "vertex.address"),
        Flag("vertex-ai-port", K_PORT, "Vertex AI port (default: AIP_HTTP_PORT, else 8080).", "vertex.port"),
        Flag(
            "vertex-ai-thread-count",
            K_COUNT,
            "Accepted and ignored: Seawall's Vertex AI service is asyncio.",
        ),
        Flag(
            "vertex-ai-default-model",
            K_STRING,
            "Model for un-redirected predict calls (default: the only model).",
            "vertex.default_model",
        ),
    ),
    *_section(
        "Metrics",
        Flag("allow-metrics", K_BOOL, "Start the Prometheus metrics service.", "metrics.allow"),
        _gpu("allow-gpu-metrics", K_BOOL, "GPU metrics.", harmless=(True, False)),
        _later("allow-cpu-metrics", K_BOOL, "CPU metrics.", harmless=(True, False)),
        Flag(
            "metrics-address",
            K_ADDRESS,
            "Metrics bind address (default: the HTTP address).",
            "metrics.address",
        ),
        Flag("metrics-port", K_PORT, "Metrics port (0 = any free port).", "metrics.port"),
        *_tls_flags("metrics", "the metrics service"),
        _later("metrics-interval-ms", K_FLOAT, "Metrics refresh period.", harmless=(2000,)),
        Flag(
            "metrics-config",
            _kind("<<string>=<string>>", _metrics_setting),
            "<setting>=<value> (repeatable): counter_latencies=<bool>; summary and histogram latencies not yet.",
            "metrics.config",
            repeat=True,
            support="later",
            harmless=_metrics_setting_harmless,
        ),
    ),
    *_section(
        "Tracing",
        Flag(
            "trace-config",
            _kind(_SETTING, _trace_setting),
            "[triton,]<setting>=<value> (repeatable): level=OFF|TIMESTAMPS, rate, count, triton,file, "
            "triton,log-frequency.",
            repeat=True,
        ),
    ),
    *_section(
        "Backend",
        Flag("backend-directory", K_STRING, "Directory of backend plugins.", "backends.backend_directory"),
        Flag(
            "backend-config",
            _kind(_SETTING, _backend_setting),
            "[<backend>,]<setting>=<value> (repeatable).",
            "backends.config",
            repeat=True,
        ),
        Flag(
            "model-user",
            K_STRING,
            "Seawall: run python-backend stub processes as this user (<name> or <uid>[:<gid>]); needs root.",
        ),
        Flag(
            "model-env",
            K_STRING,
            "Seawall: give stub processes this variable too: <name> (the server's value) or <name>=<value> "
            "(repeatable; stubs get only an allowlist otherwise).",
            repeat=True,
        ),
    ),
    *_section(
        "Repository Agent",
        Flag("repoagent-directory", K_STRING, "Directory of repository agents.", "backends.repoagent_directory"),
    ),
    *_section(
        "Response Cache",
        Flag(
            "cache-config",
            _kind(_SETTING, _cache_setting),
            "<cache>,<setting>=<value> (repeatable): 'local,size=<bytes>' or a cache from --cache-directory.",
            "backends.cache_config",
            repeat=True,
        ),
        Flag("cache-directory", K_STRING, "Directory of cache implementations.", "backends.cache_directory"),
    ),
    *_section(
        "Rate Limiter",
        Flag(
            "rate-limit",
            _kind("<string>", _choice("rate-limit", ("off", "execution_count"), fold=True)),
            "Rate limiting mode: 'execution_count' makes instances wait for their instance group's rate_limiter "
            "resources, lowest execution count x priority first; 'off' ignores them.",
            "rate_limit",
        ),
        Flag(
            "rate-limit-resource",
            _kind("<<string>:<integer>:<integer>>", _rate_limit_resource),
            "<name>:<count>[:<device>] (repeatable): how many of a resource exist (on every device, or on "
            "<device>; CPU instances are on device 0). Unlisted resources then have none. Default: the most any "
            "instance needs.",
            "rate_limit_resources",
            repeat=True,
        ),
    ),
    *_section(
        "Memory/Device Management",
        _later("pinned-memory-pool-byte-size", K_INT64, "Pinned memory pool (GPU).", harmless=(268435456, 0)),
        _gpu(
            "cuda-memory-pool-byte-size",
            _kind("<<integer>:<integer>>", _pair(":", _INT64)),
            "CUDA pool.",
            repeat=True,
            harmless=_device_value((64 << 20, 0)),
        ),
        _gpu(
            "cuda-virtual-address-size",
            _kind("<<integer>:<integer>>", _pair(":", _INT64)),
            "CUDA VA size.",
            repeat=True,
            harmless=_device_value((1 << 30,)),
        ),
        _gpu("min-supported-compute-capability", K_FLOAT, "Oldest GPU to use.", harmless=(6.0,)),
        _later("buffer-manager-thread-count", K_INT, "Tensor copy threads.", harmless=(0,)),
        _later(
            "host-policy",
            _kind(_SETTING, _setting("host-policy", named="required", form="'<policy name>,<setting>=<value>'")),
            "Host policy setting.",
            repeat=True,
        ),
        _gpu(
            "model-load-gpu-limit",
            _kind("<<device_id>:<fraction>>", _pair(":", _float)),
            "GPU memory limit.",
            repeat=True,
        ),
        Flag(
            "allow-client-shm",
            K_BOOL,
            "Allow clients to register shared memory (off by default).",
            "allow_client_shm",
        ),
    ),
    *_section(
        "Seawall limits and safety",
        Flag(
            "max-request-header-bytes",
            K_COUNT,
            "Largest total size of one HTTP request's headers.",
            "limits.max_header_bytes",
        ),
        Flag("max-json-depth", K_COUNT, "Deepest JSON nesting accepted in a request.", "limits.max_json_depth"),
        Flag("max-inputs", K_COUNT, "Most input tensors in one request.", "limits.max_inputs"),
        Flag("max-outputs", K_COUNT, "Most requested outputs in one request.", "limits.max_outputs"),
        Flag(
            "max-parameters",
            K_COUNT,
            "Most parameters of one request, and of each of its inputs and outputs.",
            "limits.max_parameters",
        ),
        Flag("max-tensor-elements", K_COUNT, "Most elements in one tensor.", "limits.max_tensor_elements"),
        Flag("max-tensor-bytes", K_COUNT, "Largest byte size of one tensor.", "limits.max_tensor_bytes"),
        Flag(
            "max-bytes-elements",
            K_COUNT,
            "Most BYTES elements in one request, all inputs together.",
            "limits.max_bytes_elements",
        ),
        Flag("max-chunks", K_COUNT, "Most chunks in one chunked HTTP request body.", "limits.max_chunks"),
        Flag(
            "max-decompression-ratio",
            K_COUNT,
            "Largest decompressed/compressed size ratio of a body.",
            "limits.max_decompression_ratio",
        ),
        Flag(
            "grpc-max-message-size", K_COUNT, "Largest gRPC message, both directions.", "limits.grpc_max_message_bytes"
        ),
        Flag(
            "grpc-max-concurrent-streams",
            K_COUNT,
            "Most concurrent gRPC streams per connection.",
            "limits.grpc_max_concurrent_streams",
        ),
        Flag(
            "grpc-max-inflight-request-bytes",
            _kind("<integer>", _int_in(1, 2**63 - 1, "must be greater than 0")),
            "Seawall: gRPC request bytes all connections hold at once (received, not yet answered); beyond it the "
            "call gets UNAVAILABLE (lean stack).",
            "limits.grpc_max_inflight_request_bytes",
        ),
        Flag(
            "max-shm-regions",
            K_COUNT,
            "Most client shared memory regions registered at once.",
            "max_shm_regions",
        ),
        Flag(
            "max-shm-bytes",
            K_BYTE_COUNT,
            "Largest total byte_size of the registered client shared memory regions.",
            "max_shm_bytes",
        ),
        Flag(
            "max-inflight-requests",
            K_COUNT,
            "Seawall: inference requests in flight at once, whole server (0: no cap); beyond it 429 with "
            "Retry-After (gRPC RESOURCE_EXHAUSTED).",
            "limits.max_inflight_requests",
        ),
        Flag(
            "busy-poll-us",
            K_NON_NEGATIVE,
            "Seawall: for this many microseconds after an inference request arrived the event loop polls for I/O "
            "instead of sleeping (lower latency at low load, some CPU while requests come); 0: never.",
            "limits.busy_poll_us",
        ),
        Flag(
            "http-max-inflight-body-bytes",
            _kind("<integer>", _int_in(1, 2**63 - 1, "must be greater than 0")),
            "Request body bytes all HTTP listeners hold at once; beyond it 503 with Retry-After.",
            "limits.http_max_inflight_body_bytes",
        ),
        Flag(
            "http-header-timeout-secs",
            K_COUNT,
            "Seconds an HTTP client has to send a request's head (408, then close).",
            "limits.http_header_timeout_secs",
        ),
        Flag(
            "http-body-timeout-secs",
            K_COUNT,
            "Window in which an HTTP body must arrive at --http-min-body-rate (408, then close), and a reply waiting "
            "for the client must drain at that rate (else the connection is dropped).",
            "limits.http_body_timeout_secs",
        ),
        Flag(
            "http-min-body-rate",
            K_NON_NEGATIVE,
            "Bytes per second an HTTP body must arrive at, averaged over --http-body-timeout-secs.",
            "limits.http_min_body_rate",
        ),
        Flag(
            "http-idle-timeout-secs",
            K_COUNT,
            "Seconds an idle keep-alive HTTP connection stays open.",
            "limits.http_idle_timeout_secs",
        ),
        Flag(
            "http-max-connections",
            K_COUNT,
            "Open connections per HTTP listener (HTTP, metrics, SageMaker, Vertex AI); more are refused with 503.",
            "limits.http_max_connections",
        ),
        Flag(
            "http-max-connections-per-peer",
            K_COUNT,
            "Of those, connections from one client address (IPv6: one /64).",
            "limits.http_max_connections_per_peer",
        ),
        Flag(
            "allow-untrusted-plugin-path",
            K_STRING,
            "Load plugins from this path although it fails the ownership/permission check.",
            "backends.allow_untrusted_paths",
            repeat=True,
        ),
        Flag(
            "allow-in-process-models",
            K_BOOL,
            "Allow python models whose repository config sets SEAWALL_IN_PROCESS to run inside the server process.",
            "backends.allow_in_process_models",
        ),
        Flag(
            "python-stub-start",
            _kind("<string>", _choice("python-stub-start", ("fork", "spawn"), fold=False)),
            "Seawall: start python-backend stubs by forking one pre-imported template process (fork, the default: "
            "a few MiB each, but one shared address-space layout) or as fresh interpreters (spawn).",
            "backends.python_stub_start",
        ),
        Flag(
            "max-model-size",
            _kind("<integer>", _int_in(1, 2**31 - 1, "must be between 1 and 2147483647")),
            "Seawall: largest model a backend reads, in bytes (ONNX: with its external data; TorchScript model.pt).",
            "backends.max_model_bytes",
        ),
        Flag("security-report", K_SWITCH, "Print the security assessment of the other flags and exit."),
    ),
    *_section(
        "DEPRECATED",
        Flag("strict-model-config", K_BOOL, "Deprecated: use --disable-auto-complete-config."),
        Flag("response-cache-byte-size", K_INT64, "Deprecated: --cache-config local,size=<n>."),
        _later("trace-file", K_STRING, "Deprecated trace file.", harmless=("",)),
        _later(
            "trace-level",
            _kind("<string>", _choice("trace-level", ("OFF", "TIMESTAMPS", "TENSORS"), fold=True)),
            "Deprecated trace level.",
            repeat=True,
            harmless=("OFF",),
        ),
        _later("trace-rate", K_INT, "Deprecated trace rate.", harmless=(1000,)),
        _later("trace-count", K_INT, "Deprecated trace count.", harmless=(-1,)),
        _later("trace-log-frequency", K_INT, "Deprecated trace log frequency.", harmless=(0,)),
    ),
)

BY_NAME: Mapping[str, Flag] = {flag.name: flag for flag in FLAGS}
