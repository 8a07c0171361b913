"""Sequence batching end to end on Seawall alone (what the reference Triton cannot show, see
tests/differential/test_sequence.py for the rest): string correlation ids and a STRING CORRID control input, the
oldest strategy and the direct one over two instances under concurrent sequences, implicit state with an initial
state from a file (confined to the model's initial_state/ directory) and returned to clients when listed as an
output, and the configurations refused at load, by name.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.harness import TEST_MODELS, ServerProcess, http_request, start_seawall

ACCUMULATE = (TEST_MODELS / "seq_accumulate" / "config.pbtxt").read_text()
STATE = (TEST_MODELS / "seq_state" / "config.pbtxt").read_text()


def _variant(root: Path, source: str, name: str, config: str) -> None:
    shutil.copytree(TEST_MODELS / source, root / name)
    (root / name / "config.pbtxt").write_text(config.replace(f'name: "{source}"', f'name: "{name}"'))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("sequence_e2e")
    shutil.copytree(TEST_MODELS / "seq_string_id", root / "seq_string_id")
    two = ACCUMULATE.replace("count: 1", "count: 2")
    _variant(root, "seq_accumulate", "seq_direct2", two)
    oldest = two.replace(
        "sequence_batching {",
        "sequence_batching {\n  oldest { max_candidate_sequences: 3, max_queue_delay_microseconds: 2000, "
        "preferred_batch_size: [ 2 ] }",
    )
    _variant(root, "seq_accumulate", "seq_oldest", oldest)
    delayed = two.replace(
        "sequence_batching {",
        "sequence_batching {\n  direct { max_queue_delay_microseconds: 3000, minimum_slot_utilization: 0.5 }",
    )
    _variant(root, "seq_accumulate", "seq_direct_delay", delayed)
    _variant(root, "seq_accumulate", "seq_one", ACCUMULATE.replace("max_batch_size: 2", "max_batch_size: 0"))
    from_file = STATE.replace("zero_data: true", 'data_file: "start.bin"')
    _variant(root, "seq_state", "seq_state_file", from_file)
    (root / "seq_state_file" / "initial_state").mkdir()
    (root / "seq_state_file" / "initial_state" / "start.bin").write_bytes(np.array([100], np.int32).tobytes())
    listed = STATE.replace(
        'output [ { name: "OUTPUT"',
        'output [ { name: "STATE_OUT", data_type: TYPE_INT32, dims: [ 1 ] }, { name: "OUTPUT"',
    )
    _variant(root, "seq_state", "seq_state_listed", listed)
    _variant(root, "seq_state", "seq_state_batched", STATE.replace("max_batch_size: 0", "max_batch_size: 2"))
    _variant(root, "seq_state", "bad_state_escape", STATE.replace("zero_data: true", 'data_file: "../config.pbtxt"'))
    (root / "bad_state_escape" / "initial_state").mkdir()
    _variant(root, "seq_state", "bad_state_size", from_file)
    (root / "bad_state_size" / "initial_state").mkdir()
    (root / "bad_state_size" / "initial_state" / "start.bin").write_bytes(b"\0" * 3)
    decoupled = STATE.replace("max_batch_size: 0", "max_batch_size: 0\nmodel_transaction_policy { decoupled: true }")
    _variant(root, "seq_state", "bad_decoupled", decoupled)
    _variant(
        root,
        "seq_state",
        "bad_iterative",
        STATE.replace("sequence_batching {", "sequence_batching {\n  iterative_sequence: true"),
    )
    two_controls = ACCUMULATE.replace(
        '{ name: "READY", control [ { kind: CONTROL_SEQUENCE_READY',
        '{ name: "READY2", control [ { kind: CONTROL_SEQUENCE_START, int32_false_true: [ 0, 1 ] } ] },\n'
        '    { name: "READY", control [ { kind: CONTROL_SEQUENCE_READY',
    )
    _variant(root, "seq_accumulate", "bad_two_starts", two_controls)
    _variant(root, "seq_state", "bad_cached", STATE + "response_cache { enable: true }\n")
    process = start_seawall(
        "--cache-config=local,size=1048576", "--exit-on-error=false", "--strict-readiness=false", repository=root
    )
    yield process
    process.stop()


def _index(server: ServerProcess) -> dict[str, dict[str, Any]]:
    status, _, reply = http_request(server, "POST", "/v2/repository/index", b"{}")
    assert status == 200
    return {entry["name"]: entry for entry in json.loads(reply)}


def _grpc_run(server: ServerProcess, model: str, sequence_id: int | str, values: list[int]) -> list[int]:
    client = grpcclient.InferenceServerClient(server.grpc)
    sums = []
    for index, value in enumerate(values):
        tensor = grpcclient.InferInput("INPUT", [1, 1], "INT32")
        tensor.set_data_from_numpy(np.array([[value]], dtype=np.int32))
        result = client.infer(
            model, [tensor], sequence_id=sequence_id, sequence_start=index == 0, sequence_end=index == len(values) - 1
        )
        sums.append(int(result.as_numpy("OUTPUT")[0][0]))
    client.close()
    return sums


@pytest.mark.parametrize("model", ["seq_direct2", "seq_oldest", "seq_direct_delay"])
def test_concurrent_sequences_keep_their_sums(server: ServerProcess, model: str) -> None:
    """Six sequences at once on two instances (direct: 2 slots each, so two wait; oldest: 3 candidates each):
    each sequence stays on one instance, which keeps its sum."""
    values = {sid: [sid % 10 + i for i in range(8)] for sid in range(11, 17)}
    with ThreadPoolExecutor(len(values)) as pool:
        futures = {sid: pool.submit(_grpc_run, server, model, sid, v) for sid, v in values.items()}
        for sid, future in futures.items():
            assert future.result(120) == list(np.cumsum(values[sid]))
    assert server.is_ready()


def test_string_corrid(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.http)
    tensor = httpclient.InferInput("INPUT", [1], "INT32")
    tensor.set_data_from_numpy(np.array([1], dtype=np.int32))
    for sequence_id, kind in (("session-a", 2), (42, 1)):
        first = client.infer("seq_string_id", [tensor], sequence_id=sequence_id, sequence_start=True)
        assert first.as_numpy("ID").tolist() == [str(sequence_id).encode()]
        assert first.as_numpy("FLAGS").tolist() == [kind, 1]
        last = client.infer("seq_string_id", [tensor], sequence_id=sequence_id, sequence_end=True)
        assert last.as_numpy("FLAGS").tolist() == [kind, 2]
    assert server.is_ready()


def test_wrong_id_type_over_grpc(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc)
    tensor = grpcclient.InferInput("INPUT", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.array([[1]], dtype=np.int32))
    with pytest.raises(InferenceServerException) as raised:
        client.infer("seq_direct2", [tensor], sequence_id="x1", sequence_start=True)
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert raised.value.message() == (
        "inference request for sequence x1 to model 'seq_direct2' must specify a correlation ID of type UINT64, the "
        "data type of its CORRID control input"
    )
    with pytest.raises(InferenceServerException) as raised:
        client.infer("seq_direct2", [tensor])
    assert raised.value.message() == (
        "inference request to model 'seq_direct2' must specify a non-zero or non-empty correlation ID"
    )
    client.close()
    assert server.is_ready()


def _state_sums(server: ServerProcess, model: str, sequence_id: int, values: list[int]) -> list[dict[str, Any]]:
    client = httpclient.InferenceServerClient(server.http)
    answers = []
    for index, value in enumerate(values):
        tensor = httpclient.InferInput("INPUT", [1], "INT32")
        tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
        result = client.infer(
            model, [tensor], sequence_id=sequence_id, sequence_start=index == 0, sequence_end=index == len(values) - 1
        )
        answers.append({o["name"]: result.as_numpy(o["name"]).tolist() for o in result.get_response()["outputs"]})
    return answers


def test_initial_state_from_file_and_reset_at_start(server: ServerProcess) -> None:
    for sequence_id in (21, 22):  # the second sequence starts again from the file's state
        answers = _state_sums(server, "seq_state_file", sequence_id, [1, 2, 3])
        assert answers == [{"OUTPUT": [101]}, {"OUTPUT": [103]}, {"OUTPUT": [106]}]


def test_state_listed_as_output_is_answered(server: ServerProcess) -> None:
    answers = _state_sums(server, "seq_state_listed", 31, [4, 5])
    assert answers == [{"STATE_OUT": [4], "OUTPUT": [4]}, {"STATE_OUT": [9], "OUTPUT": [9]}]


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (
            "bad_state_escape",
            "initial state file of state 'STATE_IN' of model 'bad_state_escape' must be a file inside the model's "
            "'initial_state' directory",
        ),
        (
            "bad_state_size",
            "initial state file of state 'STATE_IN' of model 'bad_state_size' must hold exactly 4 bytes (its dims "
            "and data type)",
        ),
        (
            "bad_decoupled",
            "sequence_batching with a decoupled model_transaction_policy is not supported by Seawall yet",
        ),
        ("bad_iterative", "sequence_batching.iterative_sequence is not supported by Seawall yet"),
        (
            "bad_cached",
            "Response Cache does not currently support model bad_cached with sequence batching scheduler. Please "
            "disable the response cache.",
        ),
        (
            "bad_two_starts",
            "sequence batching specifies multiple CONTROL_SEQUENCE_START tensors for model 'bad_two_starts'",
        ),
    ],
)
def test_refused_configurations(server: ServerProcess, model: str, reason: str) -> None:
    entry = _index(server)[model]
    assert entry["state"] == "UNAVAILABLE"
    assert reason in entry["reason"]
    assert _index(server)["seq_state_file"]["state"] == "READY"


def _one(client: Any, value: int) -> list[Any]:
    tensor = client.InferInput("INPUT", [1], "INT32")
    tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
    return [tensor]


def _failures(server: ServerProcess, model: str) -> int:
    status, _, reply = http_request(server, "GET", f"/v2/models/{model}/stats")
    assert status == 200
    return int(json.loads(reply)["model_stats"][0]["inference_stats"]["fail"]["count"])


def test_cancelled_start_leaves_the_backlog(server: ServerProcess) -> None:
    """seq_one has one slot: a START that waits for it and is cancelled by its client never starts its sequence,
    and the slot goes to the next sequence once the first ends."""
    client = grpcclient.InferenceServerClient(server.grpc)
    client.infer("seq_one", _one(grpcclient, 1), sequence_id=41, sequence_start=True)
    failures = _failures(server, "seq_one")

    async def cancel_waiting_start() -> None:
        async with aioclient.InferenceServerClient(server.grpc) as aio:
            waiting = asyncio.create_task(
                aio.infer("seq_one", _one(aioclient, 5), sequence_id=42, sequence_start=True, client_timeout=30)
            )
            await asyncio.sleep(0.3)  # a bounded check that it waits for the slot
            assert not waiting.done()
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)

    asyncio.run(cancel_waiting_start())
    deadline = time.monotonic() + 30
    while _failures(server, "seq_one") == failures and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _failures(server, "seq_one") == failures + 1  # counted as cancelled
    ended = client.infer("seq_one", _one(grpcclient, 2), sequence_id=41, sequence_end=True)
    assert ended.as_numpy("OUTPUT").reshape(-1).tolist() == [3]
    with pytest.raises(InferenceServerException) as raised:
        client.infer("seq_one", _one(grpcclient, 1), sequence_id=42)
    assert "must specify the START flag on the first request of the sequence" in raised.value.message()
    other = client.infer("seq_one", _one(grpcclient, 7), sequence_id=43, sequence_start=True, sequence_end=True)
    assert other.as_numpy("OUTPUT").reshape(-1).tolist() == [7]
    client.close()
    assert server.is_ready()


def test_batched_state_model_keeps_each_sequence_state(server: ServerProcess) -> None:
    """Two slots of one instance, sequences sent at once: each request's state input is its own sequence's
    ([1, 1] with the batch dimension), null requests included get the initial state."""

    def run(sequence_id: int, values: list[int]) -> list[int]:
        client = httpclient.InferenceServerClient(server.http)
        sums = []
        for index, value in enumerate(values):
            tensor = httpclient.InferInput("INPUT", [1, 1], "INT32")
            tensor.set_data_from_numpy(np.array([[value]], dtype=np.int32))
            result = client.infer(
                "seq_state_batched",
                [tensor],
                sequence_id=sequence_id,
                sequence_start=index == 0,
                sequence_end=index == len(values) - 1,
            )
            sums.append(int(result.as_numpy("OUTPUT").reshape(-1)[0]))
        return sums

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.submit(run, 51, [1] * 6), pool.submit(run, 52, [100] * 6)
        assert first.result(60) == [1, 2, 3, 4, 5, 6]
        assert second.result(60) == [100, 200, 300, 400, 500, 600]
    assert server.is_ready()
