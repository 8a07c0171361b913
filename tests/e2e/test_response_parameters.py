"""Response parameters set by model code (`pb_utils.InferenceResponse(..., parameters={...})`, Triton's python
backend after 2.51) reach HTTP and gRPC clients; parameters pb_utils or the server refuses fail the request with
a clear error, and the server stays healthy (tests/models/error_codes, in a stub and in process)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.harness import TEST_MODELS, ServerProcess, http_request, start_seawall

IN_PROCESS = 'parameters { key: "SEAWALL_IN_PROCESS" value: { string_value: "true" } }\n'


@pytest.fixture(scope="module", params=["stub", "in_process"])
def seawall(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("repository")
    shutil.copytree(TEST_MODELS / "error_codes", repository / "error_codes")
    if request.param == "in_process":
        config = repository / "error_codes" / "config.pbtxt"
        config.write_text(config.read_text() + IN_PROCESS)
    server = start_seawall(repository=repository)
    yield server
    server.stop()


def _http(server: ServerProcess, code: int) -> tuple[int, dict[str, object]]:
    body = {"inputs": [{"name": "CODE", "datatype": "INT32", "shape": [1], "data": [code]}]}
    status, _, reply = http_request(server, "POST", "/v2/models/error_codes/infer", json.dumps(body).encode())
    found: dict[str, object] = json.loads(reply)
    return status, found


def test_parameters_reach_http_and_grpc_clients(seawall: ServerProcess) -> None:
    expected = {"p_str": "x\ny", "p_int": 7, "p_bool": True, "p_float": 0.5}
    status, body = _http(seawall, 8)
    assert status == 200 and body["parameters"] == expected
    with grpcclient.InferenceServerClient(seawall.grpc) as client:
        tensor = grpcclient.InferInput("CODE", [1], "INT32")
        tensor.set_data_from_numpy(np.array([8], dtype=np.int32))
        response = client.infer("error_codes", [tensor]).get_response()
    found = {key: getattr(value, value.WhichOneof("parameter_choice")) for key, value in response.parameters.items()}
    assert found == expected
    status, body = _http(seawall, 11)  # no parameters: none in the answer, as before
    assert status == 200 and "parameters" not in body


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (9, "InferenceResponse parameters: keys must be strings and values bool, int, float or str"),
        (10, "model 'error_codes' set response parameters that are not 64 or fewer string keys"),
    ],
)
def test_refused_parameters_fail_the_request(seawall: ServerProcess, code: int, expected: str) -> None:
    status, body = _http(seawall, code)
    assert status == 500 and expected in str(body["error"]), body
    with grpcclient.InferenceServerClient(seawall.grpc) as client:
        tensor = grpcclient.InferInput("CODE", [1], "INT32")
        tensor.set_data_from_numpy(np.array([code], dtype=np.int32))
        with pytest.raises(InferenceServerException, match="parameters") as raised:
            client.infer("error_codes", [tensor])
    assert raised.value.status() == "StatusCode.INTERNAL"
    assert seawall.is_ready()
