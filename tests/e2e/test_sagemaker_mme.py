"""End-to-end SageMaker multi-model endpoint (SAGEMAKER_MULTI_MODEL=true): load → list → get → invoke → unload,
and every refusal of `POST /models` with its exact status and body (CVE-2026-24208/24209 patterns for the url),
each followed by a healthy server.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from seawall.frontends.cloud.sagemaker_mme import DISABLED, ONE_MODEL, UNTRUSTED, URL_REFUSED
from tests.e2e.test_sagemaker import INFER
from tests.harness import TEST_MODELS, ServerProcess, http_call, start_seawall

SCORES = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [3], "data": [0.5, 2, 1]}]}).encode()
TARGET = "X-Amzn-SageMaker-Target-Model"


def _copy(model: str, target: Path) -> None:
    shutil.copytree(TEST_MODELS / model, target)


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<hash>/model` holding a model (config.pbtxt at the url), or a repository of one model, and attacks."""
    root = tmp_path_factory.mktemp("mme")
    _copy("classifier", root / "abc123" / "model")
    _copy("classifier", root / "def456" / "model" / "classifier")  # the url is a repository of one model
    _copy("classifier", root / "two" / "model" / "a")
    _copy("classifier", root / "two" / "model" / "b")
    _copy("init_fail", root / "broken" / "model")
    _copy("classifier", root / "open" / "model")
    (root / "open" / "model" / "1").chmod(0o777)  # writable by anyone: someone could swap model.py
    _copy("classifier", root / "leak" / "model")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "labels.txt").write_text("secret\n")
    (root / "leak" / "model" / "labels.txt").unlink()
    (root / "leak" / "model" / "labels.txt").symlink_to(outside / "labels.txt")  # a file leading out
    (root / "hop" / "model").mkdir(parents=True)
    _copy("classifier", outside / "classifier")
    (root / "hop" / "model" / "classifier").symlink_to(outside / "classifier")  # the model dir leads out
    (root / "escape").symlink_to(outside)
    (root / "abc123" / "etc").symlink_to("/etc")
    return root


