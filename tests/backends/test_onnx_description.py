"""The signature a throw-away auto-complete worker sends back (`signature.describe` / `from_description`): what
onnxruntime reports round-trips exactly, and anything else a compromised worker could send is refused with one
INTERNAL message naming the model, before the server builds a config from it."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from seawall.backends.onnxruntime import runtime, signature
from seawall.errors import InternalError
from tests import onnx_models as m


def test_a_sessions_signature_round_trips_through_its_description() -> None:
    for model in (m.strings(), m.matmul(), m.add_sub([4])):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        described = runtime.signature_of(session)
        assert signature.from_description(signature.describe(described), "strings") == described


GOOD = {"inputs": [["X", "TYPE_FP32", [-1, 4]]], "initializers": [], "outputs": [["Y", "TYPE_FP32", [-1, 4]]]}


@pytest.mark.parametrize(
    "description",
    [
        None,
        [],
        {"inputs": [], "outputs": []},  # a kind missing
        {**GOOD, "extra": []},
        {**GOOD, "inputs": [["X", "TYPE_FP32"]]},  # an entry too short
        {**GOOD, "inputs": [["", "TYPE_FP32", [4]]]},  # no name
        {**GOOD, "inputs": [["X" * 4097, "TYPE_FP32", [4]]]},
        {**GOOD, "inputs": [["X", "TYPE_NOPE", [4]]]},  # a type the config has no name for
        {**GOOD, "inputs": [["X", "TYPE_FP32", [-2]]]},
        {**GOOD, "inputs": [["X", "TYPE_FP32", [2**63]]]},
        {**GOOD, "inputs": [["X", "TYPE_FP32", [True]]]},
        {**GOOD, "inputs": [["X", "TYPE_FP32", [1.5]]]},
        {**GOOD, "inputs": [["X", "TYPE_FP32", [1] * 65]]},
        {**GOOD, "outputs": [["Y", "TYPE_FP32", [4]]] * 65537},
    ],
)
def test_a_description_that_describe_does_not_write_is_refused(description: object) -> None:
    with pytest.raises(InternalError) as info:
        signature.from_description(description, "mymodel")
    assert info.value.message == (
        "auto-complete of model 'mymodel' failed: the onnxruntime worker sent an invalid signature"
    )
