"""The command line: every tritonserver flag parses to Options or is refused by name; logging escapes."""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
from pathlib import Path

import pytest

from seawall.cli import (
    BY_NAME,
    FLAGS,
    CliError,
    HelpRequested,
    LevelSwitch,
    LineFormatter,
    banner_rows,
    configure_logging,
    escape,
    parse_args,
    parse_command_line,
    run,
    usage,
)
from seawall.core.log_settings import LogSettings
from seawall.options import LogOptions, Options, Restriction
from seawall.security.report import assess
from tests.harness import run_seawall

REPO = "--model-repository=/models"

#: Every flag of `tritonserver --help` (2.51), plus the later ones spec/cli.md recommends.
TRITON_FLAGS = """
id exit-timeout-secs log-verbose log-info log-warning log-error log-format log-file model-store
model-repository exit-on-error disable-auto-complete-config strict-readiness model-control-mode
repository-poll-secs load-model model-config-name model-load-thread-count model-load-retry-count
model-namespacing enable-peer-access allow-http http-address http-port reuse-http-port
http-header-forward-pattern http-thread-count http-restricted-api allow-grpc grpc-address grpc-port
reuse-grpc-port grpc-header-forward-pattern grpc-infer-allocation-pool-size grpc-use-ssl
grpc-use-ssl-mutual grpc-server-cert grpc-server-key grpc-root-cert grpc-infer-response-compression-level
grpc-keepalive-time grpc-keepalive-timeout grpc-keepalive-permit-without-calls
grpc-http2-max-pings-without-data grpc-http2-min-recv-ping-interval-without-data
grpc-http2-max-ping-strikes grpc-max-connection-age grpc-max-connection-age-grace
grpc-restricted-protocol allow-sagemaker sagemaker-port sagemaker-safe-port-range sagemaker-thread-count
allow-vertex-ai vertex-ai-port vertex-ai-thread-count vertex-ai-default-model allow-metrics
allow-gpu-metrics allow-cpu-metrics metrics-address metrics-port metrics-interval-ms metrics-config
trace-config backend-directory backend-config repoagent-directory cache-config cache-directory rate-limit
rate-limit-resource pinned-memory-pool-byte-size cuda-memory-pool-byte-size cuda-virtual-address-size
min-supported-compute-capability buffer-manager-thread-count host-policy model-load-gpu-limit
strict-model-config response-cache-byte-size trace-file trace-level trace-rate trace-count
trace-log-frequency http-max-input-size allow-client-shm grpc-infer-thread-count
grpc-max-response-pool-size
""".split()


def parse(*argv: str, environ: dict[str, str] | None = None) -> Options:
    return parse_args([REPO, *argv], environ or {})


def error_of(*argv: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(CliError) as caught:
        parse_args(list(argv), environ or {})
    return str(caught.value)


# ------------------------------------------------------------------------------------------- the table


def test_every_triton_flag_is_in_the_table_once() -> None:
    names = [flag.name for flag in FLAGS]
    assert len(names) == len(set(names))
    assert sorted(set(TRITON_FLAGS) - set(names)) == []


def test_defaults_come_from_the_dataclasses() -> None:
    options = parse()
    expected = Options()
    assert options.repository.paths == ("/models",)
    assert options.http == expected.http
    assert options.grpc == expected.grpc
    assert options.log == expected.log
    assert options.backends == expected.backends
    assert options.limits == expected.limits
    assert options.metrics.address == expected.http.address  # the metrics address follows the HTTP address
    assert options.replace(repository=expected.repository, metrics=expected.metrics) == expected


def test_help_lists_every_flag_with_its_default() -> None:
    with pytest.raises(HelpRequested):
        parse_args(["--help"], {})
    text = usage()
    for flag in FLAGS:
        assert f"  --{flag.name}" in text
    assert "Default: 8000." in text and "[GPU only: not supported]" in text


# ------------------------------------------------------------------------------------------- acting flags


def test_server_and_listener_flags_reach_options() -> None:
    options = parse(
        "--id=seawall-1",
        "--exit-timeout-secs",
        "5",
        "--http-address=0.0.0.0",
        "--http-port=9000",
        "--allow-http=false",
        "--reuse-http-port=true",
        "--grpc-address",
        "ipv6:[::1]",
        "--grpc-port=0",
        "--allow-grpc=ON",
        "--reuse-grpc-port=1",
        "--metrics-address=10.0.0.1",
        "--metrics-port=9002",
        "--allow-metrics=Off",
        "--http-thread-count=3",
        "--http-max-input-size=1024",
    )
    assert options.server_id == "seawall-1" and options.exit_timeout_secs == 5
    assert (options.http.address, options.http.port, options.http.allow) == ("0.0.0.0", 9000, False)
    assert options.http.reuse_port  # --http-thread-count is accepted and ignored
    assert (options.grpc.address, options.grpc.port, options.grpc.allow, options.grpc.reuse_port) == (
        "::1",
        0,
        True,
        True,
    )
    assert (options.metrics.address, options.metrics.port, options.metrics.allow) == ("10.0.0.1", 9002, False)
    assert options.limits.max_request_bytes == 1024


def test_metrics_address_defaults_to_the_http_address() -> None:
    assert parse("--http-address=0.0.0.0").metrics.address == "0.0.0.0"


def test_repository_flags_reach_options() -> None:
    options = parse_args(
        [
            "--model-store=/a",
            "--model-repository",
            "/b",
            "--model-store=/c",
            "--strict-readiness=false",
            "--exit-on-error=0",
            "--model-config-name=h100",
            "--model-control-mode=NONE",
            "--model-load-thread-count=2",
            "--model-load-retry-count=1",
        ],
        {},
    )
    repository = options.repository
    assert repository.paths == ("/a", "/b", "/c")
    assert not repository.strict_readiness and not repository.exit_on_error
    assert (repository.config_name, repository.control_mode) == ("h100", "none")
    assert (repository.load_thread_count, repository.load_retry_count) == (2, 1)


def test_auto_complete_flags() -> None:
    assert parse().repository.auto_complete_config
    assert not parse("--disable-auto-complete-config").repository.auto_complete_config
    command_line = parse_command_line([REPO, "--strict-model-config=true"], {})
    assert not command_line.options.repository.auto_complete_config
    assert any("'--strict-model-config' has been deprecated" in w for w in command_line.warnings)
    assert parse("--strict-model-config=false").repository.auto_complete_config
    # --disable-auto-complete-config wins over the deprecated flag, in any order
    assert not parse("--strict-model-config=false", "--disable-auto-complete-config").repository.auto_complete_config
    assert not parse("--disable-auto-complete-config", "--strict-model-config=false").repository.auto_complete_config


def test_backend_flags() -> None:
    options = parse(
        "--backend-config=default-max-batch-size=8",
        "--backend-config=python,shm-default-byte-size=a=b",
        "--backend-directory=/b",
        "--repoagent-directory=/r",
        "--cache-directory=/c",
    )
    assert options.backends.config == (
        ("", "default-max-batch-size", "8"),
        ("python", "shm-default-byte-size", "a=b"),
    )
    assert options.backends.setting("python", "default-max-batch-size", "4") == "8"
    assert (options.backends.backend_directory, options.backends.repoagent_directory) == ("/b", "/r")
    assert options.backends.cache_directory == "/c"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            ",a=b",
            "No backend specified. --backend-config option format is <backend name>,<setting>=<value> or "
            "<setting>=<value>. Got ,a=b",
        ),
        ("ab", "--backend-config option format is '<backend name>,<setting>=<value>'. Got ab"),
        ("a,b", "--backend-config option format is '<backend name>,<setting>=<value>'. Got a,b"),
        ("a,=b", "--backend-config option format is '<backend name>,<setting>=<value>'. Got a,=b"),
        ("a,b=", "--backend-config option format is '<backend name>,<setting>=<value>'. Got a,b="),
    ],
)
def test_backend_config_errors(value: str, message: str) -> None:
    assert error_of(REPO, f"--backend-config={value}") == f'Bad option: "--backend-config".\n{message}'


