"""Model warmup, `reshape` and instance groups, end to end on the probe repository (tests/probe_repository.py):
what the model saw, what clients see, each bad config's exact reason with the server healthy, and requests that
arrive together running on idle instances before any is pipelined into a busy one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests import probe_repository
from tests.harness import ServerProcess, http_request, start_seawall


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = probe_repository.build(tmp_path_factory.mktemp("probe"))
    process = start_seawall("--exit-on-error=false", "--strict-readiness=false", repository=repository, timeout=240)
    try:
        yield process
    finally:
        process.stop()


def _call(server: ServerProcess, method: str, path: str, document: Any = None) -> tuple[int, Any]:
    body = None if document is None else json.dumps(document).encode()
    status, _, reply = http_request(server, method, path, body, timeout=60)
    return status, json.loads(reply) if reply else None


def _fp32(name: str, shape: list[int], data: list[float]) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": "FP32", "data": data}


def infer(server: ServerProcess, model: str, *inputs: dict[str, Any], **parameters: Any) -> dict[str, Any]:
    """The response of one request; its INFO decoded under "info", its tensors by name under "tensors"."""
    document: dict[str, Any] = {"inputs": list(inputs)}
    if parameters:
        document["parameters"] = parameters
    status, reply = _call(server, "POST", f"/v2/models/{model}/infer", document)
    assert status == 200, reply
    tensors = {t["name"]: t for t in reply["outputs"]}
    return {"info": json.loads(tensors["INFO"]["data"][0]), "tensors": tensors}


def _healthy(server: ServerProcess) -> None:
    assert http_request(server, "GET", "/v2/health/live")[0] == 200
    assert http_request(server, "GET", "/v2/health/ready")[0] == 200  # --strict-readiness=false
    assert server.process.poll() is None


def _index(server: ServerProcess) -> dict[str, dict[str, Any]]:
    status, index = _call(server, "POST", "/v2/repository/index")
    assert status == 200
    return {entry["name"]: entry for entry in index}


BAD = sorted([*probe_repository.BAD, *probe_repository.SEAWALL_ONLY])


@pytest.mark.parametrize("model", BAD)
def test_a_bad_config_fails_its_load_with_the_reason(server: ServerProcess, model: str) -> None:
    expected = probe_repository.SEAWALL_REASONS.get(model) or probe_repository.BAD[model][1]
    entry = _index(server)[model]
    assert (entry["state"], entry["reason"]) == ("UNAVAILABLE", expected)
    assert http_request(server, "GET", f"/v2/models/{model}/ready")[0] == 400
    _healthy(server)


def test_every_good_model_is_ready(server: ServerProcess) -> None:
    index = _index(server)
    assert {name: index[name]["state"] for name in probe_repository.GOOD} == dict.fromkeys(
        probe_repository.GOOD, "READY"
    )


# ------------------------------------------------------------------------------------------------ warmup


def test_warmup_runs_zero_random_and_file_samples_before_the_first_request(server: ServerProcess) -> None:
    reply = infer(
        server,
        "warm_data",
        _fp32("INPUT0", [1, 3], [1, 1, 1]),
        {"name": "S", "shape": [1, 2], "datatype": "BYTES", "data": ["x", "y"]},
    )
    seen = reply["info"]["seen"]
    zero = {"INPUT0": [[1, 3], "float32", [0.0, 0.0, 0.0]], "S": [[1, 2], "object", ["", ""]]}
    # w1: batch_size 2, count 2 -> two executions of two batch-1 requests each
    assert seen[:4] == [zero] * 4
    # w2: random FP32 values; random BYTES elements are empty, as Triton sends them
    assert seen[4]["INPUT0"][:2] == [[1, 3], "float32"]
    assert seen[4]["S"] == [[1, 2], "object", ["", ""]]
    # w3: the files warmup/in0 (raw FP32) and warmup/sub/s (length-prefixed BYTES)
    assert seen[5] == {"INPUT0": [[1, 3], "float32", [1.5, 2.5, 3.5]], "S": [[1, 2], "object", ["hi", "abc"]]}
    assert seen[6] == {"INPUT0": [[1, 3], "float32", [1.0, 1.0, 1.0]], "S": [[1, 2], "object", ["x", "y"]]}
    assert len(seen) == 7


def test_warmup_counts_in_the_statistics_as_in_triton(server: ServerProcess) -> None:
    seen = infer(server, "warm_reshape", _fp32("INPUT0", [1, 4], [1, 2, 3, 4]))["info"]["seen"]
    status, stats = _call(server, "GET", "/v2/models/warm_reshape/stats")
    entry = stats["model_stats"][0]
    # the sample's two requests ran as one execution; each client request as one more
    assert (status, entry["inference_count"], entry["execution_count"]) == (200, len(seen), len(seen) - 1)


def test_a_sample_of_batch_size_zero_sends_nothing(server: ServerProcess) -> None:
    seen = infer(server, "warm_nobatch", _fp32("INPUT0", [3], [1, 2, 3]))["info"]["seen"]
    assert seen[0] == {"INPUT0": [[3], "float32", [1.0, 2.0, 3.0]]}


def test_warmup_inputs_are_reshaped_as_requests_are(server: ServerProcess) -> None:
    seen = infer(server, "warm_reshape", _fp32("INPUT0", [1, 4], [1, 2, 3, 4]))["info"]["seen"]
    assert seen[:2] == [{"INPUT0": [[1, 2, 2], "float32", [0.0, 0.0, 0.0, 0.0]]}] * 2
    assert seen[-1] == {"INPUT0": [[1, 2, 2], "float32", [1.0, 2.0, 3.0, 4.0]]}


def _stub_processes(server: ServerProcess) -> int:
    """Stubs: children of the server (spawned) or of its stub template (forked), not the template itself."""
    parents: dict[int, int] = {}
    commands: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            commands[int(entry.name)] = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
    templates = {
        pid for pid, parent in parents.items() if parent == server.process.pid and b"\0template\0" in commands[pid]
    }
    return sum(
        parents[pid] in {server.process.pid, *templates} and b"bootstrap.py" in command and pid not in templates
        for pid, command in commands.items()
    )


def test_a_failing_warmup_leaves_no_process_behind_and_the_others_serve(server: ServerProcess) -> None:
    server.wait_for_log("failed to load 'warm_fail' version 1: failed to run warmup sample 'w'")
    infer(server, "warm_nobatch", _fp32("INPUT0", [3], [1, 2, 3]))
    # one stub per instance of the models that loaded; those whose warmup failed stopped theirs
    instances = {name: 1 for name in probe_repository.GOOD} | {"groups": 4, "pair": 2}
    assert _stub_processes(server) == sum(instances.values())
    _healthy(server)


@pytest.fixture(scope="module")
def explicit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = probe_repository.build(tmp_path_factory.mktemp("probe_explicit"))
    process = start_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",
        "--load-model=warm_nobatch",
        repository=repository,
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("model", ["warm_escape", "warm_symlink", "warm_fail", "warm_huge", "rs_var", "gpu"])
def test_the_load_api_answers_the_reason(explicit: ServerProcess, model: str) -> None:
    reason = probe_repository.SEAWALL_REASONS.get(model) or probe_repository.BAD[model][1]
    status, reply = _call(explicit, "POST", f"/v2/repository/models/{model}/load", {})
    assert status == 400
    # config errors fail the model; warmup errors its version (the backend had loaded it)
    version = "" if model in ("rs_var", "gpu") else "version 1 is at UNAVAILABLE state: "
    assert reply["error"] == f"load failed for model '{model}': {version}{reason};\n"
    # a failed load makes the server not ready under --strict-readiness (Triton's default): the rest serves
    assert http_request(explicit, "GET", "/v2/health/live")[0] == 200
    assert http_request(explicit, "GET", "/v2/models/warm_nobatch/ready")[0] == 200
    assert http_request(explicit, "GET", f"/v2/models/{model}/ready")[0] == 400
    assert explicit.process.poll() is None


# ------------------------------------------------------------------------------------------------ reshape


def test_the_model_sees_the_reshaped_input_and_clients_the_wire_shape(server: ServerProcess) -> None:
    reply = infer(server, "reshape_in", _fp32("INPUT0", [2, 4], list(range(8))))
    assert reply["info"]["seen"][-1] == {"INPUT0": [[2, 2, 2], "float32", [0.0, 1.0, 2.0, 3.0]]}
    status, metadata = _call(server, "GET", "/v2/models/reshape_in")
    assert (status, metadata["inputs"]) == (200, [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}])


def test_a_request_in_the_reshaped_form_is_refused(server: ServerProcess) -> None:
    document = {"inputs": [_fp32("INPUT0", [1, 2, 2], [1, 2, 3, 4])]}
    status, reply = _call(server, "POST", "/v2/models/reshape_in/infer", document)
    assert status == 400
    assert reply["error"].startswith(
        "[request id: <id_unknown>] unexpected shape for input 'INPUT0' for model 'reshape_in'. "
        "Expected [-1,4], got [1,2,2]."
    )
    _healthy(server)


def test_a_dimension_of_one_reshaped_to_a_scalar(server: ServerProcess) -> None:
    reply = infer(server, "reshape_scalar", _fp32("INPUT0", [3, 1], [1, 2, 3]))
    assert reply["info"]["seen"][-1] == {"INPUT0": [[3], "float32", [1.0, 2.0, 3.0]]}


def test_variable_dimensions_carry_over_both_ways(server: ServerProcess) -> None:
    reply = infer(server, "reshape_var", _fp32("INPUT0", [3, 4], list(range(12))))
    assert reply["info"]["seen"][-1]["INPUT0"][0] == [3, 2, 2]
    output = reply["tensors"]["OUTPUT0"]
    assert (output["shape"], output["data"]) == ([3, 4], [float(i) for i in range(12)])


def test_an_output_is_returned_in_its_wire_shape(server: ServerProcess) -> None:
    reply = infer(server, "reshape_out", _fp32("INPUT0", [2, 4], list(range(8))))
    output = reply["tensors"]["OUTPUT0"]
    assert (output["shape"], output["data"]) == ([2, 4], [float(i) for i in range(8)])
    status, metadata = _call(server, "GET", "/v2/models/reshape_out")
    assert metadata["outputs"][1] == {"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 4]}


# ------------------------------------------------------------------------------------------ instance groups


def _together(server: ServerProcess, model: str, count: int, sleep_ms: int) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(count) as pool:
        futures = [
            pool.submit(infer, server, model, _fp32("INPUT0", [3], [1, 2, 3]), sleep_ms=sleep_ms) for _ in range(count)
        ]
        return [future.result()["info"] for future in futures]


def test_instance_names_and_kinds_follow_triton(server: ServerProcess) -> None:
    infos = _together(server, "groups", 4, 600)
    assert sorted((i["instance"], i["kind"]) for i in infos) == [
        ("groups_0_0", "CPU"),
        ("groups_0_1", "CPU"),
        ("groups_2_0", "CPU"),
        ("named_0", "MODEL"),
    ]
    status, config = _call(server, "GET", "/v2/models/groups/config")
    assert [(g["name"], g["kind"], g["count"]) for g in config["instance_group"]] == [
        ("groups_0", "KIND_CPU", 2),
        ("named", "KIND_MODEL", 1),
        ("groups_2", "KIND_CPU", 1),
    ]


def test_requests_arriving_together_run_on_idle_instances_first(server: ServerProcess) -> None:
    # two 600 ms requests on two instances: one each, at once (not pipelined into the first instance)
    infos = _together(server, "pair", 2, 600)
    assert sorted(i["instance"] for i in infos) == ["pair_0_0", "pair_0_1"]


def test_with_no_idle_instance_requests_go_to_the_least_busy(server: ServerProcess) -> None:
    infos = _together(server, "pair", 4, 600)
    instances = [i["instance"] for i in infos]
    assert sorted(instances) == ["pair_0_0", "pair_0_0", "pair_0_1", "pair_0_1"]
    _healthy(server)


def test_probe_repository_is_written_once(tmp_path: Path) -> None:
    repository = probe_repository.build(tmp_path, seawall_only=False)
    assert not (repository / "warm_huge").exists()
    assert (repository / "warm_symlink" / "warmup" / "link").resolve() == tmp_path / "outside"


def test_the_grpc_load_api_answers_the_same_reason(explicit: ServerProcess) -> None:
    channel = grpc.insecure_channel(explicit.grpc)
    try:
        stub: Any = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="warm_abs"), timeout=60)
    finally:
        channel.close()
    reason = probe_repository.SEAWALL_REASONS["warm_abs"]
    assert (info.value.code(), info.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"load failed for model 'warm_abs': version 1 is at UNAVAILABLE state: {reason};\n",
    )
    assert http_request(explicit, "GET", "/v2/models/warm_nobatch/ready")[0] == 200
