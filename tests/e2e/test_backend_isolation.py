"""The onnxruntime and pytorch backends run each instance in a worker process by default (a stub of the python
backend serving Seawall's own runner), and on threads of the server with SEAWALL_IN_PROCESS "true". Both give the
same outputs over HTTP and gRPC as the model run directly; a killed worker is started again under the crash budget
and the model keeps serving; a bad opt-in value is refused by name."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests import onnx_models as m
from tests.harness import ServerProcess, http_request, start_seawall

#: every model instance starts a worker process importing its runtime: many at once on a busy machine take a while
STARTUP_S = 240

torch = pytest.importorskip("torch")
tm = pytest.importorskip("tests.torch_models")

A = np.array([1.5, 2.0, -3.0, 4.25], dtype=np.float32)
B = np.array([0.5, 1.0, 1.0, -0.25], dtype=np.float32)
IN_PROCESS = 'parameters { key: "SEAWALL_IN_PROCESS" value: { string_value: "true" } }'
ONNX = {"onnx_isolated": "", "onnx_in_process": IN_PROCESS}
TORCH = {"pt_isolated": "", "pt_in_process": IN_PROCESS}
FP4 = "TYPE_FP32 4"


def repository(root: Path) -> Path:
    for name, extra in ONNX.items():
        m.write(root, name, m.add_sub(["n"]), m.ADD_SUB_CONFIG.format(name=name, extra=extra))
    add_sub = tm.scripted(tm.AddSub())
    outputs = [("OUTPUT__0", FP4), ("OUTPUT__1", FP4)]
    for name, extra in TORCH.items():
        tm.write(root, name, add_sub, tm.config(name, [("INPUT__0", FP4), ("INPUT__1", FP4)], outputs, extra))
    for name, extra in (("pt_bf16", ""), ("pt_bf16_in_process", IN_PROCESS)):
        config = tm.config(name, [("INPUT__0", "TYPE_BF16 4")], [("OUTPUT__0", "TYPE_BF16 4")], extra)
        tm.write(root, name, tm.scripted(tm.Double()), config)
    wrong = tm.config("pt_bf16_wrong", [("INPUT__0", "TYPE_BF16 4")], [("OUTPUT__0", "TYPE_FP32 4")])
    tm.write(root, "pt_bf16_wrong", tm.scripted(tm.Double()), wrong)
    for name, extra in (("pt_mismatch", ""), ("pt_mismatch_in_process", IN_PROCESS)):
        tm.write(root, name, add_sub, tm.config(name, [("INPUT__0", FP4)], [("OUTPUT__0", FP4)], extra))
    bad = 'parameters { key: "SEAWALL_IN_PROCESS" value: { string_value: "inline" } }'
    m.write(root, "onnx_inline", m.add_sub(["n"]), m.ADD_SUB_CONFIG.format(name="onnx_inline", extra=bad))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_seawall(
        "--exit-on-error=false", repository=repository(tmp_path_factory.mktemp("isolation")), timeout=STARTUP_S
    )
    yield process
    process.stop()


def _workers(server: ServerProcess) -> dict[str, int]:
    """The server's worker processes: model name → pid (from the `model=<name>` argument `ps` shows)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = [arg.decode() for arg in cmdline.read().split(b"\0") if arg]
        except OSError:
            continue
        if parent == server.process.pid:
            for arg in argv:
                if arg.startswith("model="):
                    found[arg[len("model=") :]] = int(entry)
    return found


def _infer(
    server: ServerProcess, protocol: str, model: str, first: str = "INPUT0", a: np.ndarray = A
) -> list[np.ndarray]:
    module: Any = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.http if protocol == "http" else server.grpc)
    names = [first, first.replace("0", "1")]
    tensors = []
    for name, array in zip(names, (a, B), strict=True):
        tensor = module.InferInput(name, [4], "FP32")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = client.infer(model, tensors)
    output = "OUTPUT__" if first.endswith("__0") else "OUTPUT"
    return [result.as_numpy(f"{output}{i}") for i in (0, 1)]


