"""End-to-end SageMaker listener: /ping, /invocations (JSON and binary) and the restriction on every route
(CVE-2026-24206/47481 patterns). The multi-model routes are in test_sagemaker_mme.py.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from seawall.frontends.cloud import sagemaker
from tests.harness import TEST_MODELS, ServerProcess, http_call, start_seawall

#: One restriction group per category, so a route answering to the wrong key shows a wrong category.
KEYS = {
    "health": ("health-key", "h-secret"),
    "inference": ("infer-key", "i-secret"),
    "metadata": ("meta-key", "m-secret"),
    "model-repository": ("repo-key", "r-secret"),
}
MODEL = {"name": "add_sub"}
INFER = json.dumps(
    {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]},
            {"name": "INPUT1", "datatype": "FP32", "shape": [4], "data": [1, 1, 1, 1]},
        ]
    }
).encode()


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mme")
    shutil.copytree(TEST_MODELS / "classifier", root / "abc123" / "model")
    return root


def _start(model_root: Path, *args: str) -> ServerProcess:
    return start_seawall(
        "--allow-sagemaker=true",
        "--sagemaker-port=0",
        f"--sagemaker-model-root={model_root}",
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",  # explicit mode without a key
        "--load-model=add_sub",
        *args,
        env={"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "add_sub", "SAGEMAKER_MULTI_MODEL": "true"},
    )


@pytest.fixture(scope="module")
def server(model_root: Path) -> Iterator[ServerProcess]:
    process = _start(model_root)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def restricted(model_root: Path) -> Iterator[ServerProcess]:
    flags = [f"--http-restricted-api={category}:{key}={value}" for category, (key, value) in KEYS.items()]
    process = _start(model_root, *flags)
    try:
        yield process
    finally:
        process.stop()


def sample_requests(model_root: Path) -> dict[tuple[str, str], tuple[str, bytes | None, int]]:
    """(method, route pattern) → (path, body, status with the right key) for every SageMaker route, in the
    order of `sagemaker.ROUTES`: the load succeeds, then the model is read, unloaded, and no longer invoked."""
    load = json.dumps({"model_name": "abc123", "url": str(model_root / "abc123" / "model")}).encode()
    return {
        ("GET", r"/ping"): ("/ping", None, 200),
        ("POST", r"/invocations"): ("/invocations", INFER, 200),
        ("GET", r"/models"): ("/models", None, 200),
        ("POST", r"/models"): ("/models", load, 200),
        ("GET", sagemaker.ROUTES[4].pattern): ("/models/abc123", None, 200),
        ("DELETE", sagemaker.ROUTES[5].pattern): ("/models/abc123", None, 200),
        ("POST", sagemaker.ROUTES[6].pattern): ("/models/abc123/invoke", INFER, 404),
    }


def test_every_route_has_a_category_and_a_sample(model_root: Path) -> None:
    samples = sample_requests(model_root)
    keys = set()
    for route in sagemaker.ROUTES:
        assert route.category in KEYS, route
        (method,) = route.methods
        keys.add((method, route.pattern))
    assert keys == set(samples)


def test_the_restriction_runs_first_on_every_route(restricted: ServerProcess, model_root: Path) -> None:
    address = restricted.addresses["sagemaker"]
    samples = sample_requests(model_root)
    for route in sagemaker.ROUTES:
        (method,) = route.methods
        path, body, expected = samples[(method, route.pattern)]
        key, value = KEYS[route.category]
        refusal = json.dumps({"error": f"This API is restricted, expecting header '{key}'"}, separators=(",", ":"))
        others = {k: v for category, (k, v) in KEYS.items() if category != route.category}
        for headers in ({}, {key: value + "x"}, {key: value.upper()}, others):
            status, _, reply = http_call(address, method, path, body, headers)
            assert (status, reply.decode()) == (403, refusal), (route, headers)
        status, _, reply = http_call(address, method, path, body, {key: value})
        assert status == expected, (route, reply)
        # the restriction comes before the method check, as on the HTTP listener
        wrong_method = "PUT"
        assert http_call(address, wrong_method, path, body)[0] == 403
        assert http_call(address, wrong_method, path, body, {key: value})[0] == 405


def test_ping_and_unknown_paths(server: ServerProcess) -> None:
    address = server.addresses["sagemaker"]
    assert http_call(address, "GET", "/ping")[::2] == (200, b"")
    assert http_call(address, "POST", "/ping")[::2] == (405, b"")
    for path in ("/", "/v2/health/ready", "/pingx", "/invocations/x", "/models/a/b", "/models/a/invoke/x"):
        assert http_call(address, "GET", path)[::2] == (400, b""), path
    assert "Started Sagemaker HTTPService at 127.0.0.1:" in server.log()


def test_invocations_json(server: ServerProcess) -> None:
    status, headers, body = http_call(server.addresses["sagemaker"], "POST", "/invocations", INFER)
    assert status == 200 and headers["content-type"] == "application/json"
    reply = json.loads(body)
    assert reply["model_name"] == "add_sub"
    assert reply["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]


def test_invocations_binary_json(server: ServerProcess) -> None:
    header = json.dumps(
        {
            "inputs": [
                {"name": name, "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}}
                for name in ("INPUT0", "INPUT1")
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    data = np.arange(4, dtype=np.float32).tobytes()
    content_type = f"application/vnd.sagemaker-triton.binary+json;json-header-size={len(header)}"
    status, headers, body = http_call(
        server.addresses["sagemaker"], "POST", "/invocations", header + data + data, {"Content-Type": content_type}
    )
    assert status == 200, body
    prefix = "application/vnd.sagemaker-triton.binary+json;json-header-size="
    assert headers["content-type"].startswith(prefix)
    length = int(headers["content-type"][len(prefix) :])
    assert json.loads(body[:length])["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert list(struct.unpack("<4f", body[length:])) == [0.0, 2.0, 4.0, 6.0]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/vnd.sagemaker-triton.binary+json;json-header-size=abc", INFER),
        ("application/vnd.sagemaker-triton.binary+json;json-header-size=99999999999999999999", INFER),
        ("application/json; application/vnd.sagemaker-triton.binary+json;json-header-size=4", INFER),
        ("application/json", b"{"),
        ("application/json", b"[" * 1000 + b"]" * 1000),
    ],
)
def test_invocations_refuse_malformed_bodies(server: ServerProcess, content_type: str, body: bytes) -> None:
    address = server.addresses["sagemaker"]
    status, _, reply = http_call(address, "POST", "/invocations", body, {"Content-Type": content_type})
    assert status == 400 and "error" in json.loads(reply)
    assert http_call(address, "GET", "/ping")[0] == 200


def test_invocations_of_an_unknown_default_model_and_mme_off(model_root: Path) -> None:
    process = start_seawall("--allow-sagemaker=true", "--sagemaker-port=0", f"--sagemaker-model-root={model_root}")
    try:
        address = process.addresses["sagemaker"]
        status, _, body = http_call(address, "POST", "/invocations", INFER)
        assert status == 400 and "unspecified_SAGEMAKER_TRITON_DEFAULT_MODEL_NAME" in json.loads(body)["error"]
        # without SAGEMAKER_MULTI_MODEL=true nothing can be loaded, and the MME table stays empty
        load = json.dumps({"model_name": "abc123", "url": str(model_root / "abc123" / "model")}).encode()
        status, _, body = http_call(address, "POST", "/models", load)
        assert (status, json.loads(body)) == (
            501,
            {"error": "the SageMaker multi-model endpoint is off (start the server with SAGEMAKER_MULTI_MODEL=true)"},
        )
        assert http_call(address, "GET", "/models")[::2] == (200, b'{"models":[]}')
        assert http_call(address, "GET", "/models/abc123")[::2] == (404, b"")
        assert http_call(address, "DELETE", "/models/abc123")[::2] == (404, b"")
        assert http_call(address, "POST", "/models/abc123/invoke", INFER)[::2] == (404, b"")
        assert process.is_ready()
    finally:
        process.stop()