def test_logging_flags() -> None:
    log = parse(
        "--log-verbose=2",
        "--log-info=false",
        "--log-warning=FALSE",
        "--log-error=off",
        "--log-format=ISO8601",
        "--log-file=/tmp/x.log",
    ).log
    assert log == LogOptions(info=False, warning=False, error=False, verbose=2, format="ISO8601", file="/tmp/x.log")
    assert parse("--log-verbose=true").log.verbose == 1
    assert parse("--log-verbose=false").log.verbose == 0
    assert error_of(REPO, "--log-format=iso8601") == 'Bad option: "--log-format".\ninvalid argument for --log-format'


# ------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("On", True),
        ("1", True),
        ("false", False),
        ("OFF", False),
        ("0", False),
    ],
)
def test_bool_values(raw: str, value: bool) -> None:
    assert parse(f"--strict-readiness={raw}").repository.strict_readiness is value


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--allow-http=foo"], 'Bad option: "--allow-http".\ninvalid value for bool option: foo'),
        (["--allow-http="], 'Bad option: "--allow-http".\ninvalid value for bool option: '),
        (["--allow-http=yes"], 'Bad option: "--allow-http".\ninvalid value for bool option: yes'),
        (["--http-port=abc"], 'Bad option: "--http-port".\nInvalid option value. Got abc'),
        (["--exit-timeout-secs=1.5"], 'Bad option: "--exit-timeout-secs".\nInvalid option value. Got 1.5'),
        (
            ["--grpc-keepalive-time=99999999999"],
            'Bad option: "--grpc-keepalive-time".\nProvided option value is out of bound. Got 99999999999',
        ),
        (
            ["--http-port=70000"],
            'Bad option: "--http-port".\nport must be in the range 0-65535 (0 = any free port). Got 70000',
        ),
        (
            ["--metrics-port=-1"],
            'Bad option: "--metrics-port".\nport must be in the range 0-65535 (0 = any free port). Got -1',
        ),
        (
            ["--model-load-thread-count=0"],
            'Bad option: "--model-load-thread-count".\nmust be at least 1. Got 0',
        ),
        (["--http-max-input-size=0"], 'Bad option: "--http-max-input-size".\nmust be greater than 0. Got 0'),
        (
            ["--http-address="],
            'Bad option: "--http-address".\nempty address (use 0.0.0.0 to listen on every interface)',
        ),
        (
            ["--model-config-name="],
            'Bad option: "--model-config-name".\nError: empty argument for --model-config-name',
        ),
        (
            ["--model-control-mode=foo"],
            'Bad option: "--model-control-mode".\ninvalid argument for --model-control-mode',
        ),
        (["--log-verbose=abc"], 'Bad option: "--log-verbose".\nInvalid option value. Got abc'),
        (["--bogus"], "seawall: unrecognized option '--bogus'"),
        (
            ["--http-restricted-apis=inference:key=s3cret"],
            "seawall: unrecognized option '--http-restricted-apis'",
        ),
        (["-x"], "seawall: unrecognized option '-x'"),
        (["--http-port"], "seawall: option '--http-port' requires an argument"),
        (
            ["--disable-auto-complete-config=true"],
            "seawall: option '--disable-auto-complete-config' doesn't allow an argument",
        ),
        (["models"], "Unexpected argument: models"),
        (["--", "--http-port=1"], "Unexpected argument: --http-port=1"),
    ],
)
def test_bad_values_name_the_flag(argv: list[str], message: str) -> None:
    assert error_of(REPO, *argv) == message


def test_value_may_be_the_next_argument_and_the_last_one_wins() -> None:
    options = parse("--http-port", "1234", "--http-port=4321", "--id", "--weird")
    assert options.http.port == 4321 and options.server_id == "--weird"


# ------------------------------------------------------------------------------------------- restricted APIs


def test_restricted_api_groups() -> None:
    options = parse(
        "--http-restricted-api=shared-memory,model-repository:admin-key=a:b=c",
        "--http-restricted-api=inference:infer-key=x",
        "--grpc-restricted-protocol=health,metadata:grpc-key=y",
    )
    assert options.http.restricted == (
        Restriction(("shared-memory", "model-repository"), "admin-key", "a:b=c"),
        Restriction(("inference",), "infer-key", "x"),
    )
    assert options.grpc.restricted == (Restriction(("health", "metadata"), "grpc-key", "y"),)
    for text in (repr(options), repr(options.http), str(options.grpc)):
        assert "a:b=c" not in text and "infer-key=x" not in text and "'y'" not in text
    rows = banner_rows(options, "0.1.0")
    assert ("http_restricted_api", "inference:infer-key=<redacted>") in rows
    assert not any("a:b=c" in value for _, value in rows)


