"""Sequence batching, Seawall against the real Triton 2.51 on the same repository: interleaved sequences over HTTP
and gRPC (the control values and correlation ids the model sees, and its per-sequence sums), Triton's errors for a
request without a sequence id, a non-START request of an unknown or ended sequence, and a sequence that waits for a
slot (more sequences than slots) until one ends or idles out. Each error leaves the server ready.

Deliberate differences (docs/differences.md, "Sequence batching") are asserted as such: Seawall carries the
implicit state of a python model between the requests of a sequence (Triton 2.51's python backend hands the model
the initial state every time), and refuses a string sequence id for a model whose CORRID control input is an integer
(Triton delivers garbage bytes).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.harness import TEST_MODELS, ServerProcess, http_request, settled, triton_and_seawall

IDLE_US = 600_000


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    extra = tmp_path_factory.mktemp("sequence_extra")
    idle = extra / "seq_idle"  # seq_accumulate with one slot and a short idle timeout
    shutil.copytree(TEST_MODELS / "seq_accumulate", idle)
    config = (idle / "config.pbtxt").read_text()
    config = config.replace('name: "seq_accumulate"', 'name: "seq_idle"').replace(
        "max_batch_size: 2", "max_batch_size: 0"
    )
    config = config.replace("max_sequence_idle_microseconds: 5000000", f"max_sequence_idle_microseconds: {IDLE_US}")
    (idle / "config.pbtxt").write_text(config)
    oldest = extra / "seq_oldest"  # seq_accumulate with the oldest strategy on two instances
    shutil.copytree(TEST_MODELS / "seq_accumulate", oldest)
    config = (oldest / "config.pbtxt").read_text().replace('name: "seq_accumulate"', 'name: "seq_oldest"')
    config = config.replace("count: 1", "count: 2").replace(
        "sequence_batching {",
        "sequence_batching {\n  oldest { max_candidate_sequences: 2, max_queue_delay_microseconds: 1000, "
        "preferred_batch_size: [ 2 ] }",
    )
    (oldest / "config.pbtxt").write_text(config)
    models = [TEST_MODELS / name for name in ("seq_accumulate", "seq_state", "seq_string_id")]
    root = tmp_path_factory.mktemp("sequence") / "models"
    root.mkdir()
    with triton_and_seawall(root, *models, idle, oldest) as pair:
        yield pair


def _infer(server: ServerProcess, model: str, value: int, **parameters: Any) -> tuple[int, Any]:
    shape = [1, 1] if model in ("seq_accumulate", "seq_oldest") else [1]
    body: dict[str, Any] = {"inputs": [{"name": "INPUT", "datatype": "INT32", "shape": shape, "data": [value]}]}
    if parameters:
        body["parameters"] = parameters
    status, _, reply = http_request(server, "POST", f"/v2/models/{model}/infer", json.dumps(body).encode(), timeout=60)
    answer = json.loads(reply)
    if status == 200:
        return status, {o["name"]: o["data"] for o in answer["outputs"]}
    return status, answer


def _both(servers: tuple[ServerProcess, ServerProcess], model: str, value: int, **parameters: Any) -> Any:
    """The answer of both servers to one request, asserted equal."""
    triton, seawall = servers
    expected = _infer(triton, model, value, **parameters)
    assert _infer(seawall, model, value, **parameters) == expected
    return expected


def _ready(servers: tuple[ServerProcess, ServerProcess]) -> None:
    for server in servers:
        assert server.is_ready()


def test_server_metadata_lists_sequence(servers: tuple[ServerProcess, ServerProcess]) -> None:
    for server in servers:
        status, _, reply = http_request(server, "GET", "/v2")
        assert status == 200 and "sequence" in json.loads(reply)["extensions"]


def test_interleaved_sequences_over_http(servers: tuple[ServerProcess, ServerProcess]) -> None:
    steps = [
        (101, 1, {"sequence_start": True}),
        (102, 10, {"sequence_start": True}),
        (101, 2, {}),
        (102, 20, {}),
        (101, 3, {"sequence_end": True}),
        (103, 100, {"sequence_start": True}),
        (102, 30, {"sequence_end": True}),
        (103, 200, {"sequence_end": True}),
        (104, 7, {"sequence_start": True, "sequence_end": True}),
    ]
    answers = [_both(servers, "seq_accumulate", value, sequence_id=sid, **flags) for sid, value, flags in steps]
    assert [a[1]["OUTPUT"] for a in answers] == [[1], [10], [3], [30], [6], [100], [60], [300], [7]]
    assert [a[1]["CONTROLS"] for a in answers][:5] == [
        [1.0, 0.0, 1.0],
        [1.0, 0.0, 1.0],
        [0.0, 0.0, 1.0],
        [0.0, 0.0, 1.0],
        [0.0, 1.0, 1.0],
    ]
    assert [a[1]["ID"] for a in answers] == [[s] for s, _, _ in steps]
    _ready(servers)


@pytest.mark.parametrize("model", ["seq_accumulate", "seq_oldest"])
def test_concurrent_sequences_over_grpc(servers: tuple[ServerProcess, ServerProcess], model: str) -> None:
    """Sequences sent at once from threads (they may share executions): each keeps its own sum (seq_oldest: four
    sequences on two instances with two candidate sequences each)."""

    def run(server: ServerProcess, sequence_id: int, values: list[int]) -> list[int]:
        client = grpcclient.InferenceServerClient(server.grpc)
        sums = []
        for index, value in enumerate(values):
            tensor = grpcclient.InferInput("INPUT", [1, 1], "INT32")
            tensor.set_data_from_numpy(np.array([[value]], dtype=np.int32))
            result = client.infer(
                model,
                [tensor],
                sequence_id=sequence_id,
                sequence_start=index == 0,
                sequence_end=index == len(values) - 1,
            )
            sums.append(int(result.as_numpy("OUTPUT")[0][0]))
        client.close()
        return sums

    for server in servers:
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(run, server, 201, [1, 2, 3, 4, 5, 6])
            second = pool.submit(run, server, 202, [10, 10, 10, 10, 10, 10])
            more = [pool.submit(run, server, 203 + i, [i] * 5) for i in range(2 if model == "seq_oldest" else 0)]
            assert first.result(60) == [1, 3, 6, 10, 15, 21]
            assert second.result(60) == [10, 20, 30, 40, 50, 60]
            assert [f.result(60) for f in more] == [[i * k for k in range(1, 6)] for i in range(len(more))]
    _ready(servers)


@pytest.mark.parametrize("parameters", [{}, {"sequence_id": 0}, {"sequence_id": ""}, {"sequence_start": True}])
def test_request_without_sequence_id(servers: tuple[ServerProcess, ServerProcess], parameters: dict[str, Any]) -> None:
    status, answer = _both(servers, "seq_accumulate", 1, **parameters)
    assert status == 400
    assert answer["error"] == (
        "inference request to model 'seq_accumulate' must specify a non-zero or non-empty correlation ID"
    )
    _ready(servers)


@pytest.mark.parametrize("parameters", [{}, {"sequence_id": 902, "sequence_start": True}])
def test_batch_of_two_is_refused(servers: tuple[ServerProcess, ServerProcess], parameters: dict[str, Any]) -> None:
    body = {
        "inputs": [{"name": "INPUT", "datatype": "INT32", "shape": [2, 1], "data": [1, 2]}],
        "parameters": parameters,
    }
    answers = []
    for server in servers:
        status, _, reply = http_request(server, "POST", "/v2/models/seq_accumulate/infer", json.dumps(body).encode())
        answers.append((status, json.loads(reply)))
    assert (
        answers[0]
        == answers[1]
        == (
            400,
            {
                "error": "inference request to model 'seq_accumulate' must specify batch-size 1 due to requirements of "
                "sequence batcher"
            },
        )
    )
    _ready(servers)


def test_non_start_request_of_unknown_or_ended_sequence(servers: tuple[ServerProcess, ServerProcess]) -> None:
    message = (
        "inference request for sequence 301 to model 'seq_accumulate' must specify the START flag on the first "
        "request of the sequence"
    )
    assert _both(servers, "seq_accumulate", 1, sequence_id=301) == (400, {"error": message})
    assert _both(servers, "seq_accumulate", 1, sequence_id=301, sequence_end=True) == (400, {"error": message})
    assert _both(servers, "seq_accumulate", 5, sequence_id=301, sequence_start=True)[0] == 200
    assert _both(servers, "seq_accumulate", 1, sequence_id=301, sequence_end=True)[1]["OUTPUT"] == [6]
    assert _both(servers, "seq_accumulate", 1, sequence_id=301) == (400, {"error": message})
    _ready(servers)


def test_model_error_keeps_the_sequence(servers: tuple[ServerProcess, ServerProcess]) -> None:
    assert _both(servers, "seq_accumulate", -1, sequence_id=401, sequence_start=True) == (
        400,
        {"error": "INPUT -1 is refused"},
    )
    assert _both(servers, "seq_accumulate", 2, sequence_id=401, sequence_end=True)[1]["OUTPUT"] == [2]
    _ready(servers)


def test_sequence_waits_for_a_slot_until_one_ends(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """seq_accumulate has two slots: a third sequence's START waits until one of the two ends, then runs."""
    for server in servers:
        assert _infer(server, "seq_accumulate", 1, sequence_id=501, sequence_start=True)[0] == 200
        assert _infer(server, "seq_accumulate", 2, sequence_id=502, sequence_start=True)[0] == 200
        with ThreadPoolExecutor(1) as pool:
            third = pool.submit(_infer, server, "seq_accumulate", 3, sequence_id=503, sequence_start=True)
            time.sleep(0.3)  # a bounded check that it waits: it cannot be answered before a slot frees
            assert not third.done()
            assert _infer(server, "seq_accumulate", 4, sequence_id=501, sequence_end=True)[1]["OUTPUT"] == [5]
            assert third.result(30)[1]["OUTPUT"] == [3]
        assert _infer(server, "seq_accumulate", 1, sequence_id=502, sequence_end=True)[1]["OUTPUT"] == [3]
        assert _infer(server, "seq_accumulate", 1, sequence_id=503, sequence_end=True)[1]["OUTPUT"] == [4]
    _ready(servers)


