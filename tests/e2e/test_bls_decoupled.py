"""BLS of decoupled models end to end: `exec(decoupled=True)` / `async_exec(decoupled=True)` return an iterator of
the callee's responses (the last one final: an empty response when the callee ended its stream without data;
errors as responses), `cancel()` cancels the call. The model tests/models/bls_stream reports, as JSON, every
response its iterator gave; the tests drive it with tritonclient over HTTP and gRPC, from a stub and in process.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, start_seawall

IN_PROCESS = 'parameters { key: "SEAWALL_IN_PROCESS" value: { string_value: "true" } }\n'
#: the callee's stream ended without data: an empty final response, as Triton's iterator gives it
EMPTY = {"outputs": {}, "error": None}
CANCELLED = [7, "the BLS request was cancelled by the model (ResponseIterator.cancel())"]
DECOUPLED_REFUSED = (
    "Model square_int32 - Error when running inference: Model square_int32 is using the decoupled. The current "
    "BLS request call doesn't support models using the decoupled transaction policy. Please use 'decoupled=True' "
    "argument to the 'exec' or 'async_exec' calls for decoupled models.'"
)


#: a model that forges streamed-call messages on its stub's channel (model code runs in the stub: it can)
HOSTILE = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils
from seawall.backends.python import ipc
from seawall.backends.python.messages import CallCancel, ReadyAnswer, RequestHeader, StreamCall


class TritonPythonModel:
    def execute(self, requests):
        how = json.loads(requests[0].parameters()).get("forge", "")
        channel = pb_utils._calls[0]._channel
        if how == "reuse":  # two open StreamCalls with one call id
            for _ in range(2):
                payload = np.array([1], dtype=np.int32).tobytes()
                channel.send_fd(b"c999", ipc.sealed_region([0], [payload], 64))
                header = RequestHeader("", [["IN", "INT32", [1], 0, 4]], [], 0, 0, {"mode": "keep"})
                channel.send(StreamCall(999, "decoupled_modes", "", header, 64, 0))
            channel.wait_streamed(999)
        elif how == "strays":  # a cancel of no call, an answer to no readiness check: ignored
            channel.send(CallCancel(12345))
            channel.send(ReadyAnswer(77, True, ""))
        text = np.array([b"{}"], dtype=object)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("REPORT", text)]) for _ in requests]
"""


