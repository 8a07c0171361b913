"""Auto-complete without a stub: the static scan of a model file, and the python backend skipping the throw-away
stub only when the model file certainly has no auto_complete_config (through the backend's public API)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2

from seawall.backends.python.hook_scan import MAX_SCAN_BYTES, may_define_auto_complete
from seawall.backends.python.host import PythonBackend
from seawall.core.backend import ModelLoadContext
from seawall.core.types import InferRequest, InferResponse, Tensor

PLAIN = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        self.scale = 2

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() * self.scale)]
            )
            for r in requests
        ]
"""

HOOK_BODY = """
    @staticmethod
    def auto_complete_config(config):
        config.add_input({"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [2]})
        config.add_output({"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [2]})
        return config
"""

#: (source, may define the hook): every way past the plain class is answered "may" (a stub runs)
CASES = [
    (PLAIN, False),
    ("class TritonPythonModel:\n    pass\n", False),
    ("class TritonPythonModel:\n" + HOOK_BODY, True),
    (PLAIN + "\nclass Other:\n" + HOOK_BODY, True),  # the name appears: a stub decides
    ("from base import Base\nclass TritonPythonModel(Base):\n    pass\n", True),
    ("class TritonPythonModel(metaclass=type):\n    pass\n", True),
    ("import functools\n@functools.total_ordering\nclass TritonPythonModel:\n    pass\n", True),
    ("from base import *\nclass TritonPythonModel:\n    pass\n", True),
    ("class TritonPythonModel:\n    pass\nfrom base import TritonPythonModel\n", True),
    ("class TritonPythonModel:\n    pass\nTritonPythonModel = object\n", True),
    ("try:\n    from base import TritonPythonModel\nexcept ImportError:\n    pass\n", True),
    ("def make():\n    global TritonPythonModel\nclass TritonPythonModel:\n    pass\n", True),
    ("class TritonPythonModel:\n    pass\nsetattr(TritonPythonModel, 'auto_' 'complete_config', 1)\n", True),
    ("class TritonPythonModel:\n    pass\nsetattr(TritonPythonModel, 'x', 1)\n", True),
    ("class TritonPythonModel:\n    pass\nexec('TritonPythonModel.x = 1')\n", True),
    ("import sys\nclass TritonPythonModel:\n    pass\nsys.modules[__name__].TritonPythonModel = 1\n", True),
    ("class TritonPythonModel:\n    pass\nglobals()['x'] = 1\n", True),
    # identifiers are NFKC-normalised: a fullwidth "ａ" is the hook's name once parsed, not in the bytes
    ("class TritonPythonModel:\n    def \uff41uto_complete_config(c):\n        return c\n", True),
    ("class TritonPythonModel(:\n", True),  # does not parse: the stub reports the syntax error
    ("import base\n", True),  # no class here at all
    ("class TritonPythonModel:\n    pass\n" + "#" * MAX_SCAN_BYTES, True),  # too large to parse in the server
]


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_the_scan_says_no_only_for_a_plain_class(source: str, expected: bool) -> None:
    assert may_define_auto_complete(source.encode()) is expected


def _model(root: Path, name: str, source: str, config: str = "") -> Path:
    model_dir = root / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.py").write_text(source)
    (model_dir / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "python"\n{config}')
    return model_dir


def _context(model_dir: Path, config: model_config_pb2.ModelConfig) -> ModelLoadContext:
    return ModelLoadContext(
        name=model_dir.name,
        version=1,
        config=config,
        model_dir=str(model_dir),
        version_dir=str(model_dir / "1"),
        backend_settings={},
        auto_complete=True,
        report_unavailable=lambda reason: None,
    )


async def _complete(backend: PythonBackend, model_dir: Path) -> model_config_pb2.ModelConfig:
    partial = model_config_pb2.ModelConfig(name=model_dir.name, backend="python")
    return await backend.auto_complete_config(partial, str(model_dir), str(model_dir / "1"))


IO = """input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 2 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 2 ] } ]
"""


async def test_a_plain_model_is_imported_once_per_instance_not_for_auto_complete(
    backend: PythonBackend, tmp_path: Path
) -> None:
    """Each import of the model file appends a line: one stub (the instance), no auto-complete stub."""
    imports = tmp_path / "imports.txt"
    source = f"with open({str(imports)!r}, 'a') as _f:\n    _f.write('imported\\n')\n" + PLAIN
    model_dir = _model(tmp_path, "plain", source, IO)
    config = model_config_pb2.ModelConfig(name="plain", backend="python")
    config.input.add(name="INPUT0", data_type=model_config_pb2.TYPE_FP32, dims=[2])
    config.output.add(name="OUTPUT0", data_type=model_config_pb2.TYPE_FP32, dims=[2])
    completed = await backend.auto_complete_config(config, str(model_dir), str(model_dir / "1"))
    assert completed == config
    assert not imports.exists()  # no process imported the model to auto-complete it
    model = await backend.load(_context(model_dir, completed))
    try:
        request = InferRequest("plain", [Tensor.from_numpy("INPUT0", np.ones(2, np.float32))])
        [response] = await model.instances[0].execute([request])
        assert isinstance(response, InferResponse)
        np.testing.assert_array_equal(response.outputs[0].data, np.full(2, 2, np.float32))
    finally:
        await model.unload()
    assert imports.read_text() == "imported\n"


async def test_a_hook_inherited_from_a_helper_module_still_completes_the_config(
    backend: PythonBackend, tmp_path: Path
) -> None:
    model_dir = _model(tmp_path, "inherited", "from helper import Base\n\nclass TritonPythonModel(Base):\n    pass\n")
    (model_dir / "1" / "helper.py").write_text("class Base:\n" + HOOK_BODY)
    completed = await _complete(backend, model_dir)
    assert [(i.name, list(i.dims)) for i in completed.input] == [("INPUT0", [2])]
    assert [(o.name, list(o.dims)) for o in completed.output] == [("OUTPUT0", [2])]


async def test_a_hook_added_by_setattr_still_completes_the_config(backend: PythonBackend, tmp_path: Path) -> None:
    source = (
        "def _complete(config):\n"
        + "\n".join(line[4:] for line in HOOK_BODY.splitlines()[3:])
        + "\n\nclass TritonPythonModel:\n    pass\n\n"
        "setattr(TritonPythonModel, 'auto_' + 'complete_config', staticmethod(_complete))\n"
    )
    model_dir = _model(tmp_path, "patched", source)
    completed = await _complete(backend, model_dir)
    assert [(i.name, list(i.dims)) for i in completed.input] == [("INPUT0", [2])]
