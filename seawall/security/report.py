"""The start-up security assessment: every risky setting that is on, once, as a list of findings.

Imports `options` and `security.trust`. `seawall --security-report [flags]` prints the same findings and
exits, for deployment pipelines; the server logs them as warnings at start-up.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from seawall.options import Options, TlsOptions
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
    if options.allow_client_shm:
        findings.append(Finding("--allow-client-shm", "clients may map shared memory into the server"))
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
    return findings


def _control_findings(options: Options) -> list[Finding]:
    mode = options.repository.control_mode
    if mode == "none":
        return []
    findings = []
    if mode == "explicit":
        unguarded = [
            name
            for name, restrictions in (("HTTP", options.http.restricted), ("gRPC", options.grpc.restricted))
            if not any("model-repository" in r.categories for r in restrictions)
        ]
        if unguarded:
            findings.append(
                Finding(
                    "--model-control-mode=explicit",
                    f"any client can load model code: model-repository is not restricted on {', '.join(unguarded)}",
                )
            )
    else:
        findings.append(
            Finding("--model-control-mode=poll", "whatever appears in the repository is loaded and run as code")
        )
    return findings


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
    metrics_address = options.metrics.address or options.http.address
    listeners: list[tuple[str, bool, str, TlsOptions | None]] = [
        ("HTTP", options.http.allow, options.http.address, options.http.tls),
        ("GRPC", options.grpc.allow, options.grpc.address, options.grpc.tls),
        ("Metrics", options.metrics.allow, metrics_address, getattr(options.metrics, "tls", None)),
    ]
    for name, allowed, address, tls in listeners:
        if allowed and not is_loopback(address) and not (tls is not None and tls.use_ssl):
            findings.append(
                Finding(
                    f"--{name.lower()}-address={address}",
                    f"{name} is reachable from the network without TLS: requests and API keys travel in clear",
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
    return findings