HTTP_FORMAT = "--http-restricted-api option format is '<config name>:<setting>=<value>'. Got "


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--http-restricted-api=health"], HTTP_FORMAT + "health"),
        (["--http-restricted-api=health:key"], HTTP_FORMAT + "health:key"),
        (["--http-restricted-api=:k=v"], HTTP_FORMAT + ":k=v"),
        (["--http-restricted-api=health:=v"], HTTP_FORMAT + "health:=v"),
        (["--http-restricted-api=health:k="], HTTP_FORMAT + "health:k="),
        (["--http-restricted-api=foo:k=v"], "unknown restricted api 'foo'"),
        (["--http-restricted-api=Health:k=v"], "unknown restricted api 'Health'"),
        (["--http-restricted-api=health,:k=v"], "unknown restricted api ''"),
        (
            ["--http-restricted-api=health:a=b", "--http-restricted-api=health,trace:c=d"],
            "restricted api 'health' can not be specified in multiple config groups",
        ),
        (
            ["--http-restricted-api=health,health:a=b"],
            "restricted api 'health' can not be specified in multiple config groups",
        ),
    ],
)
def test_restricted_api_errors(argv: list[str], message: str) -> None:
    assert error_of(REPO, *argv) == f'Bad option: "--http-restricted-api".\n{message}'


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "health",
            "--grpc-restricted-protocol option format is '<config name>:<setting>=<value>'. Got health",
        ),
        ("bar:k=v", "unknown restricted protocol 'bar'"),
    ],
)
def test_restricted_protocol_errors(value: str, message: str) -> None:
    assert error_of(REPO, f"--grpc-restricted-protocol={value}") == (
        f'Bad option: "--grpc-restricted-protocol".\n{message}'
    )
    two = error_of(REPO, "--grpc-restricted-protocol=trace:a=b", "--grpc-restricted-protocol=trace:c=d")
    assert two.endswith("restricted protocol 'trace' can not be specified in multiple config groups")


def test_an_upper_case_grpc_key_is_refused_at_start_up() -> None:
    message = error_of(REPO, "--grpc-restricted-protocol=inference:Admin-Key=v")
    assert "key 'Admin-Key' has upper-case letters" in message and "triton-grpc-protocol-Admin-Key" in message
    assert parse("--http-restricted-api=inference:Admin-Key=v").http.restricted[0].key == "Admin-Key"


def test_restrictions_from_a_secret_file(tmp_path: Path) -> None:
    secrets = tmp_path / "restricted"
    secrets.write_text("# admin group\nmodel-repository,shared-memory:admin-key=s3cr=t\n\ninference:k=v\n")
    command_line = parse_command_line([REPO, f"--http-restricted-api-file={secrets}"], {})
    assert command_line.options.http.restricted == (
        Restriction(("model-repository", "shared-memory"), "admin-key", "s3cr=t", source=str(secrets)),
        Restriction(("inference",), "k", "v", source=str(secrets)),
    )
    assert not any("command line" in warning for warning in command_line.warnings)
    on_argv = parse_command_line([REPO, "--http-restricted-api=trace:k=v"], {}).options
    assert "--http-restricted-api" in [finding.setting for finding in assess(on_argv)]  # a report finding now
    secrets.write_text("inference:k=top-secret\nhealth:k=\n")
    message = error_of(REPO, f"--grpc-restricted-protocol-file={secrets}")
    assert f"{secrets}:2: format is" in message and "top-secret" not in message
    secrets.write_text("inference:k=v\n")
    message = error_of(REPO, f"--http-restricted-api-file={secrets}", "--http-restricted-api=inference:a=b")
    assert message.endswith("restricted api 'inference' can not be specified in multiple config groups")
    assert "cannot read" in error_of(REPO, f"--http-restricted-api-file={tmp_path / 'missing'}")


# ------------------------------------------------------------------------------------------- environment


VERTEX_ROUTES = {"AIP_PREDICT_ROUTE": "/predict", "AIP_HEALTH_ROUTE": "/health"}


def test_aip_mode_prediction_flips_the_defaults() -> None:
    environ = {"AIP_MODE": "PREDICTION", **VERTEX_ROUTES}
    options = parse(environ=environ)
    assert options.vertex.allow and not options.http.allow and not options.grpc.allow
    assert (options.vertex.predict_route, options.vertex.health_route) == ("/predict", "/health")
    assert (options.vertex.address, options.vertex.port) == ("127.0.0.1", 8080)
    options = parse("--allow-vertex-ai=false", "--allow-http=true", environ=environ)
    assert options.http.allow and not options.grpc.allow and not options.vertex.allow
    assert not parse(environ=VERTEX_ROUTES).vertex.allow


def test_vertex_ai_port_comes_from_aip_http_port_unless_given() -> None:
    environ = {"AIP_HTTP_PORT": "9090", **VERTEX_ROUTES}
    assert parse("--allow-vertex-ai=true", environ=environ).vertex.port == 9090
    assert parse("--allow-vertex-ai=true", "--vertex-ai-port=0", environ=environ).vertex.port == 0
    options = parse("--allow-vertex-ai=true", "--vertex-ai-address=0.0.0.0", "--vertex-ai-default-model=m",
                    environ=VERTEX_ROUTES)  # fmt: skip
    assert (options.vertex.address, options.vertex.default_model) == ("0.0.0.0", "m")
    assert error_of(REPO, environ={"AIP_HTTP_PORT": "x"}) == "AIP_HTTP_PORT must be a port number. Got x"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AIP_HEALTH_ROUTE": "/h"}, "API_PREDICT_ROUTE is not defined for Vertex AI endpoint"),
        ({"AIP_PREDICT_ROUTE": "/p"}, "API_HEALTH_ROUTE is not defined for Vertex AI endpoint"),
        ({"AIP_PREDICT_ROUTE": "p", "AIP_HEALTH_ROUTE": "/h"}, "AIP_PREDICT_ROUTE must be a path starting with '/'"),
        ({"AIP_PREDICT_ROUTE": "/p", "AIP_HEALTH_ROUTE": "/p"}, "AIP_PREDICT_ROUTE and AIP_HEALTH_ROUTE must differ"),
    ],
)
def test_vertex_ai_needs_its_routes(environ: dict[str, str], message: str) -> None:
    assert error_of(REPO, "--allow-vertex-ai=true", environ=environ) == message


