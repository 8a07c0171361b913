"""Load on request and least-recently-used eviction (explicit mode, `--load-on-request`, `--max-loaded-models`),
end to end with tritonclient and raw HTTP: concurrent first requests share one load, the least recently used
idle model goes first, a busy or just-used model never goes (507 instead), failures answer clearly and change
nothing, and every load and eviction is audited and counted."""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import seawall
from seawall.errors import InvalidArgumentError
from seawall.options import RepositoryOptions
from tests.harness import (
    EXAMPLES,
    TEST_MODELS,
    ServerProcess,
    http_call,
    http_request,
    run_seawall,
    start_seawall,
)

MODELS = ("m1", "m2", "m3")


def _copy(source: Path, target: Path) -> None:
    shutil.copytree(source, target)
    config = target / "config.pbtxt"
    config.write_text(re.sub(r'^name: "[^"]*"', f'name: "{target.name}"', config.read_text(), flags=re.M))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("residency")
    for name in MODELS:
        _copy(EXAMPLES / "add_sub", root / name)
    _copy(TEST_MODELS / "init_fail", root / "broken")
    _copy(TEST_MODELS / "slow", root / "slow")
    _copy(TEST_MODELS / "hold", root / "hold1")
    _copy(TEST_MODELS / "hold", root / "hold2")
    for name, value in (("pinned", "true"), ("badpin", "yes")):
        _copy(EXAMPLES / "add_sub", root / name)
        with (root / name / "config.pbtxt").open("a") as config:
            config.write(f'parameters {{ key: "SEAWALL_PINNED" value: {{ string_value: "{value}" }} }}\n')
    return root


@pytest.fixture
def server(repository: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    process = start_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",
        "--load-on-request=true",
        "--max-loaded-models=2",
        f"--audit-log-file={tmp_path / 'audit.log'}",
        repository=repository,
    )
    process.audit = tmp_path / "audit.log"  # type: ignore[attr-defined]
    yield process
    process.stop()


def _add_sub(server: ServerProcess, model: str) -> tuple[int, str]:
    body = {
        "inputs": [
            {"name": "INPUT0", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
            {"name": "INPUT1", "shape": [4], "datatype": "FP32", "data": [1, 1, 1, 1]},
        ]
    }
    status, _, reply = http_request(server, "POST", f"/v2/models/{model}/infer", json.dumps(body).encode(), timeout=60)
    return status, reply.decode()


def _ready(server: ServerProcess) -> set[str]:
    _, _, reply = http_request(server, "POST", "/v2/repository/index", b'{"ready": true}', timeout=30)
    return {entry["name"] for entry in json.loads(reply)}


def _counter(server: ServerProcess, name: str) -> int:
    _, _, text = http_call(server.metrics, "GET", "/metrics", timeout=10)
    match = re.search(rf"^{name} (\d+)", text.decode(), re.M)
    assert match, text.decode()[-2000:]
    return int(match.group(1))


def test_a_request_loads_the_model_it_names(server: ServerProcess) -> None:
    assert _ready(server) == set()
    status, reply = _add_sub(server, "m1")
    assert status == 200 and json.loads(reply)["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]
    assert _ready(server) == {"m1"}
    assert _counter(server, "seawall_model_loads_on_request") == 1
    audit = server.audit.read_text()  # type: ignore[attr-defined]
    assert 'caller="seawall (load on request)" action="load" target="m1" result=OK' in audit


def test_concurrent_first_requests_wait_for_one_load(server: ServerProcess) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _add_sub(server, "m2"), range(8)))
    assert [status for status, _ in results] == [200] * 8
    assert _counter(server, "seawall_model_loads_on_request") == 1
    assert server.log().count("successfully loaded 'm2'") == 1


def test_the_least_recently_used_idle_model_is_evicted(server: ServerProcess) -> None:
    assert _add_sub(server, "m1")[0] == 200
    assert _add_sub(server, "m2")[0] == 200
    assert _add_sub(server, "m1")[0] == 200  # m1 is now the most recently used
    assert _add_sub(server, "m3")[0] == 200  # two are loaded: m2, the least recently used, goes
    assert _ready(server) == {"m1", "m3"}
    assert _counter(server, "seawall_model_evictions") == 1
    server.wait_for_log("unloading model 'm2' (least recently used) to make room for 'm3'")
    audit = server.audit.read_text()  # type: ignore[attr-defined]
    assert 'caller="seawall (load on request)" action="evict" target="m2" result=OK' in audit
    assert _add_sub(server, "m2")[0] == 200  # and comes back on its next request, in place of m1
    assert _ready(server) == {"m2", "m3"}


