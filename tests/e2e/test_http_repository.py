"""The model repository extension over HTTP, end to end: index, load, reload, unload, config and file
overrides in explicit mode; every hostile load request refused with its exact code and message, nothing
written outside the override directory, and the server still ready afterwards; none mode refuses with 503."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.harness import EXAMPLES, ServerProcess, start_seawall
from tests.harness import http_request as request

MAX_BODY = 1 << 20
_MODEL_PY = b"""
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data * 3)]))
        return out
"""
_TIMES3_CONFIG = {
    "name": "times3",
    "backend": "python",
    "max_batch_size": 0,
    "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [2]}],
    "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [2]}],
}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tmp/repository (a copy of the examples) and tmp/outer/tmp (the server's TMPDIR for override dirs)."""
    root = tmp_path_factory.mktemp("explicit")
    shutil.copytree(EXAMPLES, root / "repository", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "outer" / "tmp").mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def server(sandbox: Path) -> Iterator[ServerProcess]:
    process = start_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",  # explicit mode without a key
        "--load-model=add_sub",
        f"--http-max-input-size={MAX_BODY}",
        repository=sandbox / "repository",
        env={"TMPDIR": str(sandbox / "outer" / "tmp")},
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    connection = httpclient.InferenceServerClient(server.http)
    yield connection
    connection.close()


def _post(server: ServerProcess, path: str, document: Any = None) -> tuple[int, Any]:
    body = b"" if document is None else json.dumps(document).encode()
    status, _, reply = request(server, "POST", path, body)
    return status, json.loads(reply) if reply else None


def _index(server: ServerProcess) -> list[dict[str, str]]:
    status, rows = _post(server, "/v2/repository/index")
    assert status == 200
    return list(rows)


def _files(sandbox: Path) -> set[str]:
    """Every path under the sandbox (repository, TMPDIR and its parent), minus caches the models write."""
    return {str(p.relative_to(sandbox)) for p in sandbox.rglob("*") if "__pycache__" not in p.parts}


def test_index_lists_never_loaded_models_by_name(server: ServerProcess) -> None:
    assert _index(server) == [
        {"name": "add_sub", "version": "1", "state": "READY"},
        {"name": "identity"},
        {"name": "string_identity"},
    ]
    status, rows = _post(server, "/v2/repository/index", {"ready": True})
    assert (status, rows) == (200, [{"name": "add_sub", "version": "1", "state": "READY"}])


def test_load_reload_unload(server: ServerProcess, client: httpclient.InferenceServerClient) -> None:
    client.load_model("identity")
    assert {"name": "identity", "version": "1", "state": "READY"} in _index(server)
    client.load_model("identity")  # a reload of a loaded model
    assert client.is_model_ready("identity")
    client.unload_model("identity")
    assert {"name": "identity", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"} in _index(server)
    assert not client.is_model_ready("identity")
    assert _post(server, "/v2/repository/models/identity/unload", {"parameters": {"unload_dependents": True}}) == (
        200,
        None,
    )


def test_load_with_a_json_config_override(server: ServerProcess, client: httpclient.InferenceServerClient) -> None:
    config = {
        "name": "identity",
        "backend": "python",
        "max_batch_size": 4,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
        "parameters": {"origin": {"string_value": "override"}},
    }
    client.load_model("identity", config=json.dumps(config))
    loaded = client.get_model_config("identity")
    assert loaded["max_batch_size"] == 4 and loaded["parameters"] == {"origin": {"string_value": "override"}}
    client.unload_model("identity")


def test_load_with_file_overrides(
    server: ServerProcess, client: httpclient.InferenceServerClient, sandbox: Path
) -> None:
    client.load_model("times3", config=json.dumps(_TIMES3_CONFIG), files={"file:1/model.py": _MODEL_PY})
    tensor = httpclient.InferInput("INPUT0", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1, 2], dtype=np.float32))
    result = client.infer("times3", [tensor]).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(result, [3, 6])
    assert not (sandbox / "repository" / "times3").exists()  # the override lives in its own directory
    assert [p.name for p in (sandbox / "outer" / "tmp").iterdir()][0].startswith("seawall-model-")
    client.unload_model("times3")


def _override(path: str, content: bytes = _MODEL_PY, name: str = "times3") -> dict[str, Any]:
    config = dict(_TIMES3_CONFIG, name=name)
    return {"parameters": {"config": json.dumps(config), f"file:{path}": base64.b64encode(content).decode()}}