def test_sagemaker_flags_and_environment() -> None:
    options = parse()
    assert options.sagemaker == Options().sagemaker and not options.sagemaker.allow
    assert options.sagemaker.address == "127.0.0.1" and options.sagemaker.port == 8080
    environ = {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "simple", "SAGEMAKER_TRITON_PING_MODE": "live"}
    options = parse("--allow-sagemaker=true", "--sagemaker-port=0", "--sagemaker-address=0.0.0.0",
                    "--sagemaker-model-root=/srv/mme", "--sagemaker-thread-count=2", environ=environ)  # fmt: skip
    sagemaker = options.sagemaker
    assert (sagemaker.allow, sagemaker.port, sagemaker.address, sagemaker.model_root) == (
        True, 0, "0.0.0.0", "/srv/mme",
    )  # fmt: skip
    assert (sagemaker.default_model, sagemaker.ping_mode) == ("simple", "live")  # the thread count is ignored
    assert not sagemaker.multi_model and sagemaker.max_models == 64
    options = parse("--sagemaker-max-models=3", environ={"SAGEMAKER_MULTI_MODEL": "true"})
    assert (options.sagemaker.multi_model, options.sagemaker.max_models) == (True, 3)
    # only "true", as Triton's container entrypoint tests it
    assert not parse(environ={"SAGEMAKER_MULTI_MODEL": "1"}).sagemaker.multi_model
    assert "--sagemaker-max-models" in error_of(REPO, "--sagemaker-max-models=0")
    assert error_of(REPO, environ={"SAGEMAKER_TRITON_PING_MODE": "x"}) == (
        "SAGEMAKER_TRITON_PING_MODE must be 'ready' or 'live'. Got x"
    )


def test_sagemaker_safe_port_range() -> None:
    options = parse("--allow-sagemaker=true", "--sagemaker-safe-port-range=8000-8002")
    assert options.sagemaker.safe_port_range == (8000, 8002)
    assert error_of(REPO, "--allow-sagemaker=true", "--sagemaker-safe-port-range=9000-9010") == (
        "The server cannot listen to HTTP requests at port 8000, allowed port range is [9000, 9010] "
        "(--sagemaker-safe-port-range)"
    )
    parse("--allow-sagemaker=true", "--sagemaker-safe-port-range=9000-9010", "--http-port=0", "--grpc-port=0",
          "--metrics-port=0")  # fmt: skip
    parse("--sagemaker-safe-port-range=9000-9010")  # SageMaker off: the range binds nothing
    assert error_of(REPO, "--sagemaker-safe-port-range=9000") == (
        'Bad option: "--sagemaker-safe-port-range".\n--<option> argument requires format <first>-<second>. Found: 9000'
    )
    assert "is empty" in error_of(REPO, "--sagemaker-safe-port-range=9-1")


def test_sagemaker_and_vertex_ports_collide_like_the_others() -> None:
    assert error_of(REPO, "--allow-sagemaker=true", "--allow-vertex-ai=true", environ=VERTEX_ROUTES) == (
        "The server cannot listen to SageMaker requests and Vertex AI requests at the same address and port "
        "127.0.0.1:8080"
    )
    parse("--allow-sagemaker=true", "--allow-vertex-ai=true", "--vertex-ai-port=8081", environ=VERTEX_ROUTES)


# ------------------------------------------------------------------------------------------- TLS


@pytest.mark.parametrize("listener", ["http", "grpc", "metrics"])
def test_tls_flags_reach_options_and_mutual_implies_tls(listener: str, tmp_path: Path) -> None:
    import trustme

    authority = trustme.CA()
    server = authority.issue_cert("localhost")
    cert, key, root = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "root.pem"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(root))
    files = (f"--{listener}-server-cert={cert}", f"--{listener}-server-key={key}", f"--{listener}-root-cert={root}")
    tls = getattr(parse(f"--{listener}-use-ssl-mutual=true", *files), listener).tls
    assert tls.use_ssl and tls.use_ssl_mutual
    assert (tls.server_cert, tls.server_key, tls.root_cert) == (str(cert), str(key), str(root))
    assert not getattr(parse(*files), listener).tls.use_ssl


