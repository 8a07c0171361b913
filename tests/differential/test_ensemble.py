"""Ensembles, Seawall against the real Triton 2.51 on the same repository: outputs, a composing model's error,
statistics of the ensemble and of its steps, every bad configuration's reason, and the dependency rules of
explicit mode (what loading an ensemble loads, what unloading a composing model or `unload_dependents` unloads).

Where Triton answers a load with "failed to poll from model repository" (500) and logs the reason, Seawall answers
400 with that reason; where Triton fails a request for a subset of an ensemble's outputs ("unexpected deadlock"),
Seawall answers it (docs/differences.md)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ensembles import BAD, load_error, make_repository
from tests.harness import TRITON, ServerProcess, http_request, settled, start_seawall, start_triton

EXPLICIT = ("--model-control-mode=explicit",)
SEAWALL_EXPLICIT = (*EXPLICIT, "--allow-unrestricted-model-repository=true")
LOADED = ("--load-model=ens_chain", "--load-model=ens_diamond", "--load-model=ens_error", "--load-model=ens_nested")
CHAIN_BODY = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [2, 4], "data": [1, 2, 3, 4, 0, -1, 0.5, 2]}]}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    return make_repository(tmp_path_factory.mktemp("ensembles") / "models")


@pytest.fixture(scope="module")
def servers(repository: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    triton = start_triton(repository, *EXPLICIT, *LOADED)
    try:
        seawall = start_seawall(*SEAWALL_EXPLICIT, *LOADED, repository=repository)
    except BaseException:
        triton.stop()
        raise
    yield triton, seawall
    seawall.stop()
    triton.stop()


def _call(server: ServerProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request; skips the test when the reference Triton died under it (Triton is known to crash when a model
    of an ensemble is loaded again and unloaded with it: model_analyzer#1018), fails it when Seawall did."""
    data = json.dumps(body).encode() if body is not None else None
    try:
        status, _, reply = http_request(server, method, path, data, timeout=120)
    except ConnectionError:
        try:
            code = server.process.wait(5)
        except subprocess.TimeoutExpired:
            raise  # still running: whoever it is, the broken connection is a failure
        if not server.is_triton:
            raise
        pytest.skip(f"the reference Triton exited ({code}) during {method} {path}:\n{server.describe()}")
    return status, json.loads(reply) if reply else None


def _outputs(reply: dict[str, Any]) -> dict[str, Any]:
    return {o["name"]: (o["datatype"], o["shape"], o["data"]) for o in reply["outputs"]}


def test_chain_outputs_match(servers: tuple[ServerProcess, ServerProcess]) -> None:
    triton, seawall = servers
    (t_status, t_reply), (s_status, s_reply) = (
        _call(s, "POST", "/v2/models/ens_chain/infer", CHAIN_BODY) for s in servers
    )
    assert t_status == s_status == 200
    assert _outputs(t_reply) == _outputs(s_reply)
    assert (t_reply["model_name"], t_reply["model_version"]) == (s_reply["model_name"], s_reply["model_version"])


def test_metadata_and_config_match(servers: tuple[ServerProcess, ServerProcess]) -> None:
    triton, seawall = servers
    assert _call(triton, "GET", "/v2/models/ens_chain") == _call(seawall, "GET", "/v2/models/ens_chain")
    t_config, s_config = (_call(s, "GET", "/v2/models/ens_chain/config")[1] for s in servers)
    for key in ("platform", "backend", "max_batch_size", "input", "output", "instance_group", "version_policy"):
        assert t_config[key] == s_config[key], key
    assert [
        {k: step[k] for k in ("model_name", "model_version", "input_map", "output_map")}
        for step in t_config["ensemble_scheduling"]["step"]
    ] == [
        {k: step[k] for k in ("model_name", "model_version", "input_map", "output_map")}
        for step in s_config["ensemble_scheduling"]["step"]
    ]


