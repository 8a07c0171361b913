"""End-to-end Vertex AI listener: health and predict routes, the binary content type, and the
`X-Vertex-Ai-Triton-Redirect` header, which must honour `--http-restricted-api` on every target route and
never reach repository load/unload or shared-memory register/unregister (CVE-2026-24206/24207 patterns).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from seawall.frontends.cloud import vertex
from seawall.frontends.http import routes as http_frontend
from seawall.options import API_CATEGORIES, VertexOptions
from tests.e2e.test_sagemaker import INFER
from tests.harness import EXAMPLES, ServerProcess, http_call, run_seawall, start_seawall

ROUTES = {"AIP_PREDICT_ROUTE": "/predict", "AIP_HEALTH_ROUTE": "/health"}
KEYS = {category: (f"{category}-key", f"{category}-secret") for category in API_CATEGORIES}
REDIRECT = "X-Vertex-Ai-Triton-Redirect"
_VALUES = {"model": "add_sub", "version": "1", "kind": "system", "region": "r0", "repository": "x"}


def sample_path(pattern: str) -> str:
    """A concrete path matching an HTTP route pattern: optional groups dropped, named groups filled in."""
    text = pattern
    while (start := text.find("(?:")) != -1:
        depth, end = 0, start
        for end in range(start, len(text)):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        text = text[:start] + text[end + 2 :] if text[end + 1 : end + 2] == "?" else text[:start] + text[end + 1 :]
    text = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: _VALUES[m.group(1)], text)
    path = text.replace("\\", "")
    assert re.fullmatch(pattern, path), (pattern, path)
    return path


def _start(*args: str, repository: Path | str = EXAMPLES, env: dict[str, str] | None = None) -> ServerProcess:
    return start_seawall(*args, repository=repository, env={**ROUTES, **(env or {})})


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = _start("--allow-vertex-ai=true", "--vertex-ai-port=0", "--vertex-ai-default-model=add_sub")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def restricted() -> Iterator[ServerProcess]:
    flags = [f"--http-restricted-api={category}:{key}={value}" for category, (key, value) in KEYS.items()]
    process = _start("--allow-vertex-ai=true", "--vertex-ai-port=0", "--vertex-ai-default-model=add_sub", *flags)
    try:
        yield process
    finally:
        process.stop()


def refusal(key: str) -> dict[str, str]:
    return {"error": f"This API is restricted, expecting header '{key}'"}


# ------------------------------------------------------------------------------------------ own routes


def test_health_and_predict(server: ServerProcess) -> None:
    address = server.addresses["vertex"]
    assert http_call(address, "GET", "/health")[::2] == (200, b"")
    assert http_call(address, "POST", "/health")[::2] == (405, b"")
    assert http_call(address, "GET", "/predict")[::2] == (405, b"")
    for path in ("/", "/v2/health/ready", "/predict/x", "/healthz"):
        assert http_call(address, "GET", path)[::2] == (400, b""), path
    status, headers, body = http_call(address, "POST", "/predict", INFER)
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["outputs"][1]["data"] == [0.0, 1.0, 2.0, 3.0]
    assert "Started Vertex AI HTTPService at 127.0.0.1:" in server.log()


def test_predict_binary_content_type(server: ServerProcess) -> None:
    header = json.dumps(
        {
            "inputs": [
                {"name": name, "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}}
                for name in ("INPUT0", "INPUT1")
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    data = np.ones(4, dtype=np.float32).tobytes()
    prefix = "application/vnd.vertex-ai-triton.binary+json;json-header-size="
    for redirect in ({}, {REDIRECT: "v2/models/add_sub/infer"}):
        headers = {"Content-Type": f"{prefix}{len(header)}", **redirect}
        status, reply_headers, body = http_call(
            server.addresses["vertex"], "POST", "/predict", header + data + data, headers
        )
        assert status == 200, body
        length = int(reply_headers["content-type"].removeprefix(prefix))
        assert [o["name"] for o in json.loads(body[:length])["outputs"]] == ["OUTPUT0", "OUTPUT1"]
        assert list(struct.unpack("<8f", body[length:])) == [2.0] * 4 + [0.0] * 4
        assert "inference-header-content-length" not in reply_headers
    bad = {"Content-Type": "application/json;json-header-size=4"}
    assert http_call(server.addresses["vertex"], "POST", "/predict", INFER, bad)[0] == 400


def test_default_model_rules(tmp_path: Path) -> None:
    result = run_seawall(f"--model-repository={EXAMPLES}", "--allow-vertex-ai=true", "--vertex-ai-port=0",
                         "--http-port=0", "--grpc-port=0", "--metrics-port=0", env=ROUTES)  # fmt: skip
    assert result.returncode == 1
    assert "Expect the model repository to contain only a single model" in result.stderr
    result = run_seawall(f"--model-repository={EXAMPLES}", "--allow-vertex-ai=true", "--vertex-ai-port=0",
                         "--vertex-ai-default-model=nope", "--http-port=0", "--grpc-port=0", "--metrics-port=0",
                         env=ROUTES)  # fmt: skip
    assert result.returncode == 1 and "Expect the default model 'nope' to be loaded" in result.stderr


def test_aip_mode_prediction_serves_the_only_model(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "add_sub", tmp_path / "add_sub", ignore=shutil.ignore_patterns("__pycache__"))
    process = _start("--vertex-ai-port=0", repository=tmp_path, env={"AIP_MODE": "PREDICTION"})
    try:
        assert set(process.addresses) == {"vertex", "metrics"}  # HTTP and gRPC are off in Vertex mode
        status, _, body = http_call(process.addresses["vertex"], "POST", "/predict", INFER)
        assert status == 200 and json.loads(body)["model_name"] == "add_sub"
    finally:
        process.stop()


# ------------------------------------------------------------------------------------------ restriction


def test_own_routes_are_restricted(restricted: ServerProcess) -> None:
    address = restricted.addresses["vertex"]
    for method, path, category, body, expected in (
        ("GET", "/health", "health", None, 200),
        ("POST", "/predict", "inference", INFER, 200),
    ):
        key, value = KEYS[category]
        for headers in ({}, {key: value + "!"}, {KEYS["model-repository"][0]: KEYS["model-repository"][1]}):
            status, _, reply = http_call(address, method, path, body, headers)
            assert (status, json.loads(reply)) == (403, refusal(key)), (path, headers)
        assert http_call(address, method, path, body, {key: value})[0] == expected
    tables = vertex.routes(VertexOptions(predict_route="/predict", health_route="/health"))
    assert [(r.category, r.handler) for r in tables] == [("health", "_health"), ("inference", "_predict")]


def _expected_kind(path: str, category: str) -> str:
    if category in ("logging", "trace") or re.search(r"/generate(_stream)?$", path):
        return "unreachable"
    if re.search(r"/(load|unload|register|unregister)$", path):
        return "refused"
    return "reachable"


@pytest.mark.parametrize("route", http_frontend.ROUTES, ids=lambda r: r.pattern)
def test_every_redirected_route_takes_its_targets_restriction(
    restricted: ServerProcess, route: http_frontend.Route
) -> None:
    address = restricted.addresses["vertex"]
    path = sample_path(route.pattern)
    kind = _expected_kind(path, route.category)
    key, value = KEYS[route.category]
    target = {REDIRECT: path.removeprefix("/")}
    other = KEYS["inference" if route.category != "inference" else "health"]
    if kind == "unreachable":
        for headers in ({}, {key: value}):
            assert http_call(address, "POST", "/predict", INFER, {**target, **headers})[::2] == (400, b"")
        return
    for headers in ({}, {key: value[:-1]}, {other[0]: other[1]}):
        status, _, reply = http_call(address, "POST", "/predict", INFER, {**target, **headers})
        assert (status, json.loads(reply)) == (403, refusal(key)), headers
    status, _, reply = http_call(address, "POST", "/predict", INFER, {**target, key: value})
    if kind == "refused":
        assert (status, json.loads(reply)) == (
            403,
            {"error": "This API is not available through the Vertex AI redirect"},
        )
    else:
        assert status != 403
        method = "POST" if "POST" in route.methods else "GET"
        direct = http_call(restricted.http, method, path, INFER if method == "POST" else None, {key: value})
        assert status == direct[0], (status, direct)
    assert http_call(address, "GET", "/health", None, {KEYS["health"][0]: KEYS["health"][1]})[0] == 200


def test_cve_2026_24207_pattern_repository_redirects() -> None:
    process = _start(
        "--allow-vertex-ai=true",
        "--vertex-ai-port=0",
        "--vertex-ai-default-model=add_sub",
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",  # explicit mode without a key
        "--load-model=*",
        "--http-restricted-api=model-repository:k=v",
    )
    try:
        address = process.addresses["vertex"]
        for target in ("v2/repository/models/add_sub/unload", "v2/repository/models/add_sub/load"):
            for headers in ({}, {"k": "v"}):
                status, _, reply = http_call(address, "POST", "/predict", b"{}", {REDIRECT: target, **headers})
                assert status == 403, (target, headers, reply)
        status, _, reply = http_call(address, "POST", "/predict", b"{}", {REDIRECT: "v2/repository/index"})
        assert (status, json.loads(reply)) == (403, refusal("k"))
        status, _, reply = http_call(address, "POST", "/predict", b"{}", {REDIRECT: "v2/repository/index", "k": "v"})
        assert status == 200 and any(entry["name"] == "add_sub" for entry in json.loads(reply))
        # the main port agrees, and the model was never unloaded
        assert http_call(process.http, "POST", "/v2/repository/index", b"{}")[0] == 403
        assert http_call(address, "POST", "/predict", INFER)[0] == 200
        assert http_call(address, "POST", "/predict", b"", {REDIRECT: "v2/models/add_sub/ready"})[::2] == (200, b"")
    finally:
        process.stop()


@pytest.mark.parametrize(
    "target",
    [
        "/v2/health/ready",
        "v2/../v2/health/ready",
        "v2//health/ready",
        "v2/./health/ready",
        "v2/health/ready?x=1",
        "v2/health/ready%2F",
        "v2/health/ready\\",
        "metrics",
        "v2/logging",
        "v2/trace/setting",
        "v2/models/add_sub/trace/setting",
        "v2/models/add_sub/generate",
        "v2/models/add_sub/generate_stream",
        "nope",
        "",
    ],
)
def test_unreachable_redirects_are_400_empty(server: ServerProcess, target: str) -> None:
    address = server.addresses["vertex"]
    assert http_call(address, "POST", "/predict", INFER, {REDIRECT: target})[::2] == (400, b"")
    assert http_call(address, "GET", "/health")[0] == 200


def test_redirect_needs_post(server: ServerProcess) -> None:
    address = server.addresses["vertex"]
    assert http_call(address, "GET", "/predict", None, {REDIRECT: "v2/health/ready"})[::2] == (405, b"")
    assert http_call(address, "POST", "/predict", b"", {REDIRECT: "v2/health/ready"})[::2] == (200, b"")
    status, _, body = http_call(address, "POST", "/predict", b"", {REDIRECT: "v2"})
    assert status == 200 and json.loads(body)["name"] == "triton"