@pytest.mark.parametrize("listener", ["http", "grpc", "metrics"])
def test_tls_files_are_checked_at_start_up_naming_the_flag(listener: str, tmp_path: Path) -> None:
    import trustme

    server = trustme.CA().issue_cert("localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    prefix = f"error: creating server: Invalid argument - --{listener}"
    on = f"--{listener}-use-ssl=true"
    assert error_of(REPO, on, f"--{listener}-server-key={key}") == f"{prefix}-server-cert is required when TLS is on"
    missing = tmp_path / "missing.pem"
    assert error_of(REPO, on, f"--{listener}-server-cert={missing}", f"--{listener}-server-key={key}") == (
        f"{prefix}-server-cert: cannot read '{missing}': No such file or directory"
    )
    assert error_of(REPO, on, f"--{listener}-server-cert={key}", f"--{listener}-server-key={key}") == (
        f"{prefix}-server-cert: '{key}' holds no PEM certificate"
    )
    assert error_of(REPO, on, f"--{listener}-server-cert={cert}", f"--{listener}-server-key={cert}") == (
        f"{prefix}-server-key: '{cert}' holds no PEM private key"
    )
    other = tmp_path / "other.pem"
    trustme.CA().issue_cert("localhost").private_key_pem.write_to_path(str(other))
    mismatch = error_of(REPO, on, f"--{listener}-server-cert={cert}", f"--{listener}-server-key={other}")
    assert mismatch.startswith(f"{prefix}-server-cert / --{listener}-server-key: the key does not match")
    mutual = f"--{listener}-use-ssl-mutual=true"
    assert error_of(REPO, mutual, f"--{listener}-server-cert={cert}", f"--{listener}-server-key={key}") == (
        f"{prefix}-root-cert is required when TLS is on"
    )
    # a listener that is off is not checked
    parse(on, f"--allow-{listener}=false") if listener != "http" else parse(on, "--allow-http=false")


def test_aip_storage_uri_is_the_default_repository() -> None:
    assert parse_args([], {"AIP_STORAGE_URI": "/srv/models"}).repository.paths == ("/srv/models",)
    assert parse_args(["--model-store=/m"], {"AIP_STORAGE_URI": "/srv"}).repository.paths == ("/m",)
    assert "cloud storage is not yet supported" in error_of(environ={"AIP_STORAGE_URI": "gs://bucket/models"})
    assert error_of() == "error: creating server: Invalid argument - --model-repository must be specified"


# ----------------------------------------------------------------------------------------- not yet supported

#: every flag Seawall does not implement: (values that change nothing — Triton's default or "off" — and are
#: accepted, a value that would change something and is refused by name; None: no such value)
UNSUPPORTED: dict[str, tuple[list[str], str | None]] = {
    "model-namespacing": (["false", "0"], "true"),
    "enable-peer-access": (["true", "false"], None),  # no GPU: either way changes nothing
    "http-header-forward-pattern": ([""], "x-.*"),
    "grpc-header-forward-pattern": ([""], "x-.*"),
    "grpc-infer-allocation-pool-size": (["8"], "16"),
    "grpc-infer-response-compression-level": (["none"], "high"),
    "grpc-infer-thread-count": (["2"], "4"),
    "grpc-max-response-pool-size": (["2147483647"], "100"),
    "allow-gpu-metrics": (["true", "false"], None),
    "allow-cpu-metrics": (["true", "off"], None),  # Seawall has no nv_cpu_* metrics either way
    "metrics-interval-ms": (["2000"], "1000"),
    "metrics-config": (
        ["summary_latencies=false", "histogram_latencies=0", "summary_quantiles=0.5:0.05"],
        "summary_latencies=true",
    ),
    "pinned-memory-pool-byte-size": (["268435456", "0"], "1024"),
    "cuda-memory-pool-byte-size": (["0:67108864", "1:0"], "0:1024"),
    "cuda-virtual-address-size": (["0:1073741824"], "0:1024"),
    "min-supported-compute-capability": (["6.0", "6"], "7.5"),
    "buffer-manager-thread-count": (["0"], "2"),
    "host-policy": ([], "gpu_0,numa-node=0"),
    "model-load-gpu-limit": ([], "0:0.5"),
    "trace-file": ([""], "/tmp/trace.json"),
    "trace-level": (["OFF", "off"], "TIMESTAMPS"),
    "trace-rate": (["1000"], "1"),
    "trace-count": (["-1"], "5"),
    "trace-log-frequency": (["0"], "10"),
}


def test_every_unsupported_flag_has_its_harmless_values_listed() -> None:
    assert sorted(f.name for f in FLAGS if f.support != "yes") == sorted(UNSUPPORTED)


@pytest.mark.parametrize(
    ("name", "value"), [(name, value) for name, (values, _) in UNSUPPORTED.items() for value in values]
)
def test_unsupported_flags_are_accepted_at_tritons_default_or_off(name: str, value: str) -> None:
    options = parse(f"--{name}={value}", f"--{name}", value)  # both spellings, and twice for repeatable flags
    if name != "metrics-config":  # which keeps the settings it was given
        assert options == parse()


@pytest.mark.parametrize("name", [name for name, (_, refused) in UNSUPPORTED.items() if refused is not None])
def test_unsupported_flags_are_refused_by_name_otherwise(name: str) -> None:
    refused = UNSUPPORTED[name][1]
    message = error_of(REPO, f"--{name}={refused}")
    if BY_NAME[name].support == "gpu":
        assert message == f"--{name} is a GPU option; Seawall is a CPU-only server and does not support it"
    else:
        assert message == f"--{name} is not yet supported by Seawall (see docs/differences.md)"
    default = UNSUPPORTED[name][0][:1]
    assert error_of(REPO, *[f"--{name}={value}" for value in default], f"--{name}={refused}") == message


def test_grpc_keepalive_and_connection_age_flags_reach_options() -> None:
    assert parse("--grpc-keepalive-time=7200000", "--grpc-max-connection-age=0").grpc == Options().grpc
    grpc = parse(
        "--grpc-keepalive-time=1000",
        "--grpc-keepalive-timeout=500",
        "--grpc-keepalive-permit-without-calls=true",
        "--grpc-http2-max-pings-without-data=0",
        "--grpc-http2-min-recv-ping-interval-without-data=5000",
        "--grpc-http2-max-ping-strikes=0",
        "--grpc-max-connection-age=60000",
        "--grpc-max-connection-age-grace=1000",
    ).grpc
    assert (grpc.keepalive_time_ms, grpc.keepalive_timeout_ms, grpc.keepalive_permit_without_calls) == (1000, 500, True)
    assert (grpc.http2_max_pings_without_data, grpc.http2_min_recv_ping_interval_without_data_ms) == (0, 5000)
    assert (grpc.http2_max_ping_strikes, grpc.max_connection_age_ms, grpc.max_connection_age_grace_ms) == (
        0,
        60000,
        1000,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ("--grpc-keepalive-time=0", 'Bad option: "--grpc-keepalive-time".\nmust be at least 1. Got 0'),
        ("--grpc-keepalive-timeout=-1", 'Bad option: "--grpc-keepalive-timeout".\nmust be at least 1. Got -1'),
        ("--grpc-max-connection-age=-5", 'Bad option: "--grpc-max-connection-age".\nmust not be negative. Got -5'),
        (
            "--grpc-http2-max-ping-strikes=x",
            'Bad option: "--grpc-http2-max-ping-strikes".\nInvalid option value. Got x',
        ),
        (
            "--grpc-max-connection-age-grace=2147483648",
            'Bad option: "--grpc-max-connection-age-grace".\nProvided option value is out of bound. Got 2147483648',
        ),
    ],
)
def test_grpc_keepalive_values_are_checked(argv: str, message: str) -> None:
    assert error_of(REPO, argv) == message


@pytest.mark.parametrize("mode", ["poll", "explicit", "POLL", "None"])
def test_model_control_modes_fold_case(mode: str) -> None:
    opt_in = ("--allow-unrestricted-model-repository=true",) if mode == "explicit" else ()
    assert parse(f"--model-control-mode={mode}", *opt_in).repository.control_mode == mode.lower()


def test_control_mode_defaults_to_none_with_tritons_poll_interval() -> None:
    options = parse()
    assert (options.repository.control_mode, options.repository.poll_secs) == ("none", 15)
    assert parse("--repository-poll-secs=2").repository.poll_secs == 2