def test_a_step_error_matches(servers: tuple[ServerProcess, ServerProcess]) -> None:
    body = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [-1, -2, -3, -4]}]}
    triton, seawall = (_call(s, "POST", "/v2/models/ens_chain/infer", body) for s in servers)
    assert triton == seawall == (400, {"error": "in ensemble 'ens_chain', negative input to ens_model"})


def test_a_raising_step_matches(servers: tuple[ServerProcess, ServerProcess]) -> None:
    body = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}
    (t_status, t_reply), (s_status, s_reply) = (_call(s, "POST", "/v2/models/ens_error/infer", body) for s in servers)
    assert t_status == s_status == 500
    # Triton appends the model file's traceback (with its server path); Seawall does not
    assert t_reply["error"].startswith(s_reply["error"])
    assert s_reply["error"] == (
        "in ensemble 'ens_error', Failed to process the request(s) for model 'error_raise_0_0', "
        "message: ValueError: boom in execute"
    )


def test_a_subset_of_outputs(servers: tuple[ServerProcess, ServerProcess]) -> None:
    body = {**CHAIN_BODY, "outputs": [{"name": "LABEL"}]}
    triton, seawall = (_call(s, "POST", "/v2/models/ens_chain/infer", body) for s in servers)
    assert triton == (
        400,
        {
            "error": "in ensemble 'ens_chain', [request id: <id_unknown>] unexpected deadlock, at least one output "
            "is not set while no more ensemble steps can be made"
        },
    )
    assert seawall[0] == 200 and list(_outputs(seawall[1])) == ["LABEL"]  # the difference Seawall chose


def test_a_nested_ensemble(servers: tuple[ServerProcess, ServerProcess]) -> None:
    triton, seawall = (_call(s, "POST", "/v2/models/ens_nested/infer", CHAIN_BODY) for s in servers)
    assert triton == (
        400,
        {
            "error": "in ensemble 'ens_nested', in ensemble 'ens_chain', [request id: <id_unknown>] unexpected "
            "deadlock, at least one output is not set while no more ensemble steps can be made"
        },
    )
    assert seawall[0] == 200 and _outputs(seawall[1])["OUTPUT"][2] == [0.0, 2.0, 4.0, 6.0, -2.0, -4.0, -1.0, 2.0]


def _counts(server: ServerProcess, model: str) -> tuple[int, int, int]:
    status, reply = _call(server, "GET", f"/v2/models/{model}/stats")
    assert status == 200
    stats = reply["model_stats"][0]
    return stats["inference_count"], stats["execution_count"], stats["inference_stats"]["success"]["count"]


def test_statistics_move_alike(servers: tuple[ServerProcess, ServerProcess]) -> None:
    models = ("ens_chain", "ens_pre", "ens_model", "ens_post")
    deltas = []
    for server in servers:
        before = {m: _counts(server, m) for m in models}
        for _ in range(2):
            assert _call(server, "POST", "/v2/models/ens_chain/infer", CHAIN_BODY)[0] == 200
        after = settled(  # Triton records an ensemble's statistics after it answers
            lambda s=server: {m: _counts(s, m) for m in models},
            lambda a, b=before: a["ens_chain"][1] - b["ens_chain"][1] >= 2,
        )
        deltas.append({m: tuple(a - b for a, b in zip(after[m], before[m], strict=True)) for m in models})
    assert deltas[0] == deltas[1]
    assert deltas[1]["ens_chain"] == (4, 2, 2)  # two requests of batch 2: one execution each