def _direct_onnx() -> list[np.ndarray]:
    session = ort.InferenceSession(m.add_sub(["n"]).SerializeToString(), providers=["CPUExecutionProvider"])
    result: list[np.ndarray] = session.run(None, {"INPUT0": A, "INPUT1": B})
    return result


def _direct_torch() -> list[np.ndarray]:
    return [t.numpy() for t in tm.AddSub()(torch.from_numpy(A), torch.from_numpy(B))]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", [*ONNX, *TORCH])
def test_isolated_and_in_process_give_the_direct_outputs(server: ServerProcess, protocol: str, model: str) -> None:
    onnx = model.startswith("onnx")
    got = _infer(server, protocol, model, "INPUT0" if onnx else "INPUT__0")
    expected = _direct_onnx() if onnx else _direct_torch()
    for actual, wanted in zip(got, expected, strict=True):
        np.testing.assert_allclose(actual, wanted, rtol=1e-6)


@pytest.mark.parametrize("model", ["onnx_in_process", "pt_in_process", "onnx_isolated"])
def test_concurrent_requests_each_get_their_own_outputs(server: ServerProcess, model: str) -> None:
    """Several batches queued at one instance (its thread takes the next without waiting for the loop): 48
    requests from 8 clients at once, each with its own inputs, each answered with its own sums."""
    first = "INPUT0" if model.startswith("onnx") else "INPUT__0"
    failures: list[str] = []
    before = _counts(server, model)

    def client(index: int) -> None:
        for round_ in range(6):
            a = np.full(4, index * 100 + round_, dtype=np.float32)
            total = _infer(server, "http", model, first, a)[0]
            if not np.array_equal(total, a + B):
                failures.append(f"client {index} round {round_}: {total}")

    threads = [threading.Thread(target=client, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    after = _counts(server, model)
    assert (after[0] - before[0], after[1] - before[1]) == (48, 48)  # one execution each: no dynamic batcher


def _counts(server: ServerProcess, model: str) -> tuple[int, int]:
    """The model's inference and execution counts."""
    [stats] = httpclient.InferenceServerClient(server.http).get_inference_statistics(model)["model_stats"]
    return int(stats["inference_count"]), int(stats["execution_count"])


def test_isolated_models_have_a_worker_process_and_in_process_ones_none(server: ServerProcess) -> None:
    workers = _workers(server)
    assert {"onnx_isolated", "pt_isolated"} <= set(workers)
    assert not {"onnx_in_process", "pt_in_process"} & set(workers)


@pytest.mark.parametrize("model", ["onnx_isolated", "pt_isolated"])
def test_a_killed_worker_is_started_again_and_the_model_keeps_serving(server: ServerProcess, model: str) -> None:
    first = "INPUT0" if model.startswith("onnx") else "INPUT__0"
    old = _workers(server)[model]
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = _workers(server).get(model)
        if new is not None and new != old:
            try:
                _infer(server, "http", model, first)
                break
            except Exception:  # the new worker may still be starting: its instance answers UNAVAILABLE until then
                pass
        time.sleep(0.1)
    else:
        pytest.fail(f"the worker of '{model}' was not started again")
    np.testing.assert_allclose(_infer(server, "grpc", model, first)[0], A + B, rtol=1e-6)
    assert http_request(server, "GET", f"/v2/models/{model}/ready")[0] == 200
    server.wait_for_log("starting its stub process again")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["pt_bf16", "pt_bf16_in_process"])
def test_bf16_tensors_reach_torch_as_bfloat16_and_come_back(server: ServerProcess, protocol: str, model: str) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    module: Any = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.http if protocol == "http" else server.grpc)
    data = np.array([1.5, -2.0, 0.25, 3.0], dtype=ml_dtypes.bfloat16)
    tensor = module.InferInput("INPUT__0", [4], "BF16")
    tensor.set_data_from_numpy(data)
    got = client.infer(model, [tensor]).as_numpy("OUTPUT__0")
    expected = (torch.tensor(data.astype(np.float32), dtype=torch.bfloat16) * 2).float().numpy()
    np.testing.assert_array_equal(np.asarray(got).astype(np.float32), expected)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_bf16_output_configured_as_another_type_fails_with_the_types(server: ServerProcess, protocol: str) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    module: Any = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.http if protocol == "http" else server.grpc)
    tensor = module.InferInput("INPUT__0", [4], "BF16")
    tensor.set_data_from_numpy(np.ones(4, dtype=ml_dtypes.bfloat16))
    with pytest.raises(InferenceServerException) as info:
        client.infer("pt_bf16_wrong", [tensor])
    assert info.value.message() == (
        "configuration expects datatype TYPE_FP32 for output 'OUTPUT__0', model provides TYPE_BF16"
    )
    assert http_request(server, "GET", "/v2/health/live")[0] == 200


