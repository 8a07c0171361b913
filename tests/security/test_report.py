"""The security assessment on good and bad configurations, and the trust check for code directories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seawall.options import (
    BackendOptions,
    GrpcOptions,
    HttpOptions,
    Limits,
    MetricsOptions,
    Options,
    RepositoryOptions,
    Restriction,
)
from seawall.security.report import assess
from seawall.security.trust import untrusted_reason

ADMIN = Restriction(("model-repository",), "admin-key", "s3cret")


def _settings(findings: list) -> list[str]:  # type: ignore[type-arg]
    return [f.setting for f in findings]


def test_a_locked_down_configuration_has_no_findings(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    options = Options(
        repository=RepositoryOptions(paths=(str(tmp_path),)),
        metrics=MetricsOptions(allow=False),
    )
    assert assess(options, euid=1000) == []


def test_risky_settings_are_each_reported(tmp_path: Path) -> None:
    shared = tmp_path / "models"
    shared.mkdir()
    shared.chmod(0o777)
    options = Options(
        repository=RepositoryOptions(
            paths=(str(shared),), control_mode="explicit", exit_on_error=False, strict_readiness=False
        ),
        http=HttpOptions(address="0.0.0.0"),
        grpc=GrpcOptions(restricted=(ADMIN,)),
        allow_client_shm=True,
    )
    findings = assess(options, euid=0)
    assert _settings(findings) == [
        "--model-control-mode=explicit",
        "--http-address=0.0.0.0",
        "--metrics-address=0.0.0.0",
        "--allow-metrics",
        "--grpc-restricted-protocol without logging",
        "--allow-client-shm",
        "--exit-on-error=false",
        "--strict-readiness=false",
        "--model-repository",
        "user",
        "--model-user",
    ]
    explicit = findings[0].risk
    assert "not restricted on HTTP" in explicit and "gRPC" not in explicit
    assert "s3cret" not in repr(findings)


def test_paths_exempt_from_the_trust_check_are_each_reported(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    options = Options(
        repository=RepositoryOptions(paths=(str(tmp_path),)),
        metrics=MetricsOptions(allow=False),
        backends=BackendOptions(allow_untrusted_paths=("/srv/a", "/srv/b")),
    )
    assert [(f.setting, f.risk) for f in assess(options, euid=1000)] == [
        (
            f"--allow-untrusted-plugin-path={path}",
            "code below this path is loaded even when others can change it",
        )
        for path in ("/srv/a", "/srv/b")
    ]


def test_poll_mode_is_reported() -> None:
    findings = assess(Options(repository=RepositoryOptions(control_mode="poll")), euid=1000)
    assert "--model-control-mode=poll" in _settings(findings)


def test_unlimited_grpc_ping_strikes_are_reported() -> None:
    risky = assess(Options(grpc=GrpcOptions(http2_max_ping_strikes=0)), euid=1000)
    assert "--grpc-http2-max-ping-strikes=0" in _settings(risky)
    assert "--grpc-http2-max-ping-strikes=0" not in _settings(assess(Options(), euid=1000))
    off = Options(grpc=GrpcOptions(allow=False, http2_max_ping_strikes=0))
    assert "--grpc-http2-max-ping-strikes=0" not in _settings(assess(off, euid=1000))


def test_trust_refuses_group_or_world_writable_paths(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    plugins.chmod(0o755)
    tmp_path.chmod(0o755)
    assert untrusted_reason(str(plugins)) is None
    plugins.chmod(0o775)
    assert untrusted_reason(str(plugins)) == f"'{plugins}' is writable by its group"
    plugins.chmod(0o757)
    assert "writable by others" in (untrusted_reason(str(plugins)) or "")
    plugins.chmod(0o755)
    tmp_path.chmod(0o777)  # a writable parent lets anyone swap the directory
    assert untrusted_reason(str(plugins)) == f"'{tmp_path}' is writable by others"
    tmp_path.chmod(0o755)


def test_trust_tolerates_a_sticky_parent_but_not_a_missing_path(tmp_path: Path) -> None:
    tmp_path.chmod(0o1777)
    inner = tmp_path / "mine"
    inner.mkdir(mode=0o700)
    assert untrusted_reason(str(inner)) is None
    assert untrusted_reason(str(tmp_path / "absent")) is None
    tmp_path.chmod(0o755)


def test_trust_refuses_another_users_directory(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir(mode=0o755)
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory away")
    os.chown(other, 12345, 12345)
    assert untrusted_reason(str(other)) == f"'{other}' is owned by another user (uid 12345)"


def test_tracing_and_the_multi_model_endpoint_are_reported(tmp_path: Path) -> None:
    from seawall.options import SageMakerOptions, TraceOptions

    tmp_path.chmod(0o755)
    base = Options(repository=RepositoryOptions(paths=(str(tmp_path),)), metrics=MetricsOptions(allow=False))
    tracing = base.replace(trace=TraceOptions(level=("TIMESTAMPS",), rate=10, file="/var/log/seawall/trace.json"))
    assert [(f.setting, f.risk) for f in assess(tracing, euid=1000)] == [
        (
            "--trace-config level=TIMESTAMPS",
            "tracing is on: request ids, model names and timings are written to /var/log/seawall/trace.json "
            "(one request in 10)",
        )
    ]
    # a trace file lets clients turn tracing on at run time, unless the trace API is restricted everywhere
    armed = base.replace(trace=TraceOptions(file="/var/log/seawall/trace.json"))
    assert [f.risk for f in assess(armed, euid=1000)] == [
        "any client can turn tracing on: trace is not restricted on HTTP, gRPC"
    ]
    guard = Restriction(("trace", "logging"), "k", "v")
    guarded = armed.replace(http=HttpOptions(restricted=(guard,)), grpc=GrpcOptions(restricted=(guard,)))
    assert assess(guarded, euid=1000) == []
    mme = base.replace(sagemaker=SageMakerOptions(allow=True, multi_model=True))
    assert _settings(assess(mme, euid=1000)) == ["SAGEMAKER_MULTI_MODEL=true"]
    assert _settings(assess(mme.replace(http=HttpOptions(restricted=(ADMIN,))), euid=1000)) == [
        "--http-restricted-api without logging"
    ]
    assert assess(base.replace(sagemaker=SageMakerOptions(allow=True)), euid=1000) == []


def test_a_per_peer_share_as_large_as_the_cap_is_reported() -> None:
    shared = Options(limits=Limits(http_max_connections=100, http_max_connections_per_peer=100))
    assert "--http-max-connections-per-peer" in _settings(assess(shared, euid=1000))
    assert "--http-max-connections-per-peer" not in _settings(assess(Options(), euid=1000))