def test_load_model_needs_explicit_mode() -> None:
    assert error_of(REPO, "--load-model=a") == (
        "Error: Use of '--load-model' requires setting '--model-control-mode=explicit' as well."
    )
    opt_in = "--allow-unrestricted-model-repository=true"
    options = parse("--model-control-mode=explicit", opt_in, "--load-model=a", "--load-model=b")
    assert options.repository.load_models == ("a", "b")
    assert error_of(REPO, "--model-control-mode=explicit", opt_in, "--load-model=*", "--load-model=b") == (
        "Error: '--load-model=*' must be the only --load-model given."
    )


def test_client_shared_memory_is_off_unless_allowed() -> None:
    assert parse().allow_client_shm is False
    assert parse("--allow-client-shm=true").allow_client_shm is True


def test_unsupported_flags_are_type_checked_first_and_all_named() -> None:
    assert error_of(REPO, "--model-namespacing=maybe") == (
        'Bad option: "--model-namespacing".\ninvalid value for bool option: maybe'
    )
    assert error_of(REPO, "--cache-config=size=100") == (
        'Bad option: "--cache-config".\nNo cache specified. --cache-config option format is '
        "<cache name>,<setting>=<value>. Got size=100"
    )
    assert error_of(REPO, "--metrics-config=a,b=c") == (
        'Bad option: "--metrics-config".\n--metrics-config option format is <setting>=<value>. Got a,b=c'
    )
    both = error_of(REPO, "--model-namespacing=true", "--min-supported-compute-capability=7.0").splitlines()
    assert [line.split()[0] for line in both] == ["--model-namespacing", "--min-supported-compute-capability"]


def test_rate_limit_flags() -> None:
    options = parse("--rate-limit=EXECUTION_COUNT", "--rate-limit-resource=R1:4", "--rate-limit-resource", "R2:2:0")
    assert options.rate_limit == "execution_count"
    assert options.rate_limit_resources == (("R1", 4, -1), ("R2", 2, 0))
    assert parse("--rate-limit=off").rate_limit == "off"
    rows = dict(banner_rows(options, "0.1.0"))  # as Triton prints them
    assert rows["rate_limit"] == "EXEC_COUNT"
    assert rows["rate_limit_resource[0]"] == '{"name":"R1", "count":4 "device":-1}'
    assert rows["rate_limit_resource[1]"] == '{"name":"R2", "count":2 "device":0}'
    assert dict(banner_rows(parse(), "0.1.0"))["rate_limit"] == "OFF"
    assert error_of(REPO, "--rate-limit=sometimes") == 'Bad option: "--rate-limit".\ninvalid argument for --rate-limit'
    assert error_of(REPO, "--rate-limit-resource=R1") == (
        'Bad option: "--rate-limit-resource".\n--<option> argument requires format <first>:<second>. Found: R1'
    )


def test_switching_off_an_unsupported_service_is_accepted() -> None:
    parse("--allow-sagemaker=false", "--allow-gpu-metrics=false", "--allow-client-shm=0", "--rate-limit=OFF")


# ------------------------------------------------------------------------------------------- port collisions


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--grpc-port=8000"], "HTTP requests and GRPC requests at the same address and port 127.0.0.1:8000"),
        (
            ["--metrics-port=8000"],
            "HTTP requests and metrics requests at the same address and port 127.0.0.1:8000",
        ),
        (
            ["--grpc-port=8002"],
            "GRPC requests and metrics requests at the same address and port 127.0.0.1:8002",
        ),
    ],
)
def test_port_collisions(argv: list[str], message: str) -> None:
    assert error_of(REPO, *argv) == f"The server cannot listen to {message}"


def test_no_collision_for_port_zero_other_addresses_or_disabled_services() -> None:
    parse("--http-port=0", "--grpc-port=0", "--metrics-port=0")
    parse("--grpc-port=8000", "--grpc-address=127.0.0.2")
    parse("--grpc-port=8000", "--allow-grpc=false")
    parse("--metrics-port=8000", "--allow-http=false")


# ------------------------------------------------------------------------------------------- logging


def _record(message: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("seawall.test", level, "/x/module.py", 12, message, args, None)


def test_log_lines_have_triton_prefixes() -> None:
    line = LineFormatter(LogSettings(LogOptions())).format(_record("hello %s", "world"))
    assert re.fullmatch(rf"I\d{{4}} \d\d:\d\d:\d\d\.\d{{6}} {os.getpid()} module\.py:12\] hello world", line)
    line = LineFormatter(LogSettings(LogOptions(format="ISO8601"))).format(_record("careful", level=logging.WARNING))
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ W {os.getpid()} module\.py:12\] careful", line)


def test_client_values_cannot_inject_log_lines() -> None:
    hostile = "m\nI1125 00:00:00.000000 1 server.cc:1] forged\r\x1b[2J\x00\u2028\u202e\\n"
    line = LineFormatter(LogSettings(LogOptions())).format(_record("unknown model '%s'", hostile, level=logging.ERROR))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x00" not in line
    assert "\u2028" not in line and "\u202e" not in line
    assert line.endswith(
        "unknown model 'm\\nI1125 00:00:00.000000 1 server.cc:1] forged\\r\\x1b[2J\\x00\\u2028\\u202e\\\\n'"
    )
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        import sys

        record = _record("failed")
        record.exc_info = sys.exc_info()
    assert "\n" not in LineFormatter(LogSettings(LogOptions())).format(record)


def test_escape_keeps_printable_text() -> None:
    assert escape("model 'résumé' v1 — ok") == "model 'résumé' v1 — ok"
    assert escape("a\tb\u0085c\x7f") == "a\\tb\\x85c\\x7f"


def test_level_switches_are_independent() -> None:
    switch = LevelSwitch(LogSettings(LogOptions(info=False, warning=True, error=False, verbose=0)))
    assert [switch.filter(_record("x", level=level)) for level in (10, 20, 30, 40)] == [
        False,
        False,
        True,
        False,
    ]
    assert LevelSwitch(LogSettings(LogOptions(verbose=1))).filter(_record("x", level=logging.DEBUG))


def test_log_file_is_appended_and_private(tmp_path: Path) -> None:
    path = tmp_path / "seawall.log"
    path.write_text("earlier\n")
    path.chmod(0o600)
    fresh = tmp_path / "fresh.log"
    loggers = [logging.getLogger("seawall"), logging.getLogger("seawall.audit")]
    saved = [(list(each.handlers), each.level, each.propagate) for each in loggers]
    try:
        configure_logging(LogSettings(LogOptions(file=str(fresh))))
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
        configure_logging(LogSettings(LogOptions(file=str(path), verbose=1)))
        logging.getLogger("seawall.test").debug("verbose %d", 1)
    finally:
        for each, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            for handler in list(each.handlers):
                each.removeHandler(handler)
                handler.close()
            for handler in handlers:
                each.addHandler(handler)
            each.setLevel(level)
            each.propagate = propagate
    lines = path.read_text().splitlines()
    assert lines[0] == "earlier" and lines[1].endswith("] verbose 1")


