"""End-to-end tests of decoupled python models (`model_transaction_policy { decoupled: true }`), over gRPC
ModelStreamInfer with tritonclient (sync and aio), in a stub process and in process: many responses per
request, interleaved requests, Triton's unary errors, and models that break the rules (send after the final
flag, final twice, no final flag, raise in a thread, return a list), each answered with a clear error while the
instance keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.harness import TEST_MODELS, ServerProcess, start_seawall

MODELS = ("square_int32", "decoupled_modes", "cancel_wait", "decoupled_hostile")
#: these also run in the server process, as `<name>_in_process` (the same model.py, SEAWALL_IN_PROCESS set)
IN_PROCESS = ("decoupled_modes", "cancel_wait")
_IN_PROCESS_PARAMETER = 'parameters { key: "SEAWALL_IN_PROCESS" value: { string_value: "true" } }\n'


@pytest.fixture(scope="module")
def seawall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("decoupled")
    names = list(MODELS)
    for name in MODELS:
        shutil.copytree(TEST_MODELS / name, root / name)
    twins = [(name, f"{name}_in_process", _IN_PROCESS_PARAMETER) for name in IN_PROCESS]
    twins.append(("decoupled_hostile", "decoupled_hostile_inline", ""))  # three more crashes within the budget
    for name, twin_name, extra in twins:
        twin = root / twin_name
        shutil.copytree(TEST_MODELS / name, twin)
        config = (twin / "config.pbtxt").read_text().replace(f'name: "{name}"', f'name: "{twin_name}"', 1)
        (twin / "config.pbtxt").write_text(config + extra)
        names.append(twin_name)
    loads = [f"--load-model={name}" for name in names]
    server = start_seawall(
        "--model-control-mode=explicit",
        "--allow-unrestricted-model-repository=true",
        *loads,
        repository=root,
    )
    yield server
    server.stop()


def _input(module: Any, value: int) -> list[Any]:
    tensor = module.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([value], dtype=np.int32))
    return [tensor]


Result = tuple[Any, Any]


def _stream(
    server: ServerProcess,
    requests: list[tuple[str, int, str, dict[str, Any]]],
    expected: int,
    empty_final: bool = False,
) -> list[Result]:
    """Send (model, IN, id, parameters) requests on one stream; return the first `expected` results."""
    results: queue.Queue[Result] = queue.Queue()
    with grpcclient.InferenceServerClient(server.grpc) as client:
        client.start_stream(callback=lambda result, error: results.put((result, error)))
        for model, value, request_id, parameters in requests:
            custom = {k: v for k, v in parameters.items() if k != "timeout"}
            client.async_stream_infer(
                model,
                _input(grpcclient, value),
                request_id=request_id,
                parameters=custom or None,
                enable_empty_final_response=empty_final,
                timeout=parameters.get("timeout"),
            )
        answers = [results.get(timeout=60) for _ in range(expected)]
        client.stop_stream()
        time.sleep(0.2)
        assert results.empty(), "more responses than expected"
    return answers


def _final(result: Any) -> bool:
    return bool(result.get_response().parameters["triton_final_response"].bool_param)


def _by_id(answers: list[Result]) -> dict[str, list[Result]]:
    grouped: dict[str, list[Result]] = {}
    for result, error in answers:
        key = result.get_response().id if result is not None else "error"
        grouped.setdefault(key, []).append((result, error))
    return grouped


def _healthy(server: ServerProcess, model: str = "square_int32") -> None:
    answers = _stream(server, [(model, 2, "check", {"mode": "inline"})], 2)
    assert [int(r.as_numpy("OUT")[0]) for r, _ in answers] == [0, 1]
    with httpclient.InferenceServerClient(server.http) as client:
        assert client.is_server_ready() and client.is_model_ready(model)


def test_many_responses_per_request_interleaved_in_order(seawall: ServerProcess) -> None:
    requests = [("square_int32", n, f"r{n}", {}) for n in (5, 0, 3, 1)]
    answers = _stream(seawall, requests, 5 + 3 + 1, empty_final=False)
    assert all(error is None for _, error in answers)
    grouped = _by_id(answers)
    assert sorted(grouped) == ["r1", "r3", "r5"]  # IN = 0: no response at all without the empty final one
    for request_id, results in grouped.items():
        count = int(request_id[1:])
        assert [int(r.as_numpy("OUT")[0]) for r, _ in results] == list(range(count))
        assert not any(_final(r) for r, _ in results)


def test_the_empty_final_response_on_request(seawall: ServerProcess) -> None:
    answers = _stream(seawall, [("square_int32", 2, "e", {}), ("square_int32", 0, "z", {})], 3 + 1, empty_final=True)
    grouped = _by_id(answers)
    assert [_final(r) for r, _ in grouped["e"]] == [False, False, True]
    last = grouped["e"][-1][0].get_response()
    assert not last.outputs and last.model_name == "square_int32" and last.model_version == ""
    assert [_final(r) for r, _ in grouped["z"]] == [True]


@pytest.mark.parametrize("model", ["decoupled_modes", "decoupled_modes_in_process"])
def test_inline_and_thread_senders(seawall: ServerProcess, model: str) -> None:
    answers = _stream(
        seawall, [(model, 3, "inline", {"mode": "inline"}), (model, 2, "thread", {"mode": "thread"})], 3 + 3, True
    )
    grouped = _by_id(answers)
    assert [(int(r.as_numpy("OUT")[0]), _final(r)) for r, _ in grouped["inline"]] == [(0, False), (1, False), (2, True)]
    thread = grouped["thread"]
    assert [_final(r) for r, _ in thread] == [False, False, True]
    assert thread[-1][0].as_numpy("OUT") is None


@pytest.mark.parametrize("model", ["decoupled_modes", "decoupled_modes_in_process"])
def test_inputs_stay_valid_after_execute_returned(seawall: ServerProcess, model: str) -> None:
    """A decoupled model reads a request's input after its execute() returned and later requests came in (their
    inputs are written where the first ones were, in a stub): it still reads its own request's values."""
    held = [(model, 100 + n, f"h{n}", {"mode": "hold_input"}) for n in range(8)]
    answers = _stream(seawall, [*held, (model, 0, "release", {"mode": "release_held"})], 8)
    assert {r.get_response().id: r.as_numpy("OUT").tolist() for r, _ in answers} == {
        f"h{n}": [100 + n] for n in range(8)
    }