def test_models_in_steady_use_are_evicted_between_their_requests(server: ServerProcess) -> None:
    """m1 and m2 are asked every few milliseconds (a popular pair under load): a request for m3 still finds one of
    them idle between its requests and evicts it; every request is answered, none fails halfway."""
    assert _add_sub(server, "m1")[0] == 200 and _add_sub(server, "m2")[0] == 200
    stop = threading.Event()

    def hammer(model: str) -> list[int]:
        statuses = []
        while not stop.is_set():
            statuses.append(_add_sub(server, model)[0])
            stop.wait(0.005)
        return statuses

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = [pool.submit(hammer, m) for m in ("m1", "m2")]
        try:
            status, reply = _add_sub(server, "m3")
        finally:
            stop.set()
        statuses = [status for future in running for status in future.result()]
    assert status == 200, reply
    assert json.loads(reply)["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]
    assert set(statuses) <= {200, 507}, statuses
    assert statuses.count(200) >= 2
    assert _counter(server, "seawall_model_evictions") >= 1
    assert server.is_ready()


def test_a_busy_model_is_never_evicted(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.http, network_timeout=60, concurrency=2)
    value = httpclient.InferInput("IN", [1], "INT32")
    value.set_data_from_numpy(np.array([7], dtype=np.int32))
    for model in ("hold1", "hold2"):  # loads both: two are loaded, the limit
        assert client.infer(model, [value]).as_numpy("OUT").tolist() == [7]
    busy = [
        client.async_infer(m, [value], request_id=f"busy-{m}", parameters={"hold_ms": 3000}) for m in ("hold1", "hold2")
    ]
    for model in ("hold1", "hold2"):
        server.wait_for_log(f"hold {model}: started busy-{model}")
    status, reply = _add_sub(server, "m1")
    assert status == 507, reply
    assert json.loads(reply)["error"] == (
        "cannot load model 'm1': 2 model(s) are loaded (--max-loaded-models) and none of them can be unloaded now "
        "(in flight, pinned by --load-model or SEAWALL_PINNED, or used by an ensemble)"
    )
    assert [b.get_result().as_numpy("OUT").tolist() for b in busy] == [[7], [7]]  # both answered
    assert _ready(server) == {"hold1", "hold2"}  # nothing changed
    assert _add_sub(server, "m1")[0] == 200  # once idle, hold1 (the least recently used) makes room
    assert _ready(server) == {"hold2", "m1"}


def test_pinned_models_are_never_evicted(repository: Path) -> None:
    """--load-model pins a model, and so does the config parameter SEAWALL_PINNED; an unload by name still works."""
    server = start_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",
        "--load-on-request=true",
        "--max-loaded-models=2",
        "--load-model=m1",
        repository=repository,
    )
    try:
        assert _ready(server) == {"m1"}
        assert _add_sub(server, "pinned")[0] == 200
        status, reply = _add_sub(server, "m2")
        assert status == 507, reply
        assert json.loads(reply)["error"] == (
            "cannot load model 'm2': 2 model(s) are loaded (--max-loaded-models) and none of them can be unloaded "
            "now (in flight, pinned by --load-model or SEAWALL_PINNED, or used by an ensemble)"
        )
        assert _ready(server) == {"m1", "pinned"}
        httpclient.InferenceServerClient(server.http).unload_model("pinned")
        assert _add_sub(server, "m2")[0] == 200
        assert _ready(server) == {"m1", "m2"}
        assert server.is_ready()
    finally:
        server.stop()


def test_a_pin_parameter_that_is_not_a_boolean_fails_that_models_load(server: ServerProcess) -> None:
    status, reply = _add_sub(server, "badpin")
    assert status == 503
    assert json.loads(reply)["error"] == (
        "model 'badpin' failed to load on request: load failed for model 'badpin': "
        "parameter 'SEAWALL_PINNED' of model 'badpin' must be \"true\" or \"false\";\n"
    )
    assert _ready(server) == set()
    assert _add_sub(server, "m1")[0] == 200