@pytest.fixture(scope="module", params=["stub", "in_process"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("bls_decoupled")
    for source in (EXAMPLES / "add_sub", *(TEST_MODELS / m for m in ("bls_stream", "square_int32", "decoupled_modes"))):
        shutil.copytree(source, root / source.name)
    if request.param == "in_process":
        config = root / "bls_stream" / "config.pbtxt"
        config.write_text(config.read_text() + IN_PROCESS)
    hostile = root / "bls_stream_hostile"
    (hostile / "1").mkdir(parents=True)
    (hostile / "1" / "model.py").write_text(HOSTILE)
    config_text = (root / "bls_stream" / "config.pbtxt").read_text().replace(IN_PROCESS, "")
    (hostile / "config.pbtxt").write_text(config_text.replace('"bls_stream"', '"bls_stream_hostile"'))
    process = start_seawall(repository=root)
    yield process
    process.stop()


def report(
    server: ServerProcess, parameters: dict[str, object], count: int | None = 3, protocol: str = "http"
) -> dict[str, list[dict[str, object]]]:
    """What bls_stream's iterator gave for a request with IN = `count` (None: INPUT0/INPUT1 for add_sub)."""
    module = httpclient if protocol == "http" else grpcclient
    if count is None:
        inputs = [module.InferInput("INPUT0", [4], "FP32"), module.InferInput("INPUT1", [4], "FP32")]
        inputs[0].set_data_from_numpy(np.arange(4, dtype=np.float32))
        inputs[1].set_data_from_numpy(np.ones(4, dtype=np.float32))
    else:
        inputs = [module.InferInput("IN", [1], "INT32")]
        inputs[0].set_data_from_numpy(np.array([count], dtype=np.int32))
    if protocol == "http":
        with httpclient.InferenceServerClient(server.http, network_timeout=120) as client:
            result = client.infer("bls_stream", inputs, parameters=parameters)
    else:
        with grpcclient.InferenceServerClient(server.grpc) as client:
            result = client.infer("bls_stream", inputs, parameters=parameters, client_timeout=120)
    text = result.as_numpy("REPORT")
    assert text is not None
    found: dict[str, list[dict[str, object]]] = json.loads(text[0])
    assert server.is_ready()
    return found


def outs(*values: int) -> list[dict[str, object]]:
    return [{"outputs": {"OUT": [value]}, "error": None} for value in values]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("mode", ["sync", "async_await", "async_for"])
def test_the_responses_of_a_decoupled_model_then_an_empty_final_one(
    server: ServerProcess, mode: str, protocol: str
) -> None:
    assert report(server, {"mode": mode}, 3, protocol)["responses"] == [*outs(0, 1, 2), EMPTY]
    assert report(server, {"mode": mode}, 0, protocol)["responses"] == [EMPTY]


def test_a_final_response_with_data_ends_the_iterator(server: ServerProcess) -> None:
    parameters = {"target": "decoupled_modes", "inner_mode": "inline"}
    assert report(server, parameters, 2)["responses"] == outs(0, 1)


def test_big_responses_come_through_shared_memory(server: ServerProcess) -> None:
    """Two responses of 16 MiB each (decoupled_modes: OUT holds `size` copies of the response's index)."""
    size = 4 * 1024 * 1024
    parameters = {"target": "decoupled_modes", "inner_mode": "inline", "inner_size": size, "summary": True}
    found = report(server, parameters, 2)["responses"]
    assert found == [{"outputs": {"OUT": [size, i, i]}, "error": None} for i in (0, 1)]


def test_a_finished_iterator_iterates_again_from_its_first_response(server: ServerProcess) -> None:
    found = report(server, {"mode": "twice"}, 2)
    assert found["responses"] == found["again"] == [*outs(0, 1), EMPTY]


def test_decoupled_true_on_a_model_that_is_not_decoupled_gives_its_one_response(server: ServerProcess) -> None:
    for mode in ("sync", "async_for"):
        found = report(server, {"target": "add_sub", "mode": mode}, None)["responses"]
        assert found == [
            {"outputs": {"OUTPUT0": [1.0, 2.0, 3.0, 4.0], "OUTPUT1": [-1.0, 0.0, 1.0, 2.0]}, "error": None}
        ]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_exec_without_decoupled_on_a_decoupled_model_is_tritons_error(server: ServerProcess, protocol: str) -> None:
    found = report(server, {"mode": "unary"}, 3, protocol)["responses"]
    assert found == [{"outputs": {}, "error": [1, DECOUPLED_REFUSED]}]


def test_errors_before_the_stream_are_one_final_error_response(server: ServerProcess) -> None:
    missing = report(server, {"target": "missing"})["responses"]
    assert missing == [
        {
            "outputs": {},
            "error": [
                1,
                "Model missing - Error when running inference: Failed for execute the inference request. "
                "Model 'missing' is not ready.",
            ],
        }
    ]
    wrong = report(server, {"target": "add_sub"})["responses"]  # IN is not an input of add_sub
    assert wrong == [
        {
            "outputs": {},
            "error": [
                1,
                "Model add_sub - Error when running inference: [request id: <id_unknown>] expected 2 inputs but "
                "got 1 inputs for model 'add_sub'. Got input(s) ['IN'], but missing required input(s) "
                "['INPUT0','INPUT1']. Please provide all required input(s).",
            ],
        }
    ]


def test_the_callees_errors_are_error_responses(server: ServerProcess) -> None:
    error = report(server, {"target": "decoupled_modes", "inner_mode": "error"}, 1)["responses"]
    assert error == [{"outputs": {}, "error": [3, "a bad request, says the model"]}]
    negative = report(server, {}, -1)["responses"]
    assert negative == [{"outputs": {}, "error": [3, "IN must not be negative, got -1"]}]
    raised = report(server, {"target": "decoupled_modes", "inner_mode": "raise"}, 1)["responses"]
    assert len(raised) == 1 and raised[0]["outputs"] == {}
    code, message = raised[0]["error"]  # type: ignore[misc]
    assert code == 1 and "ValueError: the model raised on purpose" in message


def test_cancel_ends_the_iterator_with_a_cancelled_error(server: ServerProcess) -> None:
    parameters = {"target": "decoupled_modes", "inner_mode": "wait_cancel", "mode": "cancel"}
    started = time.monotonic()
    assert report(server, parameters, 1)["responses"] == [{"outputs": {}, "error": CANCELLED}]
    assert time.monotonic() - started < 25  # not the callee's 30 s wait
    assert report(server, {}, 2)["responses"] == [*outs(0, 1), EMPTY]  # the server serves on


def test_cancel_cancels_a_running_call_in_the_callee(server: ServerProcess) -> None:
    """The callee ("keep") sent one response and would never send its final flag: cancel() ends the call."""
    parameters = {"target": "decoupled_modes", "inner_mode": "keep", "mode": "cancel_after_first"}
    assert report(server, parameters, 1)["responses"] == [*outs(0), {"outputs": {}, "error": CANCELLED}]
    parameters = {"target": "decoupled_modes", "inner_mode": "one_then_wait_cancel", "mode": "cancel_after_first"}
    assert report(server, parameters, 1)["responses"] == [*outs(0), {"outputs": {}, "error": CANCELLED}]
    deadline = time.monotonic() + 30
    while "wait_cancel: sender.is_cancelled()=True" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    assert report(server, {}, 2)["responses"] == [*outs(0, 1), EMPTY]


def test_a_dropped_iterator_leaves_the_server_and_the_caller_healthy(server: ServerProcess) -> None:
    for _ in range(3):
        assert report(server, {"mode": "drop"}, 50)["responses"] == outs(0)
        assert report(server, {}, 2)["responses"] == [*outs(0, 1), EMPTY]


def test_a_python_backend_example_calls_a_decoupled_model(server: ServerProcess) -> None:
    """The sum of square_int32's responses, as NVIDIA's bls_decoupled example computes it."""
    found = report(server, {"mode": "async_await"}, 5)["responses"]
    total = sum(entry["outputs"]["OUT"][0] for entry in found if entry["outputs"])  # type: ignore[index]
    assert total == 0 + 1 + 2 + 3 + 4


def _hostile(server: ServerProcess, forge: str) -> None:
    tensor = httpclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([1], dtype=np.int32))
    with httpclient.InferenceServerClient(server.http, network_timeout=120) as client:
        client.infer("bls_stream_hostile", [tensor], parameters={"forge": forge})


def test_a_stub_reusing_an_open_stream_call_id_is_stopped_and_started_again(server: ServerProcess) -> None:
    with pytest.raises(InferenceServerException) as caught:
        _hostile(server, "reuse")
    assert caught.value.message() == "model instance 'bls_stream_hostile_0_0' crashed"
    server.wait_for_log("stopping its stub process: bad call: a call id in use")
    deadline = time.monotonic() + 60
    while True:  # the instance is started again (bounded wait on a loaded machine)
        try:
            _hostile(server, "")
            break
        except InferenceServerException:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert server.is_ready()
    assert report(server, {}, 2)["responses"] == [*outs(0, 1), EMPTY]


def test_stray_cancel_and_readiness_answers_are_ignored(server: ServerProcess) -> None:
    _hostile(server, "strays")
    _hostile(server, "")
    assert server.is_ready()
    assert report(server, {}, 1)["responses"] == [*outs(0), EMPTY]
