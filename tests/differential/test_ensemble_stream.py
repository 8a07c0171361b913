"""Ensembles with a decoupled step, Seawall against the real Triton 2.51 on the same repository: the messages of
a gRPC stream (outputs and final flags), the errors of a step, unary inference refused, the ensemble's
`model_transaction_policy` and the load failure of outputs from different decoupled origins."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ensembles import STREAM_BAD, fp32_input, int32_input, make_stream_repository, stream
from tests.harness import TRITON, ServerProcess, http_request, start_seawall, start_triton

BODY = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}).encode()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    return make_stream_repository(tmp_path_factory.mktemp("stream") / "models")


@pytest.fixture(scope="module")
def servers(repository: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    triton = start_triton(repository, "--exit-on-error=false")
    try:
        seawall = start_seawall("--exit-on-error=false", repository=repository)
    except BaseException:
        triton.stop()
        raise
    yield triton, seawall
    seawall.stop()
    triton.stop()


CASES: dict[str, tuple[str, Any, dict[str, str] | None]] = {
    "single": ("es_single", lambda: fp32_input([1, 2, 3, 4]), None),
    "chain": ("es_chain", lambda: fp32_input([1, 2, 3, 4]), None),
    "final_with_last": ("es_modes", lambda: int32_input(3), {"mode": "inline"}),
    "final_alone": ("es_modes", lambda: int32_input(3), {"mode": "thread"}),
    "nothing": ("es_modes", lambda: int32_input(0), {"mode": "inline"}),
    "step_error": ("es_chain", lambda: fp32_input([-1, 2, 3, 4]), None),
    "error_response": ("es_modes", lambda: int32_input(1), {"mode": "error"}),
    "not_decoupled": ("es_declared", lambda: fp32_input([1, 2, 3, 4]), None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stream_messages_match(servers: tuple[ServerProcess, ServerProcess], case: str) -> None:
    model, inputs, parameters = CASES[case]
    triton, seawall = servers
    got = [stream(s.grpc, model, inputs(), parameters) for s in (triton, seawall)]
    assert got[0] == got[1]
    assert http_request(seawall, "GET", "/v2/health/live")[0] == 200


def test_a_raising_step_fails_the_stream_as_on_triton(servers: tuple[ServerProcess, ServerProcess]) -> None:
    triton, seawall = servers
    got = [stream(s.grpc, "es_modes", int32_input(1), {"mode": "raise"}) for s in servers]
    prefix = "in ensemble 'es_modes', Failed to process the request(s) for model 'decoupled_modes_0_0', message: "
    # Triton appends the model's traceback ("At: <path>(<line>): execute"); Seawall names no server path
    for messages in got:
        assert messages[0][0] == "error" and messages[0][1].startswith(prefix + "ValueError: the model raised")
    assert http_request(seawall, "GET", "/v2/health/live")[0] == 200


@pytest.mark.parametrize("model", ["es_single", "es_chain", "es_declared"])
def test_unary_inference_and_the_policy_match(servers: tuple[ServerProcess, ServerProcess], model: str) -> None:
    triton, seawall = servers
    t_status, _, t_reply = http_request(triton, "POST", f"/v2/models/{model}/infer", BODY)
    s_status, _, s_reply = http_request(seawall, "POST", f"/v2/models/{model}/infer", BODY)
    assert t_status == s_status
    if t_status == 200:
        assert json.loads(t_reply)["outputs"] == json.loads(s_reply)["outputs"]
    else:
        assert json.loads(t_reply) == json.loads(s_reply)
    policies = [json.loads(http_request(s, "GET", f"/v2/models/{model}/config")[2]) for s in servers]
    assert policies[0]["model_transaction_policy"] == policies[1]["model_transaction_policy"]


def test_different_decoupled_origins_fail_to_load_on_both(servers: tuple[ServerProcess, ServerProcess]) -> None:
    triton, seawall = servers
    for server in servers:
        status, _, reply = http_request(server, "POST", "/v2/repository/index", b"{}")
        index = {m["name"]: m for m in json.loads(reply)}
        assert status == 200 and index["es_two"].get("state", "UNAVAILABLE") == "UNAVAILABLE"
    assert STREAM_BAD["es_two"][1] in triton.log()
    s_index = {m["name"]: m for m in json.loads(http_request(seawall, "POST", "/v2/repository/index", b"{}")[2])}
    assert s_index["es_two"]["reason"] == STREAM_BAD["es_two"][1]


def test_generate_stream_matches(servers: tuple[ServerProcess, ServerProcess]) -> None:
    body = json.dumps({"INPUT": [1, 2, 3, 4]}).encode()
    replies = [http_request(s, "POST", "/v2/models/es_chain/generate_stream", body) for s in servers]
    assert replies[0][0] == replies[1][0] == 200
    events = [
        [json.loads(line[len(b"data: ") :]) for line in reply.splitlines() if line.startswith(b"data: ")]
        for _, _, reply in replies
    ]
    # Triton adds the request's sequence parameters to each event (sequence_id 0, start and end false)
    sequence = ("sequence_id", "sequence_start", "sequence_end")
    assert [{k: v for k, v in e.items() if k not in sequence} for e in events[0]] == events[1]
    assert [e["OUTPUT"] for e in events[1]] == [[2.0, 3.0, 4.0, 5.0], [3.0, 5.0, 7.0, 9.0]]