def test_idle_sequence_releases_its_slot(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """seq_idle has one slot: a second sequence waits until the first has been idle for the idle timeout, and the
    first is then unknown."""
    message = (
        "inference request for sequence 601 to model 'seq_idle' must specify the START flag on the first request "
        "of the sequence"
    )
    for server in servers:
        began = time.monotonic()
        assert _infer(server, "seq_idle", 1, sequence_id=601, sequence_start=True)[0] == 200
        status, answer = _infer(server, "seq_idle", 5, sequence_id=602, sequence_start=True, sequence_end=True)
        assert (status, answer["OUTPUT"]) == (200, [5])
        waited = time.monotonic() - began
        assert waited >= IDLE_US / 1e6 * 0.8  # it waited for the first sequence to idle out
        assert _infer(server, "seq_idle", 1, sequence_id=601) == (400, {"error": message})
    _ready(servers)


def test_a_sequence_busier_than_the_idle_timeout_keeps_its_slot(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """seq_idle (idle timeout 600 ms): a sequence whose requests come more often than that keeps its slot for
    longer than two timeouts (the idle clock restarts at each request) and goes on summing."""
    for server in servers:
        assert _sum(server, sequence_id=611, sequence_start=True) == 1
        began, total = time.monotonic(), 1
        while time.monotonic() - began < 2.5 * IDLE_US / 1e6:
            time.sleep(0.05)
            total += 1
            assert _sum(server, sequence_id=611) == total
        assert _sum(server, sequence_id=611, sequence_end=True) == total + 1
    _ready(servers)


def _sum(server: ServerProcess, **parameters: Any) -> int:
    status, answer = _infer(server, "seq_idle", 1, **parameters)
    assert status == 200, answer
    return int(answer["OUTPUT"][0])


def test_implicit_state_is_carried_by_seawall_only(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """A deliberate difference: Triton 2.51's python backend gives the model the initial (zero) state at every
    request; Seawall gives it the state the previous request of the sequence returned, reset at START."""
    triton, seawall = servers
    sums: dict[str, list[Any]] = {}
    for name, server in (("triton", triton), ("seawall", seawall)):
        sums[name] = [
            _infer(server, "seq_state", 1, sequence_id=701, sequence_start=True)[1]["OUTPUT"],
            _infer(server, "seq_state", 2, sequence_id=701)[1]["OUTPUT"],
            _infer(server, "seq_state", 3, sequence_id=701, sequence_end=True)[1]["OUTPUT"],
            _infer(server, "seq_state", 4, sequence_id=702, sequence_start=True, sequence_end=True)[1]["OUTPUT"],
        ]
    assert sums["triton"] == [[1], [2], [3], [4]]
    assert sums["seawall"] == [[1], [3], [6], [4]]
    _ready(servers)


def test_string_id_for_an_integer_corrid_is_refused_by_seawall(servers: tuple[ServerProcess, ServerProcess]) -> None:
    triton, seawall = servers
    status, answer = _infer(triton, "seq_accumulate", 1, sequence_id="abc", sequence_start=True, sequence_end=True)
    assert status == 200  # Triton hands the model bytes of the string as the UINT64 id
    assert _infer(seawall, "seq_accumulate", 1, sequence_id="abc", sequence_start=True) == (
        400,
        {
            "error": "inference request for sequence abc to model 'seq_accumulate' must specify a correlation ID of "
            "type UINT64, the data type of its CORRID control input"
        },
    )
    _ready(servers)


def _stats(server: ServerProcess, model: str) -> tuple[int, int, dict[int, int]]:
    status, _, reply = http_request(server, "GET", f"/v2/models/{model}/stats")
    assert status == 200
    entry = json.loads(reply)["model_stats"][0]
    batches = {b["batch_size"]: b["compute_infer"]["count"] for b in entry["batch_stats"]}
    return entry["inference_count"], entry["execution_count"], batches


def test_null_requests_fill_the_slots_before_a_request(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """Direct: a request in the second slot alone runs in a batch of two (a null request, READY false, fills the
    first slot), counted as one inference and one execution of batch size 2."""
    deltas = []
    for server in servers:
        inferences, executions, batches = _stats(server, "seq_accumulate")
        assert _infer(server, "seq_accumulate", 1, sequence_id=801, sequence_start=True)[0] == 200
        assert _infer(server, "seq_accumulate", 1, sequence_id=802, sequence_start=True)[0] == 200
        assert _infer(server, "seq_accumulate", 1, sequence_id=801)[0] == 200
        assert _infer(server, "seq_accumulate", 1, sequence_id=802, sequence_end=True)[1]["OUTPUT"] == [2]
        assert _infer(server, "seq_accumulate", 1, sequence_id=801, sequence_end=True)[1]["OUTPUT"] == [3]
        after = settled(lambda s=server: _stats(s, "seq_accumulate"), lambda a, e=executions: a[1] - e >= 5)
        deltas.append(
            (after[0] - inferences, after[1] - executions, {k: v - batches.get(k, 0) for k, v in after[2].items()})
        )
    assert deltas[0] == deltas[1] == (5, 5, {1: 3, 2: 2})
    _ready(servers)


def test_string_corrid_works_on_seawall_only(servers: tuple[ServerProcess, ServerProcess]) -> None:
    """A deliberate difference: Triton 2.51's python backend fails every request of a model with a STRING CORRID
    control input; Seawall gives the model the id as a BYTES tensor."""
    triton, seawall = servers
    assert _infer(triton, "seq_string_id", 1, sequence_id="s-1", sequence_start=True) == (
        400,
        {"error": "unexpected number of string elements 2 for inference input 'CORRID', expecting 1"},
    )
    assert _infer(seawall, "seq_string_id", 1, sequence_id="s-1", sequence_start=True) == (
        200,
        {"ID": ["s-1"], "FLAGS": [2, 1]},
    )
    _ready(servers)


def test_start_restarts_an_active_sequence(servers: tuple[ServerProcess, ServerProcess]) -> None:
    answers = [
        _both(servers, "seq_accumulate", 1, sequence_id=901, sequence_start=True),
        _both(servers, "seq_accumulate", 2, sequence_id=901),
        _both(servers, "seq_accumulate", 5, sequence_id=901, sequence_start=True),
        _both(servers, "seq_accumulate", 1, sequence_id=901, sequence_end=True),
    ]
    assert [a[1]["OUTPUT"] for a in answers] == [[1], [3], [5], [6]]
    _ready(servers)