def test_outputs_larger_than_the_response_region(seawall: ServerProcess) -> None:
    size = 600_000  # 2.4 MB per response: more than the default 1 MiB region, which grows
    answers = _stream(seawall, [("decoupled_modes", 3, "big", {"mode": "thread", "size": size})], 4, True)
    for index, (result, error) in enumerate(answers[:3]):
        assert error is None
        out = result.as_numpy("OUT")
        assert out.shape == (size,) and (out == index).all()
    _healthy(seawall)


@pytest.mark.parametrize("model", ["decoupled_modes", "decoupled_modes_in_process"])
def test_an_error_response(seawall: ServerProcess, model: str) -> None:
    ((result, error),) = _stream(seawall, [(model, 1, "err", {"mode": "error"})], 1)
    assert result is None and error.message() == "a bad request, says the model"


@pytest.mark.parametrize("model", ["decoupled_modes", "decoupled_modes_in_process"])
def test_execute_raising_ends_the_stream_with_its_error(seawall: ServerProcess, model: str) -> None:
    ((result, error),) = _stream(seawall, [(model, 1, "raise", {"mode": "raise"})], 1)
    assert result is None
    assert error.message() == (
        f"Failed to process the request(s) for model '{model}_0_0', message: ValueError: the model raised on purpose"
    )
    _healthy(seawall, model)


@pytest.mark.parametrize("model", ["decoupled_modes", "decoupled_modes_in_process"])
def test_send_after_final_raises_in_the_model(seawall: ServerProcess, model: str) -> None:
    ((result, error),) = _stream(seawall, [(model, 1, "af", {"mode": "after_final"})], 1)
    assert error is None and _final(result) and int(result.as_numpy("OUT")[0]) == 0
    seawall.wait_for_log("Unable to send response. Response sender has been closed.")
    _healthy(seawall, model)


def test_final_twice_raises_in_the_model(seawall: ServerProcess) -> None:
    ((result, error),) = _stream(seawall, [("decoupled_modes", 1, "ft", {"mode": "final_twice"})], 1, True)
    assert error is None and _final(result) and result.as_numpy("OUT") is None
    _healthy(seawall, "decoupled_modes")


@pytest.mark.parametrize("model", ["decoupled_modes", "decoupled_modes_in_process"])
def test_a_sender_dropped_without_final_ends_the_stream_with_an_error(seawall: ServerProcess, model: str) -> None:
    (first, error), (none, failure) = _stream(seawall, [(model, 1, "drop", {"mode": "drop"})], 2)
    assert error is None and not _final(first)
    assert none is None
    assert failure.message() == "the model released the response sender without sending the final flag"
    _healthy(seawall, model)


