"""Empty and whitespace-only bodies on every inference route (issue 14 item 3): HTTP infer, generate and
generate_stream, SageMaker invocations and Vertex AI predict are each a 400 with a message naming the problem, and
the server stays healthy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from seawall.frontends.http.codec import EMPTY_BODY
from tests.harness import ServerProcess, http_call, start_seawall

NO_JSON = "failed to parse the request JSON buffer: The document is empty."
BLANKS = [b" ", b"\r\n", b" \t\n  "]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = start_seawall(
        "--allow-sagemaker=true",
        "--sagemaker-port=0",
        "--allow-vertex-ai=true",
        "--vertex-ai-port=0",
        "--vertex-ai-default-model=identity",
        env={
            "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "identity",
            "AIP_PREDICT_ROUTE": "/predict",
            "AIP_HEALTH_ROUTE": "/health",
        },
    )
    try:
        yield process
    finally:
        process.stop()


#: (listener, path, extra headers) of every inference route
ROUTES = [
    ("http", "/v2/models/identity/infer", {}),
    ("http", "/v2/models/identity/versions/1/infer", {}),
    ("http", "/v2/models/identity/generate", {}),
    ("http", "/v2/models/identity/generate_stream", {}),
    ("sagemaker", "/invocations", {}),
    ("vertex", "/predict", {}),
    ("vertex", "/predict", {"X-Vertex-Ai-Triton-Redirect": "v2/models/identity/infer"}),
]


def _error(server: ServerProcess, listener: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    status, _, reply = http_call(server.addresses[listener], "POST", path, body, headers)
    assert http_call(server.http, "GET", "/v2/health/ready")[0] == 200
    return status, json.loads(reply)["error"] if reply else ""


@pytest.mark.parametrize(("listener", "path", "headers"), ROUTES, ids=[f"{r[0]}{r[1]}" for r in ROUTES])
def test_an_empty_body_is_400(server: ServerProcess, listener: str, path: str, headers: dict[str, str]) -> None:
    raw_capable = path.endswith("/infer") or bool(headers)  # the infer route (also as a Vertex redirect target)
    assert _error(server, listener, path, b"", headers) == (400, EMPTY_BODY if raw_capable else NO_JSON)


@pytest.mark.parametrize("body", BLANKS, ids=repr)
@pytest.mark.parametrize(("listener", "path", "headers"), ROUTES, ids=[f"{r[0]}{r[1]}" for r in ROUTES])
def test_a_whitespace_body_is_400(
    server: ServerProcess, listener: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    assert _error(server, listener, path, body, headers) == (400, NO_JSON)


def test_an_empty_raw_binary_body_is_400(server: ServerProcess) -> None:
    """`Inference-Header-Content-Length: 0` announces raw tensor bytes; none at all is refused too."""
    headers = {"Inference-Header-Content-Length": "0"}
    assert _error(server, "http", "/v2/models/identity/infer", b"", headers) == (400, EMPTY_BODY)
    two = _error(server, "http", "/v2/models/add_sub/infer", b"", {})  # Triton's own refusal comes first
    assert two == (
        400,
        "Raw request must only have 1 input (found 1) to be deduced but got 2 inputs in 'add_sub' model configuration",
    )
