"""ONNX test models, built at test time with onnx.helper (no binary model is committed), and the repositories the
onnxruntime tests serve. Each builder returns a ModelProto; `write` puts it (and a config) into a repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import ModelProto, TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # what onnxruntime >= 1.17 reads
WEIGHTS = np.arange(16, dtype=np.float32).reshape(4, 4) / 8.0


def model_of(graph: object) -> ModelProto:
    """`graph` as a model of this module's opset and IR version (what the installed onnxruntime reads)."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def add_sub(dims: list[object], dtype: int = TensorProto.FLOAT) -> ModelProto:
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (the examples' add_sub, as a graph)."""
    inputs = [helper.make_tensor_value_info(n, dtype, dims) for n in ("INPUT0", "INPUT1")]
    outputs = [helper.make_tensor_value_info(n, dtype, dims) for n in ("OUTPUT0", "OUTPUT1")]
    nodes = [
        helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
        helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
    ]
    return model_of(helper.make_graph(nodes, "add_sub", inputs, outputs))


def matmul(external: str | None = None) -> ModelProto:
    """Y = X @ W with X [batch, 4] and W the 4x4 WEIGHTS; `external`: W's data lives in that file (location as
    written in the model: the test writes the file itself, or not, or makes it a link)."""
    weights = numpy_helper.from_array(WEIGHTS, "W")
    if external is not None:
        weights.ClearField("raw_data")
        weights.data_location = TensorProto.EXTERNAL
        for key, value in (("location", external), ("offset", "0"), ("length", str(WEIGHTS.nbytes))):
            entry = weights.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "matmul",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])],
        [weights],
    )
    return model_of(graph)


def identity(dtype: int) -> ModelProto:
    """Y = X, of any element type (onnxruntime's Identity takes them all), X [n]."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["Y"])],
        "identity",
        [helper.make_tensor_value_info("X", dtype, ["n"])],
        [helper.make_tensor_value_info("Y", dtype, ["n"])],
    )
    return model_of(graph)


def strings() -> ModelProto:
    """TEXT [batch, 1] strings → UPPER (StringNormalizer to upper case) and SAME (Identity)."""
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["TEXT"], ["flat"], axis=0),
            helper.make_node("StringNormalizer", ["flat"], ["upper_flat"], case_change_action="UPPER", locale="C"),
            helper.make_node("Shape", ["TEXT"], ["shape"]),
            helper.make_node("Reshape", ["upper_flat", "shape"], ["UPPER"]),
            helper.make_node("Identity", ["TEXT"], ["SAME"]),
        ],
        "strings",
        [helper.make_tensor_value_info("TEXT", TensorProto.STRING, ["batch", 1])],
        [
            helper.make_tensor_value_info("UPPER", TensorProto.STRING, ["batch", 1]),
            helper.make_tensor_value_info("SAME", TensorProto.STRING, ["batch", 1]),
        ],
    )
    return model_of(graph)


def write(
    root: Path, name: str, model: ModelProto | bytes | None, config: str | None, filename: str = "model.onnx"
) -> Path:
    """`root/name/1/<filename>` (the model; None: none) and `root/name/config.pbtxt` (None: none); the version
    directory."""
    version = root / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    if model is not None:
        data = model if isinstance(model, bytes) else model.SerializeToString()
        (version / filename).write_bytes(data)
    if config is not None:
        (root / name / "config.pbtxt").write_text(config)
    return version


ADD_SUB_CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [
  {{ name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] }},
  {{ name: "INPUT1", data_type: TYPE_FP32, dims: [ -1 ] }}
]
output [
  {{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] }},
  {{ name: "OUTPUT1", data_type: TYPE_FP32, dims: [ -1 ] }}
]
{extra}
"""

MATMUL_CONFIG = """
name: "{name}"
backend: "onnxruntime"
max_batch_size: 8
input [ {{ name: "X", data_type: TYPE_FP32, dims: [ 4 ] }} ]
output [ {{ name: "Y", data_type: TYPE_FP32, dims: [ 4 ] }} ]
{extra}
"""
