"""Request validation against a model spec, with the exact messages Triton 2.51 gives (observed)."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from seawall.core import model_config
from seawall.core.model_config import ModelSpec
from seawall.core.types import InferRequest, RequestedOutput, Tensor
from seawall.core.validation import check_request
from seawall.errors import InvalidArgumentError

ADD_SUB = """name: "add_sub" backend: "python"
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [4] }, { name: "INPUT1" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [4] }, { name: "OUTPUT1" data_type: TYPE_FP32 dims: [4] }]"""
IDENTITY = """name: "identity" backend: "python" max_batch_size: 8
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [-1] }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [-1] }]"""


def _spec(text: str) -> ModelSpec:
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    model_config.complete_defaults(config, config.name)
    return model_config.compile_spec(config)


def _fp32(name: str, shape: tuple[int, ...], datatype: str = "FP32") -> Tensor:
    return Tensor(name, datatype, shape, np.zeros(shape, np.float32))


def _error(request: InferRequest, spec: ModelSpec) -> str:
    with pytest.raises(InvalidArgumentError) as info:
        check_request(request, spec)
    return info.value.message


def test_a_good_request_passes_with_its_batch_size() -> None:
    assert check_request(InferRequest("add_sub", [_fp32("INPUT0", (4,)), _fp32("INPUT1", (4,))]), _spec(ADD_SUB)) == 1
    assert check_request(InferRequest("identity", [_fp32("INPUT0", (3, 5))]), _spec(IDENTITY)) == 3


def test_missing_input() -> None:
    assert _error(InferRequest("add_sub", [_fp32("INPUT0", (4,))]), _spec(ADD_SUB)) == (
        "[request id: <id_unknown>] expected 2 inputs but got 1 inputs for model 'add_sub'. Got input(s) "
        "['INPUT0'], but missing required input(s) ['INPUT1']. Please provide all required input(s)."
    )


def test_unknown_input() -> None:
    request = InferRequest("add_sub", [_fp32("INPUT0", (4,)), _fp32("INPUTX", (4,))])
    assert _error(request, _spec(ADD_SUB)) == "unexpected inference input 'INPUTX' for model 'add_sub'"


def test_wrong_shape_carries_the_request_id() -> None:
    request = InferRequest("add_sub", [_fp32("INPUT0", (2, 2)), _fp32("INPUT1", (4,))], id="x")
    assert _error(request, _spec(ADD_SUB)) == (
        "[request id: x] unexpected shape for input 'INPUT0' for model 'add_sub'. Expected [4], got [2,2]. "
    )


def test_missing_batch_dimension_adds_tritons_note() -> None:
    message = _error(InferRequest("identity", [_fp32("INPUT0", (3,))]), _spec(IDENTITY))
    assert message.startswith(
        "[request id: <id_unknown>] unexpected shape for input 'INPUT0' for model 'identity'. "
        "Expected [-1,-1], got [3]. NOTE: Setting a non-zero max_batch_size"
    )


def test_a_batching_model_adds_the_note_whatever_the_rank() -> None:
    # Triton 2.51 adds it to every shape error of a model with max_batch_size > 0 (checked: ranks 1 to 3)
    message = _error(InferRequest("identity", [_fp32("INPUT0", (1, 2, 3))]), _spec(IDENTITY))
    assert message.startswith(
        "[request id: <id_unknown>] unexpected shape for input 'INPUT0' for model 'identity'. "
        "Expected [-1,-1], got [1,2,3]. NOTE: Setting a non-zero max_batch_size"
    )


def test_wrong_datatype() -> None:
    request = InferRequest("add_sub", [_fp32("INPUT0", (4,), "INT32"), _fp32("INPUT1", (4,))])
    assert _error(request, _spec(ADD_SUB)) == (
        "[request id: <id_unknown>] inference input 'INPUT0' data-type is 'INT32', but model 'add_sub' expects 'FP32'"
    )


def test_batch_too_large() -> None:
    assert _error(InferRequest("identity", [_fp32("INPUT0", (9, 1))]), _spec(IDENTITY)) == (
        "[request id: <id_unknown>] inference request batch-size must be <= 8 for 'identity'"
    )


def test_duplicate_input() -> None:
    request = InferRequest("identity", [_fp32("INPUT0", (1, 3)), _fp32("INPUT0", (1, 3))])
    assert _error(request, _spec(IDENTITY)).endswith("input 'INPUT0' already exists in request")


def test_unknown_requested_output() -> None:
    request = InferRequest("add_sub", [_fp32("INPUT0", (4,)), _fp32("INPUT1", (4,))], outputs=[RequestedOutput("OUT")])
    assert _error(request, _spec(ADD_SUB)) == "unexpected inference output 'OUT' for model 'add_sub'"
