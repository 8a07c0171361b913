"""What a real stub process has imported once it runs model code: only the modules tests/test_layering.py lets
it load (its own, the tensor types, the errors), never grpc, tritonclient, protobuf or the server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import seawall
from seawall.options import RepositoryOptions
from tests.test_layering import STUB_MAY_LOAD

MODEL = """
import json
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

WATCHED = ("grpc", "tritonclient", "google", "prometheus_client", "uvloop", "httptools", "seawall")


class TritonPythonModel:
    def execute(self, requests):
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in WATCHED)
        report = np.array([json.dumps(loaded).encode()], dtype=np.object_)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", report)]) for _ in requests]
"""

CONFIG = """
name: "imports"
backend: "python"
max_batch_size: 0
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 1 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_STRING, dims: [ 1 ] } ]
"""


async def test_a_running_stub_loaded_no_grpc_and_no_server(tmp_path: Path) -> None:
    model = tmp_path / "imports"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text(MODEL)
    (model / "config.pbtxt").write_text(CONFIG)
    options = seawall.Options(repository=RepositoryOptions(paths=(str(tmp_path),)))
    async with seawall.open_server(options) as server:
        request = seawall.InferRequest("imports", [seawall.Tensor.from_numpy("INPUT0", np.ones(1, np.float32))])
        response = await server.infer(request)
    loaded = set(json.loads(response.outputs[0].data[0]))
    assert sorted(m for m in loaded if m.split(".")[0] != "seawall") == []  # no grpc, tritonclient, protobuf
    assert sorted(loaded - STUB_MAY_LOAD) == []
    assert {"seawall", "seawall.backends.python.stub", "seawall.core.types"} <= loaded
