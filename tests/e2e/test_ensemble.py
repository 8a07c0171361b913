"""Ensembles end to end with tritonclient HTTP and gRPC: a pre → model → post chain of Python models, a diamond
whose parallel branches run at once, requested outputs, a composing model's error with Triton's message,
statistics of the ensemble and of each step, every bad configuration refused at load with Triton's reason (and
the server still healthy), and Triton's dependency rules: loading an ensemble loads its composing models,
unloading one of them unloads the ensemble, `unload_dependents` takes along what was loaded only for it."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.ensembles import BAD, load_error, make_repository
from tests.harness import ServerProcess, http_request, start_seawall

EXPLICIT = ("--model-control-mode=explicit", "--allow-unrestricted-model-repository=true")
DATA = np.array([[1, 2, 3, 4], [0, -1, 0.5, 2]], dtype=np.float32)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("ensembles") / "models")


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerProcess]:
    """Explicit mode with the three good ensembles loaded at start-up (which loads their composing models)."""
    process = start_seawall(
        *EXPLICIT,
        *(f"--load-model={m}" for m in ("ens_chain", "ens_diamond", "ens_error", "ens_nested", "ens_optional")),
        repository=repository,
    )
    yield process
    process.stop()


def _healthy(server: ServerProcess) -> None:
    assert http_request(server, "GET", "/v2/health/live")[0] == 200
    assert http_request(server, "GET", "/v2/models/ens_chain/ready")[0] == 200
    assert server.process.poll() is None


def _index(server: ServerProcess) -> dict[str, tuple[str, str]]:
    status, _, body = http_request(server, "POST", "/v2/repository/index", b"{}")
    assert status == 200
    return {e["name"]: (e.get("state", ""), e.get("reason", "")) for e in json.loads(body)}


def _expected_chain(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    mid = data * 2 + 1
    return mid - 3, mid, [f"sum={row.sum():g}".encode() for row in mid]


def test_chain_over_http(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.http)
    inputs = [httpclient.InferInput("INPUT", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(DATA, binary_data=True)
    result = client.infer("ens_chain", inputs)
    output, mid, labels = _expected_chain(DATA)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), output)
    np.testing.assert_array_equal(result.as_numpy("MID"), mid)
    assert result.as_numpy("LABEL").reshape(-1).tolist() == labels
    assert result.get_response()["model_name"] == "ens_chain"
    assert result.get_response()["model_version"] == "1"


def test_chain_over_grpc(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    inputs = [grpcclient.InferInput("INPUT", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(DATA)
    result = client.infer("ens_chain", inputs, request_id="r-1")
    output, mid, labels = _expected_chain(DATA)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), output)
    np.testing.assert_array_equal(result.as_numpy("MID"), mid)
    assert result.as_numpy("LABEL").reshape(-1).tolist() == labels
    assert result.get_response().id == "r-1"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_only_the_requested_outputs_are_returned(server: ServerProcess, protocol: str) -> None:
    # Triton 2.51 answers this request with "unexpected deadlock" (see docs/differences.md)
    client = httpclient if protocol == "http" else grpcclient
    connection = (httpclient.InferenceServerClient if protocol == "http" else grpcclient.InferenceServerClient)(
        server.http if protocol == "http" else server.grpc
    )
    inputs = [client.InferInput("INPUT", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(DATA)
    result = connection.infer("ens_chain", inputs, outputs=[client.InferRequestedOutput("LABEL")])
    assert result.as_numpy("LABEL").reshape(-1).tolist() == _expected_chain(DATA)[2]
    assert result.as_numpy("OUTPUT") is None and result.as_numpy("MID") is None


def test_an_ensemble_can_be_a_step(server: ServerProcess) -> None:
    # Triton 2.51 answers this one with "unexpected deadlock" (see docs/differences.md)
    client = httpclient.InferenceServerClient(server.http)
    inputs = [httpclient.InferInput("INPUT", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(DATA)
    result = client.infer("ens_nested", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), _expected_chain(DATA)[0])


def test_an_optional_ensemble_input_may_be_left_out(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    inputs = [grpcclient.InferInput("INPUT", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(DATA)
    np.testing.assert_array_equal(client.infer("ens_optional", inputs).as_numpy("SUM"), DATA + 100)
    inputs.append(grpcclient.InferInput("EXTRA", [2, 4], "FP32"))
    inputs[1].set_data_from_numpy(DATA)
    np.testing.assert_array_equal(client.infer("ens_optional", inputs).as_numpy("SUM"), DATA * 2)


def test_the_branches_of_a_diamond_run_concurrently(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.http, network_timeout=60)
    inputs = [httpclient.InferInput("INPUT", [1, 4], "FP32")]
    inputs[0].set_data_from_numpy(DATA[:1])
    result = client.infer("ens_diamond", inputs)
    pre = DATA[:1] * 2
    np.testing.assert_array_equal(result.as_numpy("SUM"), (pre + 10) + (pre * 10))
    (start_a, end_a), (start_b, end_b) = result.as_numpy("TIMES_A")[0], result.as_numpy("TIMES_B")[0]
    # each branch sleeps 600 ms: one ran while the other did (run one after the other, they could not overlap)
    assert max(start_a, start_b) < min(end_a, end_b)


def test_a_step_error_keeps_its_code_and_names_the_ensemble(server: ServerProcess) -> None:
    body = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [-1, -2, -3, -4]}]})
    status, _, reply = http_request(server, "POST", "/v2/models/ens_chain/infer", body.encode())
    assert (status, json.loads(reply)) == (400, {"error": "in ensemble 'ens_chain', negative input to ens_model"})
    client = grpcclient.InferenceServerClient(server.grpc)
    inputs = [grpcclient.InferInput("INPUT", [1, 4], "FP32")]
    inputs[0].set_data_from_numpy(-DATA[:1] - 1)
    with pytest.raises(InferenceServerException) as info:
        client.infer("ens_chain", inputs)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert info.value.message() == "in ensemble 'ens_chain', negative input to ens_model"
    _healthy(server)


def test_a_raising_step_fails_the_request_with_its_message(server: ServerProcess) -> None:
    body = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]})
    status, _, reply = http_request(server, "POST", "/v2/models/ens_error/infer", body.encode())
    assert (status, json.loads(reply)) == (
        500,
        {
            "error": "in ensemble 'ens_error', Failed to process the request(s) for model 'error_raise_0_0', "
            "message: ValueError: boom in execute"
        },
    )
    _healthy(server)


def test_ensemble_inputs_are_validated_against_the_ensemble_config(server: ServerProcess) -> None:
    body = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]})
    status, _, reply = http_request(server, "POST", "/v2/models/ens_chain/infer", body.encode())
    assert status == 400
    assert json.loads(reply)["error"].startswith(
        "[request id: <id_unknown>] unexpected shape for input 'INPUT' for model 'ens_chain'. "
        "Expected [-1,4], got [1,3]."
    )
    _healthy(server)


def _stats(client: httpclient.InferenceServerClient, model: str) -> dict[str, int]:
    stats = client.get_inference_statistics(model)["model_stats"][0]
    return {
        "inference_count": stats["inference_count"],
        "execution_count": stats["execution_count"],
        "success": stats["inference_stats"]["success"]["count"],
    }


def test_statistics_of_the_ensemble_and_of_each_step(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.http)
    models = ("ens_chain", "ens_pre", "ens_model", "ens_post")
    before = {m: _stats(client, m) for m in models}
    inputs = [httpclient.InferInput("INPUT", [1, 4], "FP32")]
    inputs[0].set_data_from_numpy(DATA[:1])
    for _ in range(3):
        client.infer("ens_chain", inputs)
    for model in models:
        after = _stats(client, model)
        assert {k: after[k] - before[model][k] for k in after} == {
            "inference_count": 3,
            "execution_count": 3,
            "success": 3,
        }, model
    chain = client.get_inference_statistics("ens_chain")["model_stats"][0]
    assert chain["inference_stats"]["compute_infer"]["ns"] > 0
    assert 1 in [b["batch_size"] for b in chain["batch_stats"]]


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_ensemble_fails_to_load_with_tritons_reason(server: ServerProcess, name: str) -> None:
    status, _, reply = http_request(server, "POST", f"/v2/repository/models/{name}/load", b"{}")
    error = json.loads(reply)["error"]
    assert status == 400
    if name == "bad_failing":
        assert error.startswith(load_error(name)) and error.endswith(";\n")
    else:
        assert error == load_error(name)
    assert _index(server)[name][0] == "UNAVAILABLE"
    _healthy(server)


@pytest.mark.parametrize("name", ["bad_cycle", "bad_dtype", "bad_unknown"])
def test_a_bad_ensemble_fails_to_load_over_grpc(server: ServerProcess, name: str) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    with pytest.raises(InferenceServerException) as info:
        client.load_model(name)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert info.value.message() == load_error(name)
    _healthy(server)


@pytest.fixture
def explicit(repository: Path) -> Iterator[ServerProcess]:
    """Explicit mode with nothing loaded."""
    process = start_seawall(*EXPLICIT, repository=repository)
    yield process
    process.stop()


def test_loading_an_ensemble_loads_its_composing_models(explicit: ServerProcess) -> None:
    assert _index(explicit)["ens_pre"] == ("", "")
    httpclient.InferenceServerClient(explicit.http).load_model("ens_chain")
    index = _index(explicit)
    for model in ("ens_chain", "ens_pre", "ens_model", "ens_post"):
        assert index[model] == ("READY", ""), model
    assert index["ens_join"] == ("", "")  # not a composing model of ens_chain


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unloading_a_composing_model_unloads_the_ensemble(explicit: ServerProcess, protocol: str) -> None:
    client = (httpclient.InferenceServerClient if protocol == "http" else grpcclient.InferenceServerClient)(
        explicit.http if protocol == "http" else explicit.grpc
    )
    client.load_model("ens_chain")
    client.unload_model("ens_model")
    index = _index(explicit)
    assert index["ens_model"] == ("UNAVAILABLE", "unloaded")
    assert index["ens_chain"] == ("UNAVAILABLE", "unloaded")  # Triton unloads it too
    assert index["ens_pre"] == ("READY", "")
    status, _, reply = http_request(explicit, "POST", "/v2/models/ens_chain/infer", b'{"inputs": []}')
    assert status == 404  # no version left: Triton 2.51 answers NOT_FOUND "has no available versions"
    client.load_model("ens_chain")  # loads ens_model again
    assert _index(explicit)["ens_model"] == ("READY", "")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unload_dependents_unloads_the_models_loaded_only_for_the_ensemble(
    explicit: ServerProcess, protocol: str
) -> None:
    client = (httpclient.InferenceServerClient if protocol == "http" else grpcclient.InferenceServerClient)(
        explicit.http if protocol == "http" else explicit.grpc
    )
    client.load_model("ens_model")  # loaded on its own account: stays
    client.load_model("ens_chain")
    client.unload_model("ens_chain", unload_dependents=True)
    index = _index(explicit)
    assert index["ens_chain"] == ("UNAVAILABLE", "unloaded")
    assert index["ens_pre"] == ("UNAVAILABLE", "unloaded")
    assert index["ens_post"] == ("UNAVAILABLE", "unloaded")
    assert index["ens_model"] == ("READY", "")


def test_unload_without_dependents_keeps_the_composing_models(explicit: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(explicit.http)
    client.load_model("ens_chain")
    client.unload_model("ens_chain")
    index = _index(explicit)
    assert index["ens_chain"] == ("UNAVAILABLE", "unloaded")
    for model in ("ens_pre", "ens_model", "ens_post"):
        assert index[model] == ("READY", ""), model


def test_a_model_used_by_another_ensemble_stays(explicit: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(explicit.http)
    client.load_model("ens_chain")
    client.load_model("ens_diamond")  # shares ens_pre
    client.unload_model("ens_chain", unload_dependents=True)
    index = _index(explicit)
    assert index["ens_pre"] == ("READY", "")
    assert index["ens_model"] == ("UNAVAILABLE", "unloaded")
    assert index["ens_diamond"] == ("READY", "")


def test_ensembles_load_at_start_up_in_none_mode(tmp_path: Path) -> None:
    # the ensemble sorts before its composing models: it must still load after them
    models = ("ens_pre", "ens_model", "ens_post", "ens_chain")
    repository = make_repository(tmp_path / "models", models, bad=False)
    process = start_seawall(repository=repository)
    try:
        client = grpcclient.InferenceServerClient(process.grpc)
        assert client.is_server_ready()
        inputs = [grpcclient.InferInput("INPUT", [1, 4], "FP32")]
        inputs[0].set_data_from_numpy(DATA[:1])
        result = client.infer("ens_chain", inputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT"), _expected_chain(DATA[:1])[0])
    finally:
        process.stop()


def test_a_missing_composing_model_fails_start_up_with_exit_on_error(tmp_path: Path) -> None:
    repository = make_repository(tmp_path / "models", ("ens_pre", "ens_chain"), bad=False)
    with pytest.raises(RuntimeError) as info:
        start_seawall(repository=repository, timeout=60)
    assert "ensemble ens_chain contains models that are not available or ambiguous: ens_model, ens_post" in str(
        info.value
    )


def test_sigterm_lets_an_accepted_ensemble_request_run_every_step(tmp_path: Path) -> None:
    models = ("ens_pre", "ens_branch_a", "ens_branch_b", "ens_join", "ens_diamond")
    process = start_seawall(repository=make_repository(tmp_path / "models", models, bad=False))
    body = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
    try:
        with ThreadPoolExecutor(1) as pool:
            reply = pool.submit(http_request, process, "POST", "/v2/models/ens_diamond/infer", body.encode(), None, 60)
            time.sleep(0.3)  # the branches sleep 600 ms: the join step starts after the server began draining
            process.process.send_signal(signal.SIGTERM)
            status, _, answer = reply.result(timeout=60)
        assert status == 200, answer
        assert json.loads(answer)["outputs"][0]["data"] == [32.0, 54.0, 76.0, 98.0]
        assert process.process.wait(30) == 0
    finally:
        process.stop()


def test_unloading_a_composing_model_lets_the_ensembles_requests_finish(explicit: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(explicit.http, network_timeout=60)
    client.load_model("ens_diamond")
    body = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
    with ThreadPoolExecutor(1) as pool:
        reply = pool.submit(http_request, explicit, "POST", "/v2/models/ens_diamond/infer", body.encode(), None, 60)
        time.sleep(0.3)  # the branches run: the join step has not started yet
        client.unload_model("ens_join")
        status, _, answer = reply.result(timeout=60)
    assert status == 200, answer  # the ensemble drained before its composing model went
    index = _index(explicit)
    assert index["ens_diamond"] == ("UNAVAILABLE", "unloaded") and index["ens_join"] == ("UNAVAILABLE", "unloaded")


def test_the_steps_of_an_ensemble_do_not_count_toward_max_inflight_requests(tmp_path: Path) -> None:
    # --max-inflight-requests caps the clients' requests: the ensemble's own steps (two of them at once in the
    # diamond) run under the request that was admitted, and are never refused by the cap
    models = ("ens_pre", "ens_branch_a", "ens_branch_b", "ens_join", "ens_diamond")
    repository = make_repository(tmp_path / "models", models, bad=False)
    process = start_seawall("--max-inflight-requests=1", repository=repository)
    body = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
    try:
        with ThreadPoolExecutor(1) as pool:
            reply = pool.submit(http_request, process, "POST", "/v2/models/ens_diamond/infer", body.encode(), None, 60)
            deadline = time.monotonic() + 60
            while _inferences(process, "ens_pre") < 1:  # then the branches sleep 600 ms, the request in flight
                assert time.monotonic() < deadline and not reply.done(), reply.result() if reply.done() else ""
                time.sleep(0.01)
            probe = body.replace('"INPUT"', '"INPUT0"').encode()
            status, _, refused = http_request(process, "POST", "/v2/models/ens_pre/infer", probe)
            assert (status, json.loads(refused)) == (
                429,
                {"error": "the server has 1 inference requests in flight (--max-inflight-requests); retry later"},
            )
            status, _, answer = reply.result(timeout=60)
        assert status == 200, answer
        assert json.loads(answer)["outputs"][0]["data"] == [32.0, 54.0, 76.0, 98.0]
        status, _, answer = http_request(process, "POST", "/v2/models/ens_diamond/infer", body.encode(), None, 60)
        assert status == 200, answer
        assert http_request(process, "GET", "/v2/health/ready")[0] == 200
    finally:
        process.stop()


def _inferences(server: ServerProcess, model: str) -> int:
    status, _, body = http_request(server, "GET", f"/v2/models/{model}/stats")
    assert status == 200
    return int(json.loads(body)["model_stats"][0]["inference_count"])