# ------------------------------------------------------------------------------------------- the process


def test_process_rejects_an_unknown_flag() -> None:
    result = run_seawall("--no-such-flag=1")
    assert result.returncode == 1
    assert "unrecognized option '--no-such-flag'" in result.stderr


def test_process_rejects_a_bad_bool() -> None:
    result = run_seawall(REPO, "--strict-readiness=maybe")
    assert result.returncode == 1
    assert result.stderr.startswith('Bad option: "--strict-readiness".\ninvalid value for bool option: maybe')


def test_process_refuses_a_flag_it_does_not_support_yet() -> None:
    result = run_seawall(REPO, "--model-namespacing=true")
    assert result.returncode == 1
    assert "--model-namespacing is not yet supported by Seawall" in result.stderr


def test_process_help_exits_zero() -> None:
    result = run_seawall("--help")
    assert result.returncode == 0 and "--model-repository <string>" in result.stdout


def test_log_escaping_cannot_be_turned_off() -> None:
    command_line = parse_command_line([REPO], {"TRITON_SERVER_ESCAPE_LOG_MESSAGES": "0"})
    assert any("TRITON_SERVER_ESCAPE_LOG_MESSAGES=0 is ignored" in w for w in command_line.warnings)


def test_process_reports_a_start_up_error_like_triton(tmp_path: Path) -> None:
    result = run_seawall(f"--model-repository={tmp_path / 'missing'}", "--http-port=0", "--grpc-port=0",
                         "--metrics-port=0", "--log-info=false")  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("error: creating server: ")


def test_run_reports_a_start_up_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    options = parse_args([f"--model-repository={tmp_path / 'missing'}", "--http-port=0", "--grpc-port=0"], {})
    assert run(options) == 1
    assert capsys.readouterr().err.startswith("error: creating server: ")


def test_process_reports_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_seawall(f"--model-repository={tmp_path}", f"--http-port={port}", "--grpc-port=0",
                             "--metrics-port=0", "--log-info=false")  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("failed to start HTTP service: "), result.stderr