def _start(model_root: Path, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
    return start_seawall(
        "--allow-sagemaker=true",
        "--sagemaker-port=0",
        f"--sagemaker-model-root={model_root}",
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",  # explicit mode without a key
        "--load-model=add_sub",
        *args,
        env=env if env is not None else {"SAGEMAKER_MULTI_MODEL": "true"},
    )


@pytest.fixture(scope="module")
def server(model_root: Path) -> Iterator[ServerProcess]:
    process = _start(model_root)
    try:
        yield process
    finally:
        process.stop()


def _load(address: str, name: object, url: object, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    body = json.dumps({"model_name": name, "url": url}).encode()
    status, _, reply = http_call(address, "POST", "/models", body, headers)
    return status, reply


def _error(text: str) -> bytes:
    return json.dumps({"error": text}, separators=(",", ":")).encode()


def _healthy(server: ServerProcess) -> None:
    assert http_call(server.addresses["sagemaker"], "GET", "/ping")[0] == 200
    assert server.is_ready()


def test_load_list_get_invoke_unload(server: ServerProcess, model_root: Path) -> None:
    address = server.addresses["sagemaker"]
    url = f"{model_root}/abc123/model"
    assert _load(address, "abc123", url) == (200, b"")
    assert http_call(address, "GET", "/models")[::2] == (
        200,
        json.dumps({"models": [{"modelName": "abc123", "modelUrl": url}]}, separators=(",", ":")).encode(),
    )
    status, headers, body = http_call(address, "GET", "/models/abc123")
    assert (status, headers["content-type"], json.loads(body)) == (
        200,
        "application/json",
        {"modelName": "abc123", "modelUrl": url},
    )
    status, _, body = http_call(address, "POST", "/models/abc123/invoke", SCORES)
    reply = json.loads(body)
    assert status == 200 and reply["model_name"] == "abc123"
    assert reply["outputs"][0]["data"] == [0.5, 2.0, 1.0]
    # the served model is the one loaded for the hash, whatever the header names
    assert http_call(address, "POST", "/models/abc123/invoke", SCORES, {TARGET: "add_sub"})[0] == 200
    assert http_call(address, "DELETE", "/models/abc123")[::2] == (200, b"")
    for method, path, body in (
        ("GET", "/models/abc123", None),
        ("DELETE", "/models/abc123", None),
        ("POST", "/models/abc123/invoke", SCORES),
    ):
        assert http_call(address, method, path, body)[::2] == (404, b""), (method, path)
    assert http_call(address, "GET", "/models")[::2] == (200, b'{"models":[]}')
    log = server.log()
    assert 'action="register model directory" target="abc123" result=OK' in log
    assert 'action="unregister model directory" target="abc123" result=OK' in log
    assert 'caller="peer=127.0.0.1:' in log
    _healthy(server)


def test_a_url_holding_one_model_directory_and_the_target_model_header(server: ServerProcess, model_root: Path) -> None:
    address = server.addresses["sagemaker"]
    assert _load(address, "def456", f"{model_root}/def456/model", {TARGET: "resnet.tar.gz"}) == (200, b"")
    status, _, body = http_call(address, "POST", "/models/def456/invoke", SCORES)
    assert status == 200 and json.loads(body)["model_name"] == "resnet.tar.gz"
    # the target model is taken, under another hash too
    assert _load(address, "other", f"{model_root}/abc123/model", {TARGET: "resnet.tar.gz"}) == (
        409,
        _error("failed to register 'resnet.tar.gz', there is a conflicting mapping for 'resnet.tar.gz'"),
    )
    assert http_call(address, "DELETE", "/models/def456")[::2] == (200, b"")
    _healthy(server)


def test_conflicts_are_409(server: ServerProcess, model_root: Path) -> None:
    address = server.addresses["sagemaker"]
    url = f"{model_root}/abc123/model"
    assert _load(address, "dup", url)[0] == 200
    assert _load(address, "dup", url) == (409, _error("SageMaker model 'dup' is already loaded"))
    # a model the server already has (from its repository) cannot be shadowed
    assert _load(address, "add_sub", url) == (
        409,
        _error("failed to register 'add_sub', there is a conflicting mapping for 'add_sub'"),
    )
    assert http_call(address, "DELETE", "/models/dup")[0] == 200
    _healthy(server)


def _attacks(root: Path) -> list[object]:
    return [
        "/proc/self",
        "/proc/self/root/etc",
        "/dev/shm",
        "/sys/kernel",
        "/etc",
        f"{root}/../../../../proc/self",
        f"{root}/abc123/../../",
        f"{root}/abc123/model/..",
        f"{root}/escape",  # a symlink to a directory outside the root
        f"{root}/abc123/etc",  # a symlink to /etc
        f"{root}/hop/model",  # its one model directory is a symlink out of the root
        str(root),  # the root itself is no model
        f"{root}/missing",
        "abc123/model",  # relative
        f"{root}/abc123/model\x00",
        "",
        7,
        None,
        ["/proc"],
    ]


def test_load_confines_the_url(server: ServerProcess, model_root: Path) -> None:
    address = server.addresses["sagemaker"]
    for url in _attacks(model_root):
        assert _load(address, "attack", url, {TARGET: "add_sub2"}) == (400, _error(URL_REFUSED)), url
    assert http_call(address, "GET", "/models/attack")[0] == 404
    _healthy(server)


@pytest.mark.parametrize(
    ("name", "url", "status", "error"),
    [
        ("leak", "leak/model", 400, UNTRUSTED),  # a file inside links out of the model directory
        ("open", "open/model", 400, UNTRUSTED),  # writable by others
        ("two", "two/model", 400, ONE_MODEL),
        ("broken", "broken/model", 400, "load failed for model 'broken': version 1 is at UNAVAILABLE state: "),
    ],
)
def test_load_refuses_untrusted_or_unusable_directories(
    server: ServerProcess, model_root: Path, name: str, url: str, status: int, error: str
) -> None:
    address = server.addresses["sagemaker"]
    got_status, reply = _load(address, name, f"{model_root}/{url}")
    assert got_status == status and json.loads(reply)["error"].startswith(error), reply
    assert http_call(address, "GET", f"/models/{name}")[0] == 404
    assert http_call(address, "GET", "/models")[::2] == (200, b'{"models":[]}')
    _healthy(server)


@pytest.mark.parametrize(
    ("body", "headers", "error"),
    [
        (b"", {}, "failed to parse the request JSON buffer: The document is empty."),
        (b"[]", {}, "expected a JSON object with 'model_name' and 'url'"),
        (b"{}", {}, "'model_name' must be a valid model name (1-128 of A-Z a-z 0-9 _ . -)"),
        (b'{"url": "/x"}', {}, "'model_name' must be a valid model name (1-128 of A-Z a-z 0-9 _ . -)"),
        (b'{"model_name": 1, "url": "/x"}', {}, "'model_name' must be a valid model name (1-128 of A-Z a-z 0-9 _ . -)"),
        (b'{"model_name": "a/b"}', {}, "'model_name' must be a valid model name (1-128 of A-Z a-z 0-9 _ . -)"),
        (b'{"model_name": ".."}', {}, "'model_name' must be a valid model name (1-128 of A-Z a-z 0-9 _ . -)"),
        (b'{"model_name": "$(id)"}', {}, "'model_name' must be a valid model name (1-128 of A-Z a-z 0-9 _ . -)"),
        (b'{"model_name": "ok"}', {}, URL_REFUSED),
        (b'{"model_name": "ok"}', {TARGET: "../x"}, "'X-Amzn-SageMaker-Target-Model' must be a valid model name"),
    ],
)
def test_load_refuses_malformed_bodies(server: ServerProcess, body: bytes, headers: dict[str, str], error: str) -> None:
    status, _, reply = http_call(server.addresses["sagemaker"], "POST", "/models", body, headers)
    assert (status, reply) == (400, _error(error)), reply
    _healthy(server)


def test_bound_untrusted_allowance_and_restriction(model_root: Path) -> None:
    """`--sagemaker-max-models` answers 507 beyond the bound (SageMaker then unloads and retries);
    `--allow-untrusted-plugin-path` lets a writable directory through; `model-repository` restricts loading."""
    process = _start(
        model_root,
        "--sagemaker-max-models=1",
        f"--allow-untrusted-plugin-path={model_root}/open",
        "--http-restricted-api=model-repository:admin=s3cret",
    )
    try:
        address = process.addresses["sagemaker"]
        key = {"admin": "s3cret"}
        refusal = _error("This API is restricted, expecting header 'admin'")
        assert _load(address, "open", f"{model_root}/open/model") == (403, refusal)
        assert _load(address, "open", f"{model_root}/open/model", key) == (200, b"")
        assert _load(address, "more", f"{model_root}/abc123/model", key) == (
            507,
            _error("at most 1 models can be loaded through the multi-model endpoint"),
        )
        assert http_call(address, "DELETE", "/models/open")[::2] == (403, refusal)
        assert http_call(address, "DELETE", "/models/open", None, key)[::2] == (200, b"")
        assert _load(address, "more", f"{model_root}/abc123/model", key) == (200, b"")
        assert process.is_ready()
    finally:
        process.stop()


def test_load_needs_explicit_model_control(model_root: Path) -> None:
    process = start_seawall(
        "--allow-sagemaker=true",
        "--sagemaker-port=0",
        f"--sagemaker-model-root={model_root}",
        env={"SAGEMAKER_MULTI_MODEL": "true"},
    )
    try:
        address = process.addresses["sagemaker"]
        assert _load(address, "abc123", f"{model_root}/abc123/model") == (
            400,
            _error("repository registration is not allowed if model control mode is not EXPLICIT"),
        )
        assert process.is_ready()
    finally:
        process.stop()


def test_other_values_of_sagemaker_multi_model_leave_it_off(model_root: Path) -> None:
    process = _start(model_root, env={"SAGEMAKER_MULTI_MODEL": "True"})
    try:
        assert _load(process.addresses["sagemaker"], "abc123", f"{model_root}/abc123/model") == (501, _error(DISABLED))
        assert os.path.isdir(model_root / "abc123" / "model")
    finally:
        process.stop()


def test_an_unknown_hash_is_404_before_and_after(server: ServerProcess) -> None:
    address = server.addresses["sagemaker"]
    assert http_call(address, "POST", "/models/nope/invoke", INFER)[::2] == (404, b"")
