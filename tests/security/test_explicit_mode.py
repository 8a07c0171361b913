"""Explicit model control lets clients load model code, so it starts only with model-repository restricted on
every listener that reaches the load API, or with the operator's explicit opt-in (issue 9, Also)."""

from __future__ import annotations

from pathlib import Path

import pytest

from seawall.cli import CliError, parse_command_line
from seawall.security.report import assess
from tests.harness import EXAMPLES, http_request, run_seawall, start_seawall

REPO = f"--model-repository={EXAMPLES}"
EXPLICIT = "--model-control-mode=explicit"
OPT_IN = "--allow-unrestricted-model-repository=true"
HTTP_KEY = "--http-restricted-api=model-repository:admin-key=k"
GRPC_KEY = "--grpc-restricted-protocol=model-repository:admin-key=k"
VERTEX = {"AIP_PREDICT_ROUTE": "/predict", "AIP_HEALTH_ROUTE": "/health"}


def refusal(listeners: str) -> str:
    return (
        "error: --model-control-mode=explicit lets clients load model code, and model-repository is not "
        f"restricted on {listeners}. Restrict it (--http-restricted-api / --grpc-restricted-protocol "
        "model-repository:<header>=<value>, or their -file forms), or start anyway with "
        "--allow-unrestricted-model-repository=true"
    )


@pytest.mark.parametrize(
    ("flags", "environ", "listeners"),
    [
        ((), {}, "HTTP, gRPC"),
        ((HTTP_KEY,), {}, "gRPC"),
        ((GRPC_KEY,), {}, "HTTP"),
        ((GRPC_KEY, "--allow-http=false", "--allow-vertex-ai=true"), VERTEX, "Vertex AI"),
        ((GRPC_KEY, "--allow-http=false", "--allow-sagemaker=true"), {"SAGEMAKER_MULTI_MODEL": "true"}, "SageMaker"),
        (("--allow-http=false", "--allow-grpc=false", "--allow-vertex-ai=true"), VERTEX, "Vertex AI"),
        (("--http-restricted-api=inference,logging:admin-key=k", GRPC_KEY), {}, "HTTP"),
    ],
    ids=["nothing", "http-only", "grpc-only", "vertex", "sagemaker-mme", "vertex-alone", "other-categories"],
)
def test_explicit_mode_refuses_an_unrestricted_load_api(
    flags: tuple[str, ...], environ: dict[str, str], listeners: str
) -> None:
    with pytest.raises(CliError) as refused:
        parse_command_line([REPO, EXPLICIT, *flags], environ)
    assert str(refused.value) == refusal(listeners)
    options = parse_command_line([REPO, EXPLICIT, *flags, OPT_IN], environ).options
    assert options.repository.allow_unrestricted_model_repository
    settings = [f.setting for f in assess(options, euid=1000)]
    assert "--model-control-mode=explicit" in settings and "--allow-unrestricted-model-repository=true" in settings


@pytest.mark.parametrize(
    ("flags", "environ"),
    [
        ((HTTP_KEY, GRPC_KEY), {}),
        ((HTTP_KEY, "--allow-grpc=false"), {}),
        (
            (HTTP_KEY, GRPC_KEY, "--allow-vertex-ai=true", "--allow-sagemaker=true", "--sagemaker-port=8081"),
            {**VERTEX, "SAGEMAKER_MULTI_MODEL": "true"},
        ),
        ((GRPC_KEY, "--allow-http=false", "--allow-sagemaker=true"), {}),  # single-model SageMaker cannot load
        (("--allow-http=false", "--allow-grpc=false"), {}),
    ],
    ids=["both", "grpc-off", "cloud-listeners", "sagemaker-single-model", "no-listener"],
)
def test_explicit_mode_starts_when_every_load_api_is_restricted(
    flags: tuple[str, ...], environ: dict[str, str]
) -> None:
    options = parse_command_line([REPO, EXPLICIT, *flags], environ).options
    assert not any(f.setting.startswith(("--model-control-mode", "--allow-unrestricted")) for f in assess(options))


def test_restriction_from_key_files_counts(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("model-repository:admin-key=k\n")
    keys.chmod(0o600)
    flags = [f"--http-restricted-api-file={keys}", f"--grpc-restricted-protocol-file={keys}"]
    assert parse_command_line([REPO, EXPLICIT, *flags], {}).options.repository.control_mode == "explicit"


def test_other_modes_need_no_opt_in() -> None:
    for mode in ("none", "poll"):
        assert parse_command_line([REPO, f"--model-control-mode={mode}"], {}).options.repository.control_mode == mode


def test_the_process_refuses_to_start_and_the_opt_in_is_logged_as_risky() -> None:
    done = run_seawall(REPO, EXPLICIT, HTTP_KEY, "--http-port=0", "--grpc-port=0", "--metrics-port=0")
    assert (done.returncode, done.stderr.strip()) == (1, refusal("gRPC"))
    process = start_seawall(EXPLICIT, OPT_IN, HTTP_KEY)
    try:
        assert http_request(process, "GET", "/v2/health/ready")[0] == 200
        log = process.log()
        assert (
            "security: --model-control-mode=explicit: any client can load model code: model-repository is not "
            "restricted on gRPC" in log
        )
        assert "security: --allow-unrestricted-model-repository=true: explicit mode starts even when" in log
    finally:
        process.stop()