@pytest.mark.parametrize(
    ("flags", "service"),
    [
        (("--http-port=0", "--grpc-port={port}", "--metrics-port=0"), "GRPC"),
        (("--http-port=0", "--grpc-port=0", "--metrics-port={port}"), "Metrics"),
        (
            ("--http-port=0", "--grpc-port=0", "--metrics-port=0", "--allow-sagemaker=true", "--sagemaker-port={port}"),
            "Sagemaker",
        ),  # fmt: skip
    ],
)
def test_a_port_in_use_names_its_listener(tmp_path: Path, flags: tuple[str, ...], service: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [flag.format(port=port) for flag in flags]
        result = run_seawall(f"--model-repository={tmp_path}", *argv, "--log-info=false")
    assert result.returncode == 1
    # grpc's C core may log its own line first
    assert result.stderr.splitlines()[-1].startswith(f"failed to start {service} service: "), result.stderr


def test_a_failed_bind_is_named_by_the_listener_not_by_its_port_number(tmp_path: Path) -> None:
    """HTTP and gRPC on the same port number at two addresses: gRPC (started first) fails, and says so (the
    error text names the port, which HTTP also has)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.2", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_seawall(f"--model-repository={tmp_path}", "--http-address=127.0.0.1", f"--http-port={port}",
                             "--grpc-address=127.0.0.2", f"--grpc-port={port}", "--metrics-port=0",
                             "--log-info=false")  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("failed to start GRPC service: "), result.stderr


# ------------------------------------------------------------------------ secrets from the environment


def test_restriction_from_an_environment_variable() -> None:
    options = parse("--http-restricted-api-env=SEAWALL_ADMIN", environ={"SEAWALL_ADMIN": "model-repository:k=v=s"})
    [restriction] = options.http.restricted
    assert (restriction.categories, restriction.key, restriction.value) == (("model-repository",), "k", "v=s")
    assert "v=s" not in repr(options)


def test_a_missing_or_malformed_variable_never_echoes_the_secret() -> None:
    assert error_of(REPO, "--grpc-restricted-protocol-env=NOPE") == (
        'Bad option: "--grpc-restricted-protocol-env".\nenvironment variable NOPE is not set'
    )
    message = error_of(REPO, "--http-restricted-api-env=BAD", environ={"BAD": "no-colon-secret"})
    assert "no-colon-secret" not in message and "BAD: format is" in message


# ------------------------------------------------------------------------------ limits and plugins


def test_limit_flags_reach_the_limits() -> None:
    limits = parse(
        "--max-request-header-bytes=2048",
        "--max-json-depth=10",
        "--max-inputs=4",
        "--max-outputs=5",
        "--max-tensor-elements=100",
        "--max-tensor-bytes=400",
        "--max-chunks=8",
        "--max-decompression-ratio=3",
        "--grpc-max-message-size=1000",
        "--grpc-max-concurrent-streams=7",
    ).limits
    assert (limits.max_header_bytes, limits.max_json_depth, limits.max_inputs, limits.max_outputs) == (2048, 10, 4, 5)
    assert (limits.max_tensor_elements, limits.max_tensor_bytes, limits.max_chunks) == (100, 400, 8)
    assert (limits.max_decompression_ratio, limits.grpc_max_message_bytes, limits.grpc_max_concurrent_streams) == (
        3,
        1000,
        7,
    )
    assert "--max-json-depth" in error_of(REPO, "--max-json-depth=0")


def test_grpc_request_bytes_held_at_once_is_a_flag() -> None:
    assert parse().limits.grpc_max_inflight_request_bytes == 256 * 1024 * 1024
    limits = parse("--grpc-max-message-size=1000", "--grpc-max-inflight-request-bytes=1005").limits
    assert limits.grpc_max_inflight_request_bytes == 1005
    assert error_of(REPO, "--grpc-max-message-size=1000", "--grpc-max-inflight-request-bytes=1004") == (
        'Bad option: "--grpc-max-inflight-request-bytes".\nmust be at least --grpc-max-message-size + 5 (1005), '
        "or no message of the largest size could ever be read. Got 1004"
    )
    assert error_of(REPO, "--grpc-max-inflight-request-bytes=0") == (
        'Bad option: "--grpc-max-inflight-request-bytes".\nmust be greater than 0. Got 0'
    )


def test_busy_poll_window_is_a_flag() -> None:
    assert parse().limits.busy_poll_us == 1000
    assert parse("--busy-poll-us=0").limits.busy_poll_us == 0
    assert parse("--busy-poll-us=250").limits.busy_poll_us == 250
    assert error_of(REPO, "--busy-poll-us=-1") == 'Bad option: "--busy-poll-us".\nmust not be negative. Got -1'
    assert error_of(REPO, "--busy-poll-us=1ms") == 'Bad option: "--busy-poll-us".\nInvalid option value. Got 1ms'


def test_untrusted_plugin_paths_are_repeatable() -> None:
    backends = parse("--allow-untrusted-plugin-path=/a", "--allow-untrusted-plugin-path=/b").backends
    assert backends.allow_untrusted_paths == ("/a", "/b")


# ----------------------------------------------------------------------------------- security report


def test_security_report_of_a_risky_configuration(tmp_path: Path) -> None:
    done = run_seawall(
        f"--model-repository={tmp_path}",
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",  # explicit mode without a key
        "--http-address=0.0.0.0",
        "--http-restricted-api=logging:k=topsecret",
        "--security-report",
    )
    assert done.returncode == 1
    assert "--model-control-mode=explicit: any client can load model code" in done.stdout
    assert "--http-address=0.0.0.0: HTTP is reachable from the network without TLS" in done.stdout
    assert "topsecret" not in done.stdout + done.stderr


def test_security_report_of_a_locked_down_configuration(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    done = run_seawall(f"--model-repository={tmp_path}", "--allow-metrics=false", "--security-report")
    findings = [line for line in done.stdout.splitlines() if line.startswith("  ")]
    assert done.returncode == (1 if findings else 0)
    # only running as root (and so model code as root) may remain (CI runs as root)
    assert all(line.startswith(("  user:", "  --model-user:")) for line in findings)


def test_security_report_needs_no_model_repository() -> None:
    """What the flags alone say: no repository is read or required for the report."""
    done = run_seawall("--http-address=0.0.0.0", "--security-report")
    assert done.returncode == 1, done.stderr
    assert "--http-address=0.0.0.0: HTTP is reachable from the network without TLS" in done.stdout
    assert "--model-repository" not in done.stderr
    refused = run_seawall("--http-address=0.0.0.0")  # serving still needs one
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: creating server: Invalid argument - --model-repository must be specified"


def test_start_up_log_says_per_listener_how_exposed_it_is(caplog: pytest.LogCaptureFixture) -> None:
    """One line per listener that is on, from the listener table: loopback ones are noted, exposed ones without
    restriction are warned about; the risky settings themselves come once, from the security report."""
    from seawall._cli_log import log_start_up
    from seawall.options import GrpcOptions, HttpOptions, MetricsOptions, SageMakerOptions

    options = Options(
        http=HttpOptions(address="0.0.0.0"),
        grpc=GrpcOptions(address="::1"),
        metrics=MetricsOptions(address="10.1.2.3"),
        sagemaker=SageMakerOptions(allow=True, address="0.0.0.0"),
    )
    with caplog.at_level(logging.INFO, logger="seawall"):
        log_start_up(options, "x", (), ())
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if " service " in r.getMessage()]
    assert lines == [
        (
            "WARNING",
            "HTTP service listens on 0.0.0.0 and no --http-restricted-api is set: every API is open to "
            "anyone who can reach it",
        ),
        ("INFO", "gRPC service binds ::1 only; set --grpc-address to expose it"),
        ("WARNING", "Metrics service listens on 10.1.2.3; it has no access restriction"),
        (
            "WARNING",
            "SageMaker service listens on 0.0.0.0 and no --http-restricted-api is set: every API is open to "
            "anyone who can reach it",
        ),
    ]


def test_grpc_experiments_default_to_the_fast_endpoints_unless_the_operator_chose() -> None:
    """The fast gRPC setting is the `seawall` command's own default, not only `make run`'s or the image's."""
    import subprocess
    import sys

    from seawall.cli import GRPC_EXPERIMENTS, fast_defaults

    environ: dict[str, str] = {}
    fast_defaults(environ)
    assert environ == {"GRPC_EXPERIMENTS": "-event_engine_listener,-event_engine_for_all_other_endpoints"}
    for chosen in ("", "event_engine_listener"):
        environ = {"GRPC_EXPERIMENTS": chosen}
        fast_defaults(environ)
        assert environ == {"GRPC_EXPERIMENTS": chosen}
    # grpc must not be loaded before main() sets it: the command line's modules never import it
    code = "import sys, seawall.cli; print(any(m == 'grpc' or m.startswith('grpc.') for m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert (loaded.strip(), GRPC_EXPERIMENTS.startswith("-")) == ("False", True)


_FAULTS = """
import resource, sys
from seawall.cli import fast_defaults
tuned = fast_defaults({}) if sys.argv[1] == "tune" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def requests():  # 16 requests in flight with a 1 MiB buffer each (written: every page touched), then all answered
    buffers = [bytes([n]) * (1 << 20) for n in range(16)]
    del buffers
requests()  # warm
before = faults()
for _ in range(20):
    requests()
print(tuned, faults() - before)
"""


@pytest.mark.parametrize("how", ["tune", "plain"])
def test_the_allocator_keeps_freed_megabytes_for_the_next_request(how: str) -> None:
    """Seawall tunes glibc's allocator so that a 1 MiB buffer freed by one request serves the next without the
    kernel zero-filling new pages for it (256 page faults per MiB untuned)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FAULTS, how], capture_output=True, text=True, check=True).stdout
    tuned, faults = out.split()
    if how == "tune":
        assert (tuned, int(faults) < 256) == ("True", True), out  # less than one buffer's pages in all
    else:
        assert int(faults) > 10 * 16 * 256, out  # the baseline the tuning removes: each buffer's pages again


def test_an_operators_allocator_variables_win() -> None:
    from seawall.cli import MALLOC_VARIABLES, fast_defaults

    for name in MALLOC_VARIABLES:
        environ = {name: "1"}
        assert fast_defaults(environ) is False and environ[name] == "1"