def test_a_model_that_fails_to_load_answers_503_and_changes_nothing(server: ServerProcess) -> None:
    assert _add_sub(server, "m1")[0] == 200
    status, reply = _add_sub(server, "broken")
    assert status == 503
    assert json.loads(reply)["error"].startswith("model 'broken' failed to load on request: load failed for model")
    assert _ready(server) == {"m1"}
    assert _add_sub(server, "m1")[0] == 200
    audit = server.audit.read_text()  # type: ignore[attr-defined]
    assert 'action="load" target="broken" result=INVALID_ARG' in audit


def test_a_model_that_is_not_in_the_repository_is_not_found(server: ServerProcess) -> None:
    status, reply = _add_sub(server, "nowhere")
    assert (status, json.loads(reply)) == (404, {"error": "Request for unknown model: 'nowhere' is not found"})
    status, reply = _add_sub(server, "..%2Fm1")
    assert status == 400
    assert _counter(server, "seawall_model_loads_on_request") == 0
    assert _ready(server) == set()


def test_a_request_while_its_model_is_evicted_is_answered_or_refused_cleanly(server: ServerProcess) -> None:
    """m1 is being evicted to make room for m3 while a request for m1 comes in: it is answered, or refused
    with the capacity error (m3 was just used), never a 500 or a hang; the server serves on."""
    assert _add_sub(server, "m1")[0] == 200
    assert _add_sub(server, "m2")[0] == 200
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        third = pool.submit(_add_sub, server, "m3")
        again = pool.submit(_add_sub, server, "m1")
        assert third.result()[0] == 200
        status, reply = again.result()
    assert status in (200, 507), reply
    assert _add_sub(server, "m3")[0] == 200


def test_the_load_api_makes_room_too(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.http)
    client.load_model("m1")
    client.load_model("m2")
    client.load_model("m3")
    assert _ready(server) == {"m2", "m3"}  # m1, loaded first and never used since, went


def test_load_on_request_needs_explicit_mode_and_is_a_security_finding(repository: Path) -> None:
    done = run_seawall(f"--model-repository={repository}", "--load-on-request=true")
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: '--load-on-request' requires '--model-control-mode=explicit'."
    done = run_seawall("--max-loaded-models=3")
    assert done.stderr.strip() == "Error: '--max-loaded-models' requires '--model-control-mode=explicit'."
    report = run_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",
        "--load-on-request=true",
        "--security-report",
    )
    assert "--load-on-request: any client that may send an inference request can make the server load" in (
        report.stdout
    )


def test_without_the_flags_an_unloaded_model_is_not_loaded(repository: Path) -> None:
    process = start_seawall(
        "--model-control-mode=explicit", "--allow-unrestricted-model-repository=true", repository=repository
    )
    try:
        status, _ = _add_sub(process, "m1")
        assert status == 404
        _, _, text = http_call(process.metrics, "GET", "/metrics", timeout=10)
        assert b"seawall_model_loads_on_request" not in text
    finally:
        process.stop()


def test_inference_errors_of_a_loaded_model_are_its_own(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.http)
    bad = httpclient.InferInput("INPUT0", [3], "FP32")
    bad.set_data_from_numpy(np.ones(3, dtype=np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("m1", [bad])  # loads m1, then refuses the request for its own reason
    assert "expected 2 inputs but got 1" in str(caught.value) or "INPUT1" in str(caught.value)
    assert _ready(server) == {"m1"}


@pytest.mark.parametrize("setting", [{"load_on_request": True}, {"max_loaded_models": 2}])
async def test_embedding_refuses_the_residency_settings_outside_explicit_mode(
    tmp_path: Path, setting: dict[str, object]
) -> None:
    """An application's Options get the CLI's check: the settings are refused by name, not silently ignored."""
    _copy(EXAMPLES / "add_sub", tmp_path / "m1")
    flag = "--load-on-request" if "load_on_request" in setting else "--max-loaded-models"
    refused = seawall.Options(repository=RepositoryOptions(paths=(str(tmp_path),), **setting))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=f"'{flag}' requires '--model-control-mode=explicit'"):
        async with seawall.open_server(refused):
            pass
    explicit = RepositoryOptions(paths=(str(tmp_path),), control_mode="explicit", **setting)  # type: ignore[arg-type]
    async with seawall.open_server(seawall.Options(repository=explicit)) as server:  # the same settings, explicit
        assert server.is_live()