_OUTSIDE = "override file '{}' must be a relative path inside the model directory"
_BAD_NAME = "invalid model name: a model name is 1-128 characters of A-Z a-z 0-9 _ . - (not '.' or '..')"


@pytest.mark.parametrize(
    ("path", "document", "status", "message"),
    [
        ("/v2/repository/models/times3/load", _override("../../x"), 400, _OUTSIDE.format("../../x")),
        ("/v2/repository/models/times3/load", _override("/abs"), 400, _OUTSIDE.format("/abs")),
        ("/v2/repository/models/times3/load", _override("1/../../x"), 400, _OUTSIDE.format("1/../../x")),
        ("/v2/repository/models/times3/load", _override("1\\..\\..\\x"), 400, _OUTSIDE.format("1\\..\\..\\x")),
        ("/v2/repository/models/../load", _override("1/model.py", name=".."), 400, _BAD_NAME),
        (
            "/v2/repository/models/inj$(touch${IFS}PWNED)/load",
            _override("1/model.py", name="inj$(touch${IFS}PWNED)"),
            400,
            _BAD_NAME,
        ),
        (
            "/v2/repository/models/times3/load",
            {"parameters": {"config": json.dumps(_TIMES3_CONFIG), "file:1/model.py": "cHJpbnQo*KQ=="}},
            400,
            "load parameter 'file:1/model.py' is not valid base64 (RFC 4648, no whitespace)",
        ),
        (
            "/v2/repository/models/times3/load",
            {"parameters": {"config": json.dumps(_TIMES3_CONFIG), "file:1/model.py": "cHJp\nbnQoKQ=="}},
            400,
            "load parameter 'file:1/model.py' is not valid base64 (RFC 4648, no whitespace)",
        ),
        (
            "/v2/repository/models/times3/load",
            _override("1/model.py", b"#" * MAX_BODY),
            413,
            f"request body exceeds the limit of {MAX_BODY} bytes",
        ),
        ("/v2/repository/models/times3/load", {"parameters": {"x": "y"}}, 400, "unrecognized load parameter 'x'."),
        (
            "/v2/repository/models/times3/load",
            {"parameters": {"config": 5}},
            400,
            "invalid value type for load parameter 'config': attempt to access JSON non-string as string",
        ),
        ("/v2/repository/models/times3/load", {"parameters": []}, 400, "Unable to parse 'parameters'"),
        (
            "/v2/repository/models/times3/load",
            {"parameters": {"config": "{"}},
            400,
            "failed to parse load parameter 'config'",
        ),
        (
            "/v2/repository/models/identity/unload",
            {"parameters": {"unload_dependents": 5}},
            400,
            "invalid value type for unload parameter 'unload_dependents'",
        ),
        ("/v2/repository/index", {"ready": 1}, 400, "attempt to access JSON non-boolean as boolean"),
        ("/v2/repository/index", [], 400, "failed to parse the request JSON buffer: expected a JSON object"),
        ("/v2/repository/r/index", None, 501, "'repository_name' specification is not supported"),
        ("/v2/repository/r/models/add_sub/load", None, 501, "'repository_name' specification is not supported"),
        ("/v2/repository/r/models/add_sub/unload", None, 501, "'repository_name' specification is not supported"),
        ("/v2/repository/models/nope/load", None, 404, "failed to load 'nope', failed to poll from model repository"),
    ],
)
def test_hostile_and_malformed_requests_are_refused(
    server: ServerProcess, sandbox: Path, path: str, document: Any, status: int, message: str
) -> None:
    before = _files(sandbox)
    got_status, reply = _post(server, path, document)
    assert got_status == status
    assert reply["error"].startswith(message)
    assert _files(sandbox) == before  # nothing written in the repository, TMPDIR or beside it
    assert not (Path.cwd() / "PWNED").exists()
    assert request(server, "GET", "/v2/health/ready")[0] == 200


def test_none_mode_refuses_load_and_unload_with_tritons_text() -> None:
    process = start_seawall()
    try:
        for action in ("load", "unload"):
            status, _, reply = request(process, "POST", f"/v2/repository/models/add_sub/{action}")
            assert status == 503
            assert json.loads(reply) == {"error": "explicit model load / unload is not allowed if polling is enabled"}
        status, _, reply = request(process, "POST", "/v2/repository/index")
        assert status == 200 and {"name": "add_sub", "version": "1", "state": "READY"} in json.loads(reply)
    finally:
        process.stop()
