"""Safe intake of ONNX models, on files: external data wherever a tensor hides it (subgraphs, node attributes) is
confined to the version directory before anything outside is opened, and inlined so onnxruntime opens no file;
checksum pins apply to the bytes read. Session parameters parse as Triton's do."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import ModelProto, TensorProto, helper, numpy_helper

from seawall.backends.onnxruntime import intake, session_options
from seawall.core.config_proto import ModelConfig
from seawall.errors import InvalidArgumentError
from tests import onnx_models as m

LIMIT = 1 << 20


def _external(tensor: TensorProto, location: str, length: int) -> TensorProto:
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _if_model(location: str) -> ModelProto:
    """Y = If(cond) then Constant(W external) else Constant(W external): the external tensors sit in node
    attributes of subgraphs, not in the main graph's initializers."""
    branches = []
    for name in ("then", "else"):
        weights = _external(numpy_helper.from_array(m.WEIGHTS, "W"), location, m.WEIGHTS.nbytes)
        constant = helper.make_node("Constant", [], [f"{name}_out"], value=weights)
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [4, 4])
        branches.append(helper.make_graph([constant], name, [], [out]))
    node = helper.make_node("If", ["C"], ["Y"], then_branch=branches[0], else_branch=branches[1])
    graph = helper.make_graph(
        [node],
        "if",
        [helper.make_tensor_value_info("C", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4, 4])],
    )
    return m.model_of(graph)


def _read(root: Path, model: ModelProto, pins: list[dict[str, str]] | None = None) -> intake.ModelBytes:
    version = m.write(root, "x", model, None)
    path = intake.locate(str(root / "x"), str(version), "model.onnx", "x")
    return intake.read_model(path, str(root / "x"), str(version), pins or [], LIMIT, "x")


def test_external_data_in_subgraph_attributes_is_inlined_and_runs(tmp_path: Path) -> None:
    (tmp_path / "x" / "1").mkdir(parents=True)
    (tmp_path / "x" / "1" / "w.bin").write_bytes(m.WEIGHTS.tobytes())
    read = _read(tmp_path, _if_model("w.bin"))
    assert read.external_files == ("1/w.bin",)
    session = ort.InferenceSession(read.data, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"C": np.array(True)})[0], m.WEIGHTS)


@pytest.mark.parametrize("location", ["../../outside.bin", "/etc/hostname", "sub/../../x.bin", "C:\\x.bin"])
def test_a_location_leaving_the_version_directory_in_a_subgraph_is_refused_unopened(
    tmp_path: Path, location: str
) -> None:
    os.mkfifo(tmp_path / "outside.bin")  # opening it would block the test
    with pytest.raises(InvalidArgumentError) as info:
        _read(tmp_path, _if_model(location))
    assert info.value.message == (
        f"external data location '{location}' of model 'x' must be a relative path inside the model's version directory"
    )


def test_a_symlinked_directory_out_of_the_version_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    os.mkfifo(tmp_path / "elsewhere" / "w.bin")
    (tmp_path / "x" / "1").mkdir(parents=True)
    (tmp_path / "x" / "1" / "data").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InvalidArgumentError) as info:
        _read(tmp_path, _if_model("data/w.bin"))
    assert info.value.message == (
        "external data location 'data/w.bin' of model 'x' resolves outside the model's version directory"
    )


def test_pins_cover_the_external_bytes_read(tmp_path: Path) -> None:
    (tmp_path / "x" / "1").mkdir(parents=True)
    (tmp_path / "x" / "1" / "w.bin").write_bytes(m.WEIGHTS.tobytes())
    model = _if_model("w.bin")
    good = {
        "1/model.onnx": hashlib.sha256(model.SerializeToString()).hexdigest(),
        "1/w.bin": hashlib.sha256(m.WEIGHTS.tobytes()).hexdigest(),
    }
    assert _read(tmp_path, model, [good]).external_files == ("1/w.bin",)
    with pytest.raises(InvalidArgumentError) as info:
        _read(tmp_path, model, [{**good, "1/w.bin": "0" * 64}])
    assert info.value.message == "checksum agent: file '1/w.bin' of model 'x' does not match its SHA256 pin"


def test_a_model_file_name_leaving_the_version_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x" / "1").mkdir(parents=True)
    with pytest.raises(InvalidArgumentError) as info:
        intake.locate(str(tmp_path / "x"), str(tmp_path / "x" / "1"), "../config.pbtxt", "x")
    assert (
        info.value.message == "model file '../config.pbtxt' of model 'x' must be inside the model's version directory"
    )


def _config(**parameters: str) -> ModelConfig:
    config = ModelConfig(name="x", backend="onnxruntime")
    for key, value in parameters.items():
        config.parameters[key.replace("__", ".")].string_value = value
    return config


def test_triton_parameters_parse_into_session_settings() -> None:
    config = _config(
        intra_op_thread_count="2",
        inter_op_thread_count="3",
        execution_mode="1",
        enable_mem_pattern="OFF",
        enable_mem_arena="1",
        memory__enable_memory_arena_shrinkage="cpu:0",
    )
    config.optimization.graph.level = -1
    assert session_options.parse(config) == session_options.SessionSettings(
        graph_level="ORT_ENABLE_BASIC",
        parallel=True,
        intra_op_threads=2,
        inter_op_threads=3,
        mem_pattern=False,
        mem_arena=True,
        arena_shrinkage="cpu:0",
    )


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"intra_op_thread_count": "-1"}, "parameter 'intra_op_thread_count' of model 'x' must be between 0 and 1024"),
        ({"inter_op_thread_count": "x1"}, "failed to convert 'x1' to integral number"),
        (
            {"memory__enable_memory_arena_shrinkage": "gpu:0"},
            "parameter 'memory.enable_memory_arena_shrinkage' of model 'x' must list CPU devices ('cpu:0'), got "
            "'gpu:0'",
        ),
    ],
)
def test_bad_parameter_values_are_refused_by_name(parameters: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        session_options.parse(_config(**parameters))
    assert info.value.message == message