def test_a_thread_raising_ends_the_stream_with_an_error(seawall: ServerProcess) -> None:
    (first, error), (none, failure) = _stream(seawall, [("decoupled_modes", 1, "rt", {"mode": "raise_thread"})], 2)
    assert error is None and int(first.as_numpy("OUT")[0]) == 0
    assert none is None
    assert failure.message() == "the model released the response sender without sending the final flag"
    seawall.wait_for_log("RuntimeError: the model's thread raised on purpose")
    _healthy(seawall, "decoupled_modes")


def test_a_sender_kept_without_final_ends_at_the_request_timeout(seawall: ServerProcess) -> None:
    started = time.monotonic()
    (first, error), (none, failure) = _stream(
        seawall, [("decoupled_modes", 1, "keep", {"mode": "keep", "timeout": 500_000})], 2
    )
    assert error is None and not _final(first)
    assert none is None and failure.message() == "Request timeout expired"
    assert time.monotonic() - started < 30
    _healthy(seawall, "decoupled_modes")


def test_returning_a_list_from_a_decoupled_execute_is_an_error(seawall: ServerProcess) -> None:
    ((result, error),) = _stream(seawall, [("decoupled_modes", 1, "rl", {"mode": "return_list"})], 1, True)
    assert error is None and _final(result)  # the model sent its final flag before returning
    seawall.wait_for_log("is using the decoupled mode and the execute function must return None.")
    _healthy(seawall, "decoupled_modes")


def test_aio_stream_infer(seawall: ServerProcess) -> None:
    async def run() -> list[Any]:
        async with aioclient.InferenceServerClient(seawall.grpc) as client:

            async def requests() -> Any:
                for value in (3, 2):
                    yield {"model_name": "square_int32", "inputs": _input(aioclient, value), "request_id": str(value)}

            received = []
            async for result, error in client.stream_infer(requests()):
                assert error is None
                received.append(result)
                if len(received) == 5:
                    break
            return received

    received = asyncio.run(run())
    grouped: dict[str, list[Any]] = {}
    for result in received:
        grouped.setdefault(result.get_response().id, []).append(result)
    assert [int(r.as_numpy("OUT")[0]) for r in grouped["3"]] == [0, 1, 2]
    assert [int(r.as_numpy("OUT")[0]) for r in grouped["2"]] == [0, 1]
    assert not any(_final(r) for r in received)
    _healthy(seawall)


def test_unary_infer_on_a_decoupled_model_is_refused(seawall: ServerProcess) -> None:
    with grpcclient.InferenceServerClient(seawall.grpc) as client:
        with pytest.raises(InferenceServerException) as grpc_error:
            client.infer("square_int32", _input(grpcclient, 1))
    assert grpc_error.value.status() == "StatusCode.UNIMPLEMENTED"
    assert grpc_error.value.message() == "ModelInfer RPC doesn't support models with decoupled transaction policy"
    with httpclient.InferenceServerClient(seawall.http) as client:
        with pytest.raises(InferenceServerException) as http_error:
            client.infer("square_int32", _input(httpclient, 1))
    assert http_error.value.status() == "501"
    assert http_error.value.message() == "HTTP end point doesn't support models with decoupled transaction policy"
    _healthy(seawall)


