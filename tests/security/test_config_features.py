"""ModelConfig features Seawall does not implement (issue 9: `model_warmup` (since implemented), `cc_model_filenames`,
`EXECUTION_ENV_PATH` were accepted and ignored): a model that sets one fails its load, naming the feature, over
the repository at start-up and over the HTTP and gRPC load APIs; other models are unaffected.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.harness import EXAMPLES, ServerProcess, http_request, start_seawall

BASE = (EXAMPLES / "add_sub" / "config.pbtxt").read_text()

#: feature name in the message → config text appended to add_sub's (or replacing parts of it)
FEATURES: dict[str, str] = {
    "cc_model_filenames": 'cc_model_filenames { key: "7.5" value: "model.py" }',
    "metric_tags": 'metric_tags { key: "team" value: "a" }',
    "parameter EXECUTION_ENV_PATH": 'parameters { key: "EXECUTION_ENV_PATH" '
    'value { string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz" } }',
    "sequence_batching.iterative_sequence": "sequence_batching { iterative_sequence: true }",
    "sequence_batching.oldest.preserve_ordering": "sequence_batching { oldest { preserve_ordering: true } }",
    "runtime": 'runtime: "other.py"',
    "batch_input": 'batch_input [{ kind: BATCH_ELEMENT_COUNT target_name: "X" data_type: TYPE_FP32 '
    'source_input: "INPUT0" }]',
    "optimization.priority": "optimization { priority: PRIORITY_MAX }",
    "optimization.graph": "optimization { graph { level: 1 } }",
    "optimization.execution_accelerators": "optimization { execution_accelerators { "
    'cpu_execution_accelerator [{ name: "openvino" }] } }',
    "optimization.eager_batching": "optimization { eager_batching: true }",
    "instance_group.passive": "instance_group [ { kind: KIND_CPU passive: true } ]",
    "input.format": "",
    "sequence_batching of an onnxruntime or pytorch model": "",
}
BATCHING_FEATURES: dict[str, str] = {
    "dynamic_batching.preserve_ordering of a decoupled model": (
        "dynamic_batching { preserve_ordering: true }\nmodel_transaction_policy { decoupled: true }"
    ),
}


def _model_name(feature: str) -> str:
    return "f_" + "".join(c if c.isalnum() else "_" for c in feature).strip("_")


def _config(feature: str) -> str:
    if feature in BATCHING_FEATURES:
        return BASE.replace('name: "add_sub"', f'name: "{_model_name(feature)}"') + "\n" + BATCHING_FEATURES[feature]
    text = BASE.replace('name: "add_sub"', f'name: "{_model_name(feature)}"')
    if feature == "input.format":
        return text.replace(
            'name: "INPUT0"\n    data_type: TYPE_FP32',
            'name: "INPUT0"\n    data_type: TYPE_FP32\n    format: FORMAT_NCHW',
            1,
        )
    if feature.startswith("sequence_batching of an"):  # refused before the backend looks for its model file
        return text.replace('backend: "python"', 'backend: "onnxruntime"', 1) + "\nsequence_batching { }\n"
    if "instance_group" in FEATURES[feature]:
        text = "\n".join(line for line in text.splitlines() if not line.startswith("instance_group"))
    return text + "\n" + FEATURES[feature] + "\n"


ALL = [*FEATURES, *BATCHING_FEATURES]


def _message(feature: str) -> str:
    return f"load failed for model '{_model_name(feature)}': {feature} is not supported by Seawall yet;\n"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("features")
    shutil.copytree(EXAMPLES / "add_sub", root / "add_sub")
    for feature in ALL:
        model = root / _model_name(feature)
        shutil.copytree(EXAMPLES / "add_sub", model)
        (model / "config.pbtxt").write_text(_config(feature))
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


def _healthy(server: ServerProcess) -> None:
    # a model that failed to load makes the server not ready under --strict-readiness (Triton's default)
    assert http_request(server, "GET", "/v2/health/live")[0] == 200
    assert http_request(server, "GET", "/v2/models/add_sub/ready")[0] == 200
    assert server.process.poll() is None


@pytest.mark.parametrize("feature", ALL)
def test_http_load_refuses_unsupported_features(server: ServerProcess, feature: str) -> None:
    status, _, body = http_request(server, "POST", f"/v2/repository/models/{_model_name(feature)}/load", b"{}")
    assert (status, json.loads(body)["error"]) == (400, _message(feature))
    assert http_request(server, "GET", f"/v2/models/{_model_name(feature)}/ready")[0] == 400
    _healthy(server)


@pytest.mark.parametrize("feature", ["runtime", "cc_model_filenames", "parameter EXECUTION_ENV_PATH"])
def test_grpc_load_refuses_unsupported_features(server: ServerProcess, feature: str) -> None:
    channel = grpc.insecure_channel(server.grpc)
    try:
        stub: Any = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=_model_name(feature)), timeout=60)
        assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, _message(feature))
    finally:
        channel.close()
    _healthy(server)


def test_a_config_override_cannot_bring_an_unsupported_feature(server: ServerProcess) -> None:
    config = {"name": "add_sub", "backend": "python", "cc_model_filenames": {"7.5": "model.py"}}
    body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
    status, _, reply = http_request(server, "POST", "/v2/repository/models/add_sub/load", body)
    assert (status, json.loads(reply)["error"]) == (
        400,
        "load failed for model 'add_sub': cc_model_filenames is not supported by Seawall yet;\n",
    )
    _healthy(server)  # the loaded version keeps serving


def test_startup_loads_the_others(repository: Path) -> None:
    process = start_seawall("--exit-on-error=false", repository=repository)
    try:
        assert http_request(process, "GET", "/v2/models/add_sub/ready")[0] == 200
        assert http_request(process, "GET", f"/v2/models/{_model_name('cc_model_filenames')}/ready")[0] == 400
        assert "cc_model_filenames is not supported by Seawall yet" in process.log()
    finally:
        process.stop()
