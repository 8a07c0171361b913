"""In-process python models share the server's `sys.modules`: a module of a model directory whose name the server
process already imported (another in-process model's `helper`, or a server module) would be answered with that
module instead of the model's own. Such a model is refused by name (a byte-identical copy is shared); once the
other model unloads, it loads with its own module. Real server, explicit model control, the HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.harness import ServerProcess, start_seawall

MODEL_PY = """import numpy as np
import triton_python_backend_utils as pb_utils

import {module}


class TritonPythonModel:
    def execute(self, requests):
        value = np.array([{module}.VALUE], dtype=np.int32)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", value)]) for _ in requests]
"""
CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "IN", data_type: TYPE_INT32, dims: [ 1 ] }} ]
output [ {{ name: "OUT", data_type: TYPE_INT32, dims: [ 1 ] }} ]
parameters {{ key: "SEAWALL_IN_PROCESS" value: {{ string_value: "{mode}" }} }}
"""
REFUSAL = (
    "has the name of a module the server process has already imported (another in-process model's, or the "
    "server's own): in-process models share one set of modules; rename it, or run the model in a stub"
)


def _model(root: Path, name: str, module: str, value: int, mode: str = "true") -> None:
    version = root / name / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(MODEL_PY.format(module=module))
    (version / f"{module}.py").write_text(f"VALUE = {value}\n")
    (root / name / "config.pbtxt").write_text(CONFIG.format(name=name, mode=mode))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    _model(tmp_path, "first", "helper", 1)
    _model(tmp_path, "second", "helper", 2)
    _model(tmp_path, "copy", "helper", 1)  # the first model's helper, byte for byte
    _model(tmp_path, "inline_second", "helper", 3, mode="inline")
    _model(tmp_path, "stubbed", "helper", 4, mode="false")
    _model(tmp_path, "shadow", "json", 5)  # the server's own json module
    process = start_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",
        "--allow-in-process-models=true",
        "--load-model=first",
        repository=tmp_path,
    )
    yield process
    process.stop()


def _out(server: ServerProcess, model: str) -> int:
    tensor = httpclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([0], dtype=np.int32))
    result = httpclient.InferenceServerClient(server.http).infer(model, [tensor]).as_numpy("OUT")
    assert result is not None
    return int(result[0])


def _refused(server: ServerProcess, model: str, module: str) -> None:
    client = httpclient.InferenceServerClient(server.http)
    with pytest.raises(InferenceServerException) as caught:
        client.load_model(model)
    assert f"module '{module}' of the model directory {REFUSAL}" in caught.value.message()
    assert not client.is_model_ready(model)


def test_a_module_name_another_in_process_model_imported_is_refused(server: ServerProcess) -> None:
    assert _out(server, "first") == 1
    _refused(server, "second", "helper")
    _refused(server, "inline_second", "helper")
    assert _out(server, "first") == 1  # unchanged
    client = httpclient.InferenceServerClient(server.http)
    client.load_model("copy")  # the same source: sharing the module changes nothing it can see
    assert _out(server, "copy") == 1
    client.unload_model("copy")
    client.load_model("stubbed")  # in its own stub process: its own helper
    assert _out(server, "stubbed") == 4
    client.unload_model("first")
    client.load_model("second")  # the name is free again: its own helper, not the first model's
    assert _out(server, "second") == 2
    assert client.is_server_live()


def test_a_module_shadowing_a_server_module_is_refused(server: ServerProcess) -> None:
    _refused(server, "shadow", "json")
    assert httpclient.InferenceServerClient(server.http).is_server_live()
    assert _out(server, "first") == 1


def test_an_in_process_model_loads_again_with_its_own_modules(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.http)
    for _ in range(2):
        client.unload_model("first")
        client.load_model("first")
        assert _out(server, "first") == 1
