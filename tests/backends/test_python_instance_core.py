"""The python backend's shared instance core (`instance_core`): the one place where a model's failures become
client errors (paths hidden), outputs are checked against the config, and start-up is bounded in time, for the
stub, in-process and auto-complete paths alike. The server tests show each path end to end."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from seawall.backends.python.instance_core import InstanceSpec, hidden_prefix, request_header, within
from seawall.core.types import InferRequest, InferResponse, RequestedOutput
from seawall.errors import Code, InternalError, UnavailableError

SPEC = InstanceSpec(
    model_name="m",
    model_version="1",
    instance_name="m_0",
    model_file="/repo/m/1/model.py",
    version_dir="/repo/m/1",
    args={},
    output_types={"OUT": "FP32", "HALF": "BF16"},
    hidden_prefix="/repo/",
)


def _request(**parameters: object) -> InferRequest:
    return InferRequest("m", [], "1", id="r1", parameters=parameters)  # type: ignore[arg-type]


def test_errors_hide_the_repository_path() -> None:
    assert SPEC.batch_failed("OSError: /repo/m/1/data.bin", "").message == (
        "Failed to process the request(s) for model 'm_0', message: OSError: m/1/data.bin"
    )
    assert SPEC.initialize_failed("ValueError: /repo/m/x", "trace").message == (
        "Failed to initialize model instance 'm_0': ValueError: m/x"
    )
    assert hidden_prefix("/tmp/../tmp/repo/m") == "/tmp/repo/"


@pytest.mark.parametrize(
    ("code", "expected"),
    [(0, Code.UNKNOWN), (3, Code.INVALID_ARG), (7, Code.CANCELLED), (8, Code.INTERNAL), (-1, Code.INTERNAL)],
)
def test_model_error_codes(code: int, expected: Code) -> None:
    error = SPEC.response_error(code, "bad /repo/m")
    assert (error.code, error.message) == (expected, "bad m")


def test_outputs_are_checked_against_the_config() -> None:
    request = _request()
    good = SPEC.response(
        request, [("OUT", "FP32", np.zeros(2, np.float32)), ("HALF", "UINT16", np.zeros(1, np.uint16))]
    )
    assert isinstance(good, InferResponse)
    assert [(t.name, t.datatype) for t in good.outputs] == [("OUT", "FP32"), ("HALF", "BF16")]
    other = SPEC.response(request, [("OUT", "INT32", np.zeros(2, np.int32))])  # sent as made, as Triton does
    assert isinstance(other, InferResponse) and [(t.name, t.datatype) for t in other.outputs] == [("OUT", "INT32")]
    extra = SPEC.response(request, [("OTHER", "FP32", np.zeros(1, np.float32))])
    assert isinstance(extra, InternalError) and extra.message == "unexpected inference output 'OTHER' for model 'm'"


def test_start_up_is_bounded() -> None:
    async def never() -> None:
        await asyncio.sleep(10)

    with pytest.raises(UnavailableError, match="model instance 'm_0' did not initialize in time"):
        asyncio.run(SPEC.initialize(never(), 0.01))
    with pytest.raises(UnavailableError, match="late"):
        asyncio.run(within(never(), 0.01, "late"))


def test_request_header() -> None:
    request = _request(sequence_id=5, sequence_start=True, sequence_end=True, priority=1, custom="x")
    request.outputs = [RequestedOutput("OUT")]
    inputs = [["IN", "FP32", [1], 0, 4]]
    assert request_header(request, inputs) == ("r1", inputs, ["OUT"], 5, 3, {"custom": "x"})  # type: ignore[arg-type]
    assert request_header(_request(), []) == ("r1", [], [], 0, 0, {})
