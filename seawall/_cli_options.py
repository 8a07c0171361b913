"""tritonserver's flags as `Options`: the given flags and the environment's defaults assembled into a tree of
changes (deprecated flags, caches, model isolation, tracing), then the start-up checks across them, in Triton's
order and with its messages where Triton has them.

Private to `seawall.cli`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sysconfig
from collections.abc import Mapping, Sequence

from seawall._cli_flags import Flag
from seawall._cli_parse import (
    SECRET_ARGV_FLAGS,
    SECRET_ENV_FLAGS,
    CliError,
    check_groups,
    check_grpc_keys,
    get,
    put,
    read_restrictions,
    restriction_from_environment,
)
from seawall.errors import SeawallError
from seawall.listeners import SAGEMAKER, enabled
from seawall.options import Limits, Options
from seawall.security import confinement, tls
from seawall.security.report import is_model_repository_guarded, model_repository_listeners


def assemble(
    given: Sequence[tuple[Flag, object]], environ: Mapping[str, str], warnings: list[str], notes: list[str]
) -> dict[str, object]:
    """The changes to apply to `Options()`, as a tree of dotted targets; environment defaults first."""
    tree = _environment_defaults(environ)
    for flag, value in given:
        if flag.name.endswith(("-file", "-env")) and "-restricted-" in flag.name:
            target = "http.restricted" if flag.name.startswith("http") else "grpc.restricted"
            noun = "api" if flag.name.startswith("http") else "protocol"
            previous = get(tree, target)
            if flag.name.endswith("-file"):
                loaded = read_restrictions(flag.name, str(value), noun)
            else:
                loaded = [restriction_from_environment(flag.name, str(value), noun, environ)]
            put(tree, target, [*(previous if isinstance(previous, list) else []), *loaded])
        elif flag.target and flag.repeat:
            if flag.name in SECRET_ARGV_FLAGS:
                value = dataclasses.replace(value, on_command_line=True)  # type: ignore[type-var]
            previous = get(tree, flag.target)
            items = value if isinstance(value, list) else [value]
            put(tree, flag.target, [*(previous if isinstance(previous, list) else []), *items])
        elif flag.target:
            put(tree, flag.target, value)
    if get(tree, "repository.paths") is None and environ.get("AIP_STORAGE_URI"):
        put(tree, "repository.paths", [environ["AIP_STORAGE_URI"]])
    names = {flag.name: value for flag, value in given}  # the last value of each flag
    if "strict-model-config" in names:
        warnings.append(
            "'--strict-model-config' has been deprecated! Please use '--disable-auto-complete-config' instead."
        )
        if "disable-auto-complete-config" not in names:
            put(tree, "repository.auto_complete_config", not names["strict-model-config"])
    _assemble_cache(tree, names, warnings)
    _assemble_model_isolation(tree, given, environ, warnings)
    _assemble_trace(tree, [value for flag, value in given if flag.name == "trace-config"])
    for target, flag_name, noun in (
        ("http.restricted", "http-restricted-api", "api"),
        ("grpc.restricted", "grpc-restricted-protocol", "protocol"),
    ):
        check_groups(get(tree, target), flag_name, noun)  # a secret on argv is a security report finding
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
        put(tree, "backends.cache_config", [("local", "size", str(size))])
    settings = get(tree, "backends.cache_config")
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
        put(tree, "backends.model_user", (user.uid, user.gid))
        installation = sorted({sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")})
        blocked = confinement.unreadable_path(user, installation)
        if blocked is not None:
            warnings.append(
                f"--model-user: {user.name or user.uid} cannot read {blocked}, part of the Python installation: "
                "model code can import only the modules the stub loads before it switches user (install Python "
                "where that user can read it)"
            )
    extra = [str(value) for flag, value in given if flag.name == "model-env"]
    secret = {str(value) for flag, value in given if flag.name in SECRET_ENV_FLAGS}
    try:
        put(tree, "backends.model_environment", list(confinement.stub_environment(environ, extra, secret, user)))
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
            put(tree, f"trace.{key.replace('-', '_')}", number)
        elif scoped == "triton,file":
            put(tree, "trace.file", value)
        elif scoped != "mode":
            raise CliError(f"Bad option: \"--trace-config\".\nunknown trace setting '{scoped}'")
    if levels:
        level = "OFF" if "OFF" in levels else ("TENSORS" if "TENSORS" in levels else "TIMESTAMPS")
        if level == "TENSORS":
            raise CliError("--trace-config level=TENSORS is not yet supported by Seawall (see docs/differences.md)")
        if level != "OFF" and not get(tree, "trace.file"):
            raise CliError(f"--trace-config level={level} needs a trace file: --trace-config triton,file=<path>")
        put(tree, "trace.level", [level])


def _environment_defaults(environ: Mapping[str, str]) -> dict[str, object]:
    """The settings tritonserver (or its SageMaker entrypoint) takes from AIP_* and SAGEMAKER_* variables; flags
    override them."""
    tree: dict[str, object] = {}
    if environ.get("AIP_MODE") == "PREDICTION":
        put(tree, "http.allow", False)
        put(tree, "grpc.allow", False)
        put(tree, "vertex.allow", True)
    if "AIP_HTTP_PORT" in environ:
        raw = environ["AIP_HTTP_PORT"]
        if not raw.isdigit() or int(raw) > 65535:
            raise CliError(f"AIP_HTTP_PORT must be a port number. Got {raw[:32]}")
        put(tree, "vertex.port", int(raw))
    for variable, target in (
        ("AIP_PREDICT_ROUTE", "vertex.predict_route"),
        ("AIP_HEALTH_ROUTE", "vertex.health_route"),
    ):
        if environ.get(variable):
            put(tree, target, environ[variable])
    if environ.get("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"):
        put(tree, "sagemaker.default_model", environ["SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"])
    if environ.get("SAGEMAKER_MULTI_MODEL") == "true":  # the container entrypoint's test in Triton
        put(tree, "sagemaker.multi_model", True)
    mode = environ.get("SAGEMAKER_TRITON_PING_MODE")
    if mode is not None:
        if mode not in ("ready", "live"):
            raise CliError(f"SAGEMAKER_TRITON_PING_MODE must be 'ready' or 'live'. Got {mode[:32]}")
        put(tree, "sagemaker.ping_mode", mode)
    return tree


def mutual_implies_tls(options: Options) -> Options:
    """`--<listener>-use-ssl-mutual` turns on `--<listener>-use-ssl` too, as in Triton."""
    changes: dict[str, object] = {}
    for name in ("http", "grpc", "metrics"):
        listener = getattr(options, name)
        if listener.tls.use_ssl_mutual and not listener.tls.use_ssl:
            changes[name] = dataclasses.replace(listener, tls=dataclasses.replace(listener.tls, use_ssl=True))
    return options.replace(**changes) if changes else options


def check(
    options: Options, given: Sequence[tuple[Flag, object]], environ: Mapping[str, str], report: bool = False
) -> None:
    """Start-up checks across flags, in Triton's order where Triton has them; a security report (`report`)
    needs no model repository: it assesses what the flags alone say."""
    repository = options.repository
    if repository.load_models and repository.control_mode != "explicit":
        raise CliError("Error: Use of '--load-model' requires setting '--model-control-mode=explicit' as well.")
    if "*" in repository.load_models and len(repository.load_models) > 1:
        raise CliError("Error: '--load-model=*' must be the only --load-model given.")
    for flag, on in (
        ("load-on-request", repository.load_on_request),
        ("max-loaded-models", repository.max_loaded_models),
    ):
        if on and repository.control_mode != "explicit":
            raise CliError(f"Error: '--{flag}' requires '--model-control-mode=explicit'.")
    _check_model_repository_guard(options)
    check_grpc_keys(options.grpc.restricted)
    _check_listener_limits(options.limits)
    services = [(listener.check_name, listener.settings(options)) for listener in enabled(options)]
    for index, (name, one) in enumerate(services):
        for other, two in services[index + 1 :]:
            # port 0 asks the OS for a free port, so two services on port 0 never collide
            if one.port != 0 and (one.address, one.port) == (two.address, two.port):
                raise CliError(
                    f"The server cannot listen to {name} requests and {other} requests at the same "
                    f"address and port {one.address}:{one.port}"
                )
    if not repository.paths and not report:
        raise CliError("error: creating server: Invalid argument - --model-repository must be specified")
    for path in repository.paths:
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path):
            raise CliError(f"model repository '{path}': cloud storage is not yet supported by Seawall")


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


def _check_listener_limits(limits: Limits) -> None:
    if limits.http_max_inflight_body_bytes < limits.max_request_bytes:
        raise CliError(
            f'Bad option: "--http-max-inflight-body-bytes".\nmust be at least --http-max-input-size '
            f"({limits.max_request_bytes}), or no request of the largest size could ever be read. "
            f"Got {limits.http_max_inflight_body_bytes}"
        )
    if limits.grpc_max_inflight_request_bytes < limits.grpc_max_message_bytes + 5:
        raise CliError(
            f'Bad option: "--grpc-max-inflight-request-bytes".\nmust be at least --grpc-max-message-size + 5 '
            f"({limits.grpc_max_message_bytes + 5}), or no message of the largest size could ever be read. "
            f"Got {limits.grpc_max_inflight_request_bytes}"
        )
    if limits.http_max_connections_per_peer > limits.http_max_connections:
        raise CliError(
            f'Bad option: "--http-max-connections-per-peer".\nmust not exceed --http-max-connections '
            f"({limits.http_max_connections}). Got {limits.http_max_connections_per_peer}"
        )


def check_listeners(options: Options) -> None:
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
