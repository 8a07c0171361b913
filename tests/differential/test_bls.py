"""BLS against the real Triton 2.51: the same model (tests/models/bls) calls add_sub on both servers, and the
error its call gets back (missing model, missing version, wrong input, missing input, unknown output), its
outputs, and is_model_ready's answers and errors must be the same. Triton's TritonError.code() prints an enum
where Seawall's gives the number, so only the messages are compared.

Not compared: load_model / unload_model outside explicit mode and is_model_ready with a version that is not an
integer (Triton 2.51 answers the error, then dies: see docs/differences.md; tests/e2e/test_bls.py checks
Seawall's text, taken from Triton's answer), and a model calling itself (Triton waits forever).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, triton_and_seawall

X = np.arange(4, dtype=np.float32)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    root = tmp_path_factory.mktemp("bls")
    with triton_and_seawall(root, EXAMPLES / "add_sub", TEST_MODELS / "bls") as pair:
        yield pair


def _answer(server: ServerProcess, parameters: dict[str, object]) -> object:
    client = httpclient.InferenceServerClient(server.http, network_timeout=60)
    inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_data_from_numpy(X)
    inputs[1].set_data_from_numpy(np.ones(4, dtype=np.float32))
    try:
        result = client.infer("bls", inputs, parameters=parameters)
        return [None if (array := result.as_numpy(name)) is None else array.tolist() for name in ("OUTPUT0", "OUTPUT1")]
    except InferenceServerException as exc:
        text = str(exc.message())
        return text.split(" message=", 1)[-1] if text.startswith("code=") else text  # drop the code's spelling
    finally:
        client.close()


@pytest.mark.parametrize(
    "parameters",
    [
        {},
        {"outputs": "OUTPUT1"},
        {"target": "missing"},
        {"version": 7},
        {"rename": "INPUT1:WRONG"},
        {"drop": "INPUT1"},
        {"outputs": "NOPE"},
        {"mode": "ready"},
        {"mode": "ready", "version": "1"},
        {"mode": "ready", "target": "nope"},
        {"mode": "init"},
        {"mode": "bad", "bad": "none_input"},
        {"mode": "bad", "bad": "empty_output"},
        {"mode": "bad", "bad": "correlation"},
        {"mode": "bad", "bad": "float_parameter"},
    ],
    ids=str,
)
def test_bls_answers_as_triton(servers: tuple[ServerProcess, ServerProcess], parameters: dict[str, object]) -> None:
    triton, seawall = servers
    assert _answer(seawall, parameters) == _answer(triton, parameters)