def _metric(server: ServerProcess, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(f"{name}{{") and labels in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_closing_the_stream_cancels_the_request_in_the_model(seawall: ServerProcess) -> None:
    done = seawall.log().count("wait_cancel: sender.is_cancelled()=True")
    waiting = seawall.log().count("wait_cancel: waiting")
    for model in ("decoupled_modes", "decoupled_modes_in_process"):
        with grpcclient.InferenceServerClient(seawall.grpc) as client:
            client.start_stream(callback=lambda result, error: None)
            client.async_stream_infer(model, _input(grpcclient, 1), request_id="w", parameters={"mode": "wait_cancel"})
            # the model holds the request (closing the stream earlier drops it before it executes: no line to see)
            seawall.wait_for_log("wait_cancel: waiting", count=waiting + 1)
            waiting += 1
            client.stop_stream(cancel_requests=True)
        # (in process, a log line from a model's own thread names that thread, not the instance)
        seen = "wait_cancel: sender.is_cancelled()=True request.is_cancelled()=True"
        seawall.wait_for_log(seen, count=done + 1)
        done += 1
        _healthy(seawall, model)


def test_a_cancelled_call_cancels_the_running_request_and_drops_the_queued_one(seawall: ServerProcess) -> None:
    cancelled = 'model="cancel_wait",reason="CANCELED"'
    before = _metric(seawall, "nv_inference_request_failure", cancelled)

    async def run() -> None:
        async with aioclient.InferenceServerClient(seawall.grpc) as client:
            running = asyncio.create_task(
                client.infer("cancel_wait", _input(aioclient, 1), request_id="slow-1", client_timeout=30)
            )
            await asyncio.sleep(0.5)  # slow-1 runs; quick-2 waits in the queue of the one instance
            queued = asyncio.create_task(
                client.infer("cancel_wait", _input(aioclient, 2), request_id="quick-2", client_timeout=30)
            )
            await asyncio.sleep(0.5)
            for task in (queued, running):
                task.cancel()
            await asyncio.gather(running, queued, return_exceptions=True)

    asyncio.run(run())
    seawall.wait_for_log("cancel_wait: slow-1 request.is_cancelled()=True")
    deadline = time.monotonic() + 30
    while _metric(seawall, "nv_inference_request_failure", cancelled) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _metric(seawall, "nv_inference_request_failure", cancelled) == before + 2
    with grpcclient.InferenceServerClient(seawall.grpc) as client:
        result = client.infer("cancel_wait", _input(grpcclient, 3), request_id="quick-3")
    assert int(result.as_numpy("OUT")[0]) == 3
    seawall.wait_for_log("cancel_wait: executed quick-3")  # the stub's log line reaches the server's log later
    assert "executed quick-2" not in seawall.log()  # dropped before executing


def test_a_cancelled_call_cancels_the_running_request_in_process(seawall: ServerProcess) -> None:
    async def run() -> None:
        async with aioclient.InferenceServerClient(seawall.grpc) as client:
            running = asyncio.create_task(
                client.infer("cancel_wait_in_process", _input(aioclient, 1), request_id="slow-ip", client_timeout=30)
            )
            await asyncio.sleep(0.5)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    asyncio.run(run())
    seawall.wait_for_log("cancel_wait: slow-ip request.is_cancelled()=True")
    with grpcclient.InferenceServerClient(seawall.grpc) as client:
        result = client.infer("cancel_wait_in_process", _input(grpcclient, 5), request_id="quick-ip")
    assert int(result.as_numpy("OUT")[0]) == 5


def test_a_dropped_http_connection_cancels_its_request(seawall: ServerProcess) -> None:
    import socket

    host, port = seawall.http.rsplit(":", 1)
    body = json.dumps({"id": "slow-http", "inputs": [{"name": "IN", "datatype": "INT32", "shape": [1], "data": [4]}]})
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = f"POST /v2/models/cancel_wait/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        sock.sendall((head + "Content-Type: application/json\r\n\r\n" + body).encode())
        time.sleep(0.5)
    seawall.wait_for_log("cancel_wait: slow-http request.is_cancelled()=True")
    with grpcclient.InferenceServerClient(seawall.grpc) as client:
        assert client.is_model_ready("cancel_wait")


#: a model instance may crash three times a minute (restarts.py): each group of forged frames has its own model
FORGERIES = {
    "decoupled_hostile": {
        "future_batch": "a response to an unknown batch",
        "bad_descriptor": "bad response: a response without a response region",
        "bad_grow": "bad response region request",
    },
    "decoupled_hostile_inline": {
        "inline_outside": "bad response: tensor 'OUT' lies outside the shared region",
        "inline_text": "bad response: inline tensor bytes are not base64",
        "inline_size": "bad response: inline tensor bytes have the wrong size",
    },
}


@pytest.mark.parametrize("model", FORGERIES)
def test_forged_stub_frames_stop_the_stub_and_the_instance_serves_again(seawall: ServerProcess, model: str) -> None:
    for mode, reason in FORGERIES[model].items():
        ((result, error),) = _stream(seawall, [(model, 1, mode, {"mode": mode})], 1)
        assert result is None and error.message() == f"model instance '{model}_0_0' crashed"
        seawall.wait_for_log(f"model instance '{model}_0_0': stopping its stub process: {reason}")
        deadline = time.monotonic() + 60
        while True:  # the stub is started again
            ((answer, failure),) = _stream(seawall, [(model, 7, "ok", {})], 1)
            if failure is None:
                assert int(answer.as_numpy("OUT")[0]) == 7 and _final(answer)
                break
            assert time.monotonic() < deadline, failure.message()
            time.sleep(0.2)
    _healthy(seawall)
