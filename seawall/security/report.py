"""The start-up security assessment: every risky setting that is on, once, as a list of findings.

Imports `options`, `listeners` (the listener table) and `security.trust`. `seawall --security-report [flags]`
prints the same findings and exits, for deployment pipelines; the server logs them as warnings at start-up.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
import stat
from dataclasses import dataclass

from seawall.listeners import enabled
from seawall.options import Options, Restriction
from seawall.security.trust import untrusted_reason


@dataclass(frozen=True, slots=True)
class Finding:
    """One risky setting: `setting` names the flag(s), `risk` says what could go wrong."""

    setting: str
    risk: str


def is_loopback(address: str) -> bool:
    host = address.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def assess(options: Options, euid: int | None = None) -> list[Finding]:
    """Every risky setting of `options` on this machine, in a stable order."""
    findings: list[Finding] = []
    findings += _control_findings(options)
    findings += _listener_findings(options)
    findings += _trace_findings(options)
    findings += _key_findings(options, os.geteuid() if euid is None else euid)
    if options.allow_client_shm:
        findings.append(
            Finding(
                "--allow-client-shm",
                "clients may have the server read and write the /dev/shm objects of its own user "
                f"(up to {options.max_shm_regions} regions, {options.max_shm_bytes} bytes)",
            )
        )
    if options.repository.load_on_request and options.repository.control_mode == "explicit":
        findings.append(
            Finding(
                "--load-on-request",
                "any client that may send an inference request can make the server load (and run) any model of "
                "the repository, without the model-repository restriction",
            )
        )
    if not options.repository.exit_on_error:
        findings.append(Finding("--exit-on-error=false", "the server starts with models that failed to load"))
    if not options.repository.strict_readiness:
        findings.append(Finding("--strict-readiness=false", "the server reports ready while models are not"))
    if options.limits.http_max_connections_per_peer >= options.limits.http_max_connections:
        findings.append(
            Finding(
                "--http-max-connections-per-peer",
                "one client address can take every connection of an HTTP listener, health probes included",
            )
        )
    for flag, path in (
        ("--backend-directory", options.backends.backend_directory),
        ("--repoagent-directory", options.backends.repoagent_directory),
        ("--cache-directory", options.backends.cache_directory),
        *(("--model-repository", p) for p in options.repository.paths),
    ):
        reason = untrusted_reason(path)
        if reason is not None:
            findings.append(Finding(flag, f"code is loaded from a path others can change: {reason}"))
    for path in options.backends.allow_untrusted_paths:
        findings.append(
            Finding(
                f"--allow-untrusted-plugin-path={path}",
                "code below this path is loaded even when others can change it",
            )
        )
    if (os.geteuid() if euid is None else euid) == 0:
        findings.append(Finding("user", "running as root: a compromised model owns the machine"))
        if options.backends.model_user is None:
            findings.append(
                Finding(
                    "--model-user",
                    "not set: python-backend model code runs as root with every capability (it can read every "
                    "secret file and the server's memory); give stubs an unprivileged user (stubs still share the "
                    "kernel, network and world-readable files with the server: no seccomp, namespaces or cgroups)",
                )
            )
    for name, restrictions in (
        ("--http-restricted-api", options.http.restricted),
        ("--grpc-restricted-protocol", options.grpc.restricted),
    ):
        if any(r.on_command_line for r in restrictions):
            findings.append(
                Finding(
                    name,
                    "a secret on the command line: other local users and every model read it in ps or "
                    "/proc/<pid>/cmdline before the server wipes it at start-up; use the -file or -env form",
                )
            )
    findings += _in_process_findings(options)
    return findings


#: `parameters { key: "SEAWALL_IN_PROCESS" value { string_value: "<mode>" } }` in a config.pbtxt
_IN_PROCESS = re.compile(
    rb'key\s*:\s*"SEAWALL_IN_PROCESS"\s*,?\s*value\s*:?\s*\{\s*string_value\s*:\s*"\s*([A-Za-z]*)\s*"'
)
_MAX_CONFIG_BYTES = 1 << 20


def _in_process_findings(options: Options) -> list[Finding]:
    """Each repository model whose config.pbtxt (or configs/*.pbtxt) runs it in the server process, while
    --allow-in-process-models lets it (a text scan: the report never imports or runs model code)."""
    if not options.backends.allow_in_process_models:
        return []
    findings = []
    for root in options.repository.paths:
        try:
            models = sorted(
                (entry for entry in os.scandir(root) if entry.is_dir(follow_symlinks=False)), key=lambda e: e.name
            )
        except OSError:
            continue
        for model in models:
            configs = [os.path.join(model.path, "config.pbtxt")]
            configs += sorted(glob.glob(os.path.join(glob.escape(model.path), "configs", "*.pbtxt")))
            if any(_runs_in_process(path) for path in configs):
                findings.append(
                    Finding(
                        "--allow-in-process-models",
                        f"model '{model.name}' runs in the server process (SEAWALL_IN_PROCESS): its code shares the "
                        "server's memory, secrets and privileges, and a crash in it stops the server",
                    )
                )
    return findings


def _runs_in_process(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            text = file.read(_MAX_CONFIG_BYTES)
    except OSError:
        return False
    return any(mode.lower() in (b"true", b"inline") for mode in _IN_PROCESS.findall(text))


def _control_findings(options: Options) -> list[Finding]:
    mode = options.repository.control_mode
    if mode == "none":
        return []
    findings = []
    if mode == "explicit":
        unguarded = [
            name for name, group in model_repository_listeners(options) if not is_model_repository_guarded(group)
        ]
        if unguarded:
            findings.append(
                Finding(
                    "--model-control-mode=explicit",
                    f"any client can load model code: model-repository is not restricted on {', '.join(unguarded)}",
                )
            )
        if options.repository.allow_unrestricted_model_repository:
            findings.append(
                Finding(
                    "--allow-unrestricted-model-repository=true",
                    "explicit mode starts even when model-repository is not restricted on every listener",
                )
            )
    else:
        findings.append(
            Finding("--model-control-mode=poll", "whatever appears in the repository is loaded and run as code")
        )
    return findings


def model_repository_listeners(options: Options) -> list[tuple[str, tuple[Restriction, ...]]]:
    """The listeners that are on and reach the load API, with the restrictions that guard them (SageMaker's
    multi-model routes and Vertex AI's redirect use the HTTP ones)."""
    return [
        (listener.label, listener.restricted(options))
        for listener in enabled(options)
        if listener.restricted is not None and listener.loads_models(options)
    ]


def is_model_repository_guarded(restrictions: tuple[Restriction, ...]) -> bool:
    return any("model-repository" in r.categories for r in restrictions)


def _key_findings(options: Options, euid: int) -> list[Finding]:
    """Restricted-API key files that others could read, replace or point elsewhere, and an open logging API
    next to restricted ones."""
    findings = []
    for flag, restrictions in (
        ("--http-restricted-api", options.http.restricted),
        ("--grpc-restricted-protocol", options.grpc.restricted),
    ):
        categories = {c for r in restrictions for c in r.categories}
        if categories and "logging" not in categories:
            findings.append(
                Finding(
                    f"{flag} without logging",
                    "any client can change log levels and formats while other APIs are restricted",
                )
            )
        for path in dict.fromkeys(r.source for r in restrictions if r.source):
            reason = key_file_reason(path, euid)
            if reason is not None:
                findings.append(Finding(f"{flag}-file={path}", f"the key file {reason}"))
    return findings


def key_file_reason(path: str, euid: int | None = None) -> str | None:
    """Why a key file is not private to the server's user, or None: a symlink, owned by another user,
    readable or writable by group or others, or in a directory others can change."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"cannot be checked: {exc.strerror}"
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link: whoever can change the link chooses the keys"
    if info.st_uid not in (0, os.geteuid() if euid is None else euid):
        return f"is owned by another user (uid {info.st_uid})"
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"is readable or writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it"
    directory = untrusted_reason(os.path.dirname(os.path.abspath(path)))
    return None if directory is None else f"can be replaced: {directory}"


def _unrestricted(options: Options, category: str, listeners: tuple[str, ...] = ("HTTP", "gRPC")) -> list[str]:
    """The listeners among `listeners` on which `category` needs no key (SageMaker uses the HTTP restrictions)."""
    groups = {"HTTP": options.http.restricted, "gRPC": options.grpc.restricted}
    return [name for name in listeners if not any(category in r.categories for r in groups[name])]


def _trace_findings(options: Options) -> list[Finding]:
    trace = options.trace
    findings = []
    if trace.level != ("OFF",):
        findings.append(
            Finding(
                f"--trace-config level={'+'.join(trace.level)}",
                f"tracing is on: request ids, model names and timings are written to {trace.file} "
                f"(one request in {trace.rate})",
            )
        )
    elif trace.file and _unrestricted(options, "trace"):
        unguarded = ", ".join(_unrestricted(options, "trace"))
        findings.append(
            Finding(
                "--trace-config triton,file", f"any client can turn tracing on: trace is not restricted on {unguarded}"
            )
        )
    return findings


def _listener_findings(options: Options) -> list[Finding]:
    findings = []
    for listener in enabled(options):
        address = listener.address(options)
        if listener.tls is not None and not is_loopback(address) and not listener.tls(options).use_ssl:
            findings.append(
                Finding(
                    f"--{listener.flag}-address={address}",
                    f"{listener.label} is reachable from the network without TLS: "
                    "requests and API keys travel in clear",
                )
            )
    if options.metrics.allow:
        findings.append(Finding("--allow-metrics", "metrics are served without authentication"))
    if (
        options.sagemaker.allow
        and options.sagemaker.multi_model
        and _unrestricted(options, "model-repository", ("HTTP",))
    ):
        findings.append(
            Finding(
                "SAGEMAKER_MULTI_MODEL=true",
                "any client of the SageMaker port can load model code from under --sagemaker-model-root: "
                "model-repository is not restricted (--http-restricted-api)",
            )
        )
    if options.grpc.allow and options.grpc.http2_max_ping_strikes == 0:
        findings.append(
            Finding("--grpc-http2-max-ping-strikes=0", "gRPC clients may ping without limit: no ping closes the link")
        )
    return findings
