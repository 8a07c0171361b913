"""Who may run a python model inside the server process (issue 9, Also: the load API could set
SEAWALL_IN_PROCESS on uploaded code). Only a repository's own config.pbtxt may, and only while
--allow-in-process-models (default true) lets it; a `config` sent with a load request (with or without `file:`
code) never may, over HTTP or gRPC. The security report names every repository model that would run in-process.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from seawall.options import BackendOptions, MetricsOptions, Options, RepositoryOptions
from seawall.security.report import assess
from tests.harness import EXAMPLES, ServerProcess, http_request, start_seawall

IN_PROCESS = 'parameters { key: "SEAWALL_IN_PROCESS" value { string_value: "true" } }\n'
FROM_CLIENT = (
    "load failed for model '{name}': version 1 is at UNAVAILABLE state: parameter 'SEAWALL_IN_PROCESS' of model "
    "'{name}' can only be set by the model repository's own config.pbtxt, not by a 'config' sent with a load "
    "request;\n"
)
FORBIDDEN = (
    "load failed for model '{name}': version 1 is at UNAVAILABLE state: parameter 'SEAWALL_IN_PROCESS' of model "
    "'{name}' asks to run it in the server process, which --allow-in-process-models=false forbids;\n"
)
FOUR = [1.0, 2.0, 3.0, 4.0]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inprocess")
    root.chmod(0o755)
    shutil.copytree(EXAMPLES / "add_sub", root / "add_sub")
    fast = root / "add_sub_fast"
    shutil.copytree(EXAMPLES / "add_sub", fast)
    text = (fast / "config.pbtxt").read_text().replace('name: "add_sub"', 'name: "add_sub_fast"')
    (fast / "config.pbtxt").write_text(text + IN_PROCESS)
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerProcess]:
    process = start_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",
        "--load-model=add_sub",
        repository=repository,
    )
    yield process
    process.stop()


def _config(name: str, mode: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": name,
        "backend": "python",
        "input": [{"name": f"INPUT{i}", "data_type": "TYPE_FP32", "dims": [4]} for i in (0, 1)],
        "output": [{"name": f"OUTPUT{i}", "data_type": "TYPE_FP32", "dims": [4]} for i in (0, 1)],
    }
    if mode is not None:
        config["parameters"] = {"SEAWALL_IN_PROCESS": {"string_value": mode}}
    return config


def _http_load(server: ServerProcess, name: str, parameters: dict[str, str] | None = None) -> tuple[int, str]:
    body = json.dumps({"parameters": parameters or {}}).encode()
    status, _, reply = http_request(server, "POST", f"/v2/repository/models/{name}/load", body, timeout=120)
    return status, json.loads(reply)["error"] if status != 200 else ""


def _grpc_load(server: ServerProcess, name: str, config: dict[str, Any] | None, files: dict[str, bytes]) -> Any:
    request = pb.RepositoryModelLoadRequest(model_name=name)
    if config is not None:
        request.parameters["config"].string_param = json.dumps(config)
    for path, content in files.items():
        request.parameters[path].bytes_param = content
    channel = grpc.insecure_channel(server.grpc)
    try:
        stub: Any = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stub.RepositoryModelLoad(request, timeout=120)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    finally:
        channel.close()
    return grpc.StatusCode.OK, ""


def _infers(server: ServerProcess, name: str) -> bool:
    inputs = [{"name": f"INPUT{i}", "datatype": "FP32", "shape": [4], "data": FOUR} for i in (0, 1)]
    body = json.dumps({"inputs": inputs}).encode()
    return http_request(server, "POST", f"/v2/models/{name}/infer", body)[0] == 200


def _healthy(server: ServerProcess) -> None:
    assert http_request(server, "GET", "/v2/health/live")[0] == 200
    assert _infers(server, "add_sub")
    assert server.process.poll() is None


MODEL_PY = (EXAMPLES / "add_sub" / "1" / "model.py").read_bytes()


@pytest.mark.parametrize("mode", ["true", "inline", "TRUE"])
def test_http_config_override_cannot_turn_in_process_on(server: ServerProcess, mode: str) -> None:
    config = json.dumps(_config("add_sub", mode))
    assert _http_load(server, "add_sub", {"config": config}) == (400, FROM_CLIENT.format(name="add_sub"))
    _healthy(server)  # the loaded version keeps serving, in its stub


def test_http_uploaded_code_cannot_run_in_process(server: ServerProcess) -> None:
    parameters = {
        "config": json.dumps(_config("uploaded", "true")),
        "file:1/model.py": base64.b64encode(MODEL_PY).decode(),
    }
    assert _http_load(server, "uploaded", parameters) == (400, FROM_CLIENT.format(name="uploaded"))
    assert http_request(server, "GET", "/v2/models/uploaded/ready")[0] == 400
    _healthy(server)


def test_an_override_cannot_repeat_the_repository_setting_either(server: ServerProcess) -> None:
    config = json.dumps(_config("add_sub_fast", "true"))
    assert _http_load(server, "add_sub_fast", {"config": config}) == (400, FROM_CLIENT.format(name="add_sub_fast"))
    _healthy(server)


def test_grpc_config_override_and_upload_cannot_turn_in_process_on(server: ServerProcess) -> None:
    expected = (grpc.StatusCode.INVALID_ARGUMENT, FROM_CLIENT.format(name="add_sub"))
    assert _grpc_load(server, "add_sub", _config("add_sub", "true"), {}) == expected
    expected = (grpc.StatusCode.INVALID_ARGUMENT, FROM_CLIENT.format(name="uploaded2"))
    assert _grpc_load(server, "uploaded2", _config("uploaded2", "inline"), {"file:1/model.py": MODEL_PY}) == expected
    _healthy(server)


def test_the_repository_config_and_a_false_override_still_load(server: ServerProcess) -> None:
    assert _http_load(server, "add_sub_fast") == (200, "")
    assert _infers(server, "add_sub_fast")
    server.wait_for_log("runs in the server process (parameter SEAWALL_IN_PROCESS)")
    uploaded = {
        "config": json.dumps(_config("uploaded3", "false")),
        "file:1/model.py": base64.b64encode(MODEL_PY).decode(),
    }
    assert _http_load(server, "uploaded3", uploaded) == (200, "")
    assert _infers(server, "uploaded3")
    _healthy(server)


def test_the_operator_can_forbid_in_process_models(repository: Path) -> None:
    process = start_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",
        "--load-model=add_sub",
        "--allow-in-process-models=false",
        repository=repository,
    )
    try:
        assert _http_load(process, "add_sub_fast") == (400, FORBIDDEN.format(name="add_sub_fast"))
        expected = (grpc.StatusCode.INVALID_ARGUMENT, FORBIDDEN.format(name="add_sub_fast"))
        assert _grpc_load(process, "add_sub_fast", None, {}) == expected
        assert http_request(process, "GET", "/v2/models/add_sub_fast/ready")[0] == 400
        _healthy(process)
    finally:
        process.stop()


def test_the_security_report_names_in_process_models(repository: Path) -> None:
    options = Options(repository=RepositoryOptions(paths=(str(repository),)), metrics=MetricsOptions(allow=False))
    findings = [(f.setting, f.risk) for f in assess(options, euid=1000)]
    assert findings == [
        (
            "--allow-in-process-models",
            "model 'add_sub_fast' runs in the server process (SEAWALL_IN_PROCESS): its code shares the server's "
            "memory, secrets and privileges, and a crash in it stops the server",
        )
    ]
    forbidden = options.replace(backends=BackendOptions(allow_in_process_models=False))
    assert assess(forbidden, euid=1000) == []