def test_the_diamond_branches_overlap_on_both(servers: tuple[ServerProcess, ServerProcess]) -> None:
    body = {"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    for server in servers:
        status, reply = _call(server, "POST", "/v2/models/ens_diamond/infer", body)
        assert status == 200
        outputs = _outputs(reply)
        assert outputs["SUM"][2] == [32.0, 54.0, 76.0, 98.0]
        (start_a, end_a), (start_b, end_b) = outputs["TIMES_A"][2], outputs["TIMES_B"][2]
        assert max(start_a, start_b) < min(end_a, end_b)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_ensembles_fail_for_the_same_reason(servers: tuple[ServerProcess, ServerProcess], name: str) -> None:
    triton, seawall = servers
    s_status, s_reply = _call(seawall, "POST", f"/v2/repository/models/{name}/load", {})
    t_status, t_reply = _call(triton, "POST", f"/v2/repository/models/{name}/load", {})
    assert s_status == 400
    reason = BAD[name][1]
    if name == "bad_failing":
        assert s_reply["error"].startswith(load_error(name))
        assert t_reply["error"].startswith(load_error(name))
    elif t_status == 500:
        # Triton refused it while polling ("failed to poll from model repository"), or it is the second ensemble
        # of a cycle ("no version is available"): the reason is only in Triton's log
        assert t_reply["error"].startswith(f"failed to load '{name}', ")
        deadline = time.monotonic() + 15  # the log line may still be on its way from Triton's output
        while reason not in triton.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reason in triton.log()
        assert s_reply["error"] == load_error(name)
    else:
        assert (t_status, t_reply["error"]) == (400, s_reply["error"]) == (400, load_error(name))


def _index(server: ServerProcess, models: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """The index rows of `models` once nothing is UNLOADING (Triton unloads in the background)."""
    deadline = time.monotonic() + 60
    while True:
        status, reply = _call(server, "POST", "/v2/repository/index", {})
        assert status == 200
        rows = {e["name"]: (e.get("state", ""), e.get("reason", "")) for e in reply if e["name"] in models}
        if all(state != "UNLOADING" for state, _ in rows.values()) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


@pytest.fixture
def fresh(repository: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Both servers in explicit mode with nothing loaded."""
    triton = start_triton(repository, *EXPLICIT)
    try:
        seawall = start_seawall(*SEAWALL_EXPLICIT, repository=repository)
    except BaseException:
        triton.stop()
        raise
    yield triton, seawall
    seawall.stop()
    triton.stop()


CHAIN_MODELS = ("ens_chain", "ens_pre", "ens_model", "ens_post", "ens_join")


def test_dependency_rules_match(fresh: tuple[ServerProcess, ServerProcess]) -> None:
    steps: list[tuple[str, str, Any]] = [
        ("load", "ens_pre", {}),  # loaded on its own account
        ("load", "ens_chain", {}),  # loads ens_model and ens_post as composing models
        ("unload", "ens_model", {}),  # the ensemble goes with it
        ("load", "ens_chain", {}),  # loads ens_model again
        ("unload", "ens_chain", {"parameters": {"unload_dependents": True}}),  # ens_pre stays
    ]
    for action, model, body in steps:
        rows = []
        for server in fresh:
            assert _call(server, "POST", f"/v2/repository/models/{model}/{action}", body) == (200, None)
            rows.append(_index(server, CHAIN_MODELS))
        assert rows[0] == rows[1], (action, model)
    assert rows[1]["ens_pre"] == ("READY", "") and rows[1]["ens_model"] == ("UNAVAILABLE", "unloaded")


def test_an_explicit_load_after_a_dependency_load(fresh: tuple[ServerProcess, ServerProcess]) -> None:
    """A model first loaded for an ensemble, then loaded by a client: Triton still unloads it with the ensemble's
    `unload_dependents`; Seawall keeps it (the client asked for it; docs/differences.md)."""
    rows = []
    for server in fresh:
        for action, model, body in (
            ("load", "ens_chain", {}),
            ("load", "ens_pre", {}),
            ("unload", "ens_chain", {"parameters": {"unload_dependents": True}}),
        ):
            assert _call(server, "POST", f"/v2/repository/models/{model}/{action}", body) == (200, None)
        rows.append(_index(server, CHAIN_MODELS))
    assert rows[0]["ens_pre"] == ("UNAVAILABLE", "unloaded")
    assert rows[1]["ens_pre"] == ("READY", "")
    assert {m: r for m, r in rows[0].items() if m != "ens_pre"} == {m: r for m, r in rows[1].items() if m != "ens_pre"}