def _serves(server: ServerProcess, model: str) -> bool:
    try:
        _infer(server, "http", model)
    except InferenceServerException:
        return False
    return True


@pytest.mark.parametrize("model", ["pt_mismatch", "pt_mismatch_in_process"])
def test_a_config_that_does_not_fit_forward_fails_the_same_way_in_a_worker_and_in_process(
    server: ServerProcess, model: str
) -> None:
    """In a worker, torch loads the archive and the config is bound to forward() there (the server never hands the
    archive to torch): the refusal is the same error as in process."""
    status, _, body = http_request(server, "POST", "/v2/repository/index")
    entries = {entry["name"]: entry for entry in json.loads(body)}
    assert (entries[model]["state"], entries[model]["reason"]) == (
        "UNAVAILABLE",
        f"unable to load model '{model}', configuration expects 1 inputs, model provides 2",
    )
    assert model not in _workers(server)
    assert http_request(server, "GET", "/v2/health/live")[0] == 200


def test_an_in_process_value_the_backend_does_not_know_is_refused_by_name(server: ServerProcess) -> None:
    status, _, body = http_request(server, "POST", "/v2/repository/index")
    entries = {entry["name"]: entry for entry in json.loads(body)}
    assert entries["onnx_inline"]["state"] == "UNAVAILABLE"
    assert entries["onnx_inline"]["reason"] == (
        "parameter 'SEAWALL_IN_PROCESS' of model 'onnx_inline' must be \"true\" or \"false\" for the onnxruntime "
        "backend"
    )
    assert http_request(server, "GET", "/v2/health/live")[0] == 200


def test_a_worker_that_keeps_crashing_uses_up_the_crash_budget_and_its_model_goes_unavailable(tmp_path: Path) -> None:
    """The python backend's budget: more than 3 crashes in 60 s and the instance stays down; the server lives on."""
    m.write(tmp_path, "onnx_isolated", m.add_sub(["n"]), m.ADD_SUB_CONFIG.format(name="onnx_isolated", extra=""))
    server = start_seawall(repository=tmp_path, timeout=STARTUP_S)
    try:
        for _ in range(4):
            old = _workers(server)["onnx_isolated"]
            os.kill(old, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and "crashed 4 times" not in server.log():
                new = _workers(server).get("onnx_isolated")
                if new is not None and new != old and _serves(server, "onnx_isolated"):
                    break  # started again and initialized: the next kill is a crash, not a failed start
                time.sleep(0.05)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and http_request(server, "GET", "/v2/models/onnx_isolated/ready")[0] == 200:
            time.sleep(0.05)
        assert http_request(server, "GET", "/v2/models/onnx_isolated/ready")[0] != 200
        server.wait_for_log("model instance 'onnx_isolated_0' crashed 4 times in 60 s; the instance stays down")
        assert http_request(server, "GET", "/v2/health/live")[0] == 200
    finally:
        server.stop()
