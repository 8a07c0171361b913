"""BLS end to end: python models that call other models (`InferenceRequest.exec` / `async_exec`) and control the
repository (`pb_utils.is_model_ready` / `load_model` / `unload_model`), driven with tritonclient over HTTP and
gRPC. The test models (tests/models/bls, bls_async) answer the callee's outputs, or its error as
"code=<c> message=<m>", so each test checks exactly what the call returned in the model.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, start_seawall, stub_pid

X = np.arange(4, dtype=np.float32)
Y = np.ones(4, dtype=np.float32)
DEADLOCK = (
    "BLS call to model '{0}' from its own execution cannot run: every instance of model '{0}' is busy (waiting "
    "would deadlock); add instances to its instance_group"
)


def repository(root: Path) -> Path:
    """add_sub and identity (examples), bls, bls_async and slow (tests), and variants of bls."""
    for source in (
        EXAMPLES / "add_sub",
        EXAMPLES / "identity",
        *(TEST_MODELS / m for m in ("bls", "bls_async", "slow")),
    ):
        shutil.copytree(source, root / source.name)
    shutil.copytree(TEST_MODELS / "write_inputs", root / "write_inputs")
    for name, extra in (("bls_handed", ""), ("bls_handed_inprocess", IN_PROCESS)):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.py").write_text(HANDED)
        (root / name / "config.pbtxt").write_text(HANDED_CONFIG.format(name=name) + extra)
    _variant(root, "bls_pair", "instance_group [ { kind: KIND_CPU, count: 2 } ]")
    _variant(root, "bls_inprocess", IN_PROCESS)
    # one hostile model per forged inline call too: an instance is started again at most 3 times a minute
    for name in ("bls_hostile", *(_hostile_model(forge) for forge in INLINE_FORGES)):
        hostile = root / name
        (hostile / "1").mkdir(parents=True)
        (hostile / "1" / "model.py").write_text(HOSTILE)
        (hostile / "config.pbtxt").write_text((root / "bls" / "config.pbtxt").read_text().replace('"bls"', f'"{name}"'))
    return root


IN_PROCESS = 'parameters { key: "SEAWALL_IN_PROCESS" value: { string_value: "true" } }'

#: calls write_inputs (OUTPUT0 = INPUT0 * 2 + 1, written into its input array) with arange(count) INT32, then
#: writes into the call's output: answers [count, 1 if the output was exact, its last element + 1]
HANDED = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            count = int(pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()[0])
            sent = np.arange(count, dtype=np.int32)
            call = pb_utils.InferenceRequest(
                model_name="write_inputs", requested_output_names=["OUTPUT0"], inputs=[pb_utils.Tensor("INPUT0", sent)]
            )
            reply = call.exec()
            if reply.has_error():
                raise pb_utils.TritonModelException(reply.error().message())
            out = pb_utils.get_output_tensor_by_name(reply, "OUTPUT0").as_numpy()
            exact = np.array_equal(out, sent * 2 + 1)
            out += 1
            summary = np.array([count, int(exact), int(out[-1])], dtype=np.int32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", summary)]))
        return responses
"""
HANDED_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 3 ] }} ]
"""

INLINE_FORGES = ("inline-long", "inline-big", "inline-garbage", "inline-short", "inline-outside")


def _hostile_model(forge: str) -> str:
    return f"bls_hostile_{forge.replace('-', '_')}" if forge in INLINE_FORGES else "bls_hostile"


#: a model that forges BLS messages on its stub's channel (model code runs in the stub: it can)
HOSTILE = """
import base64
import json
import os

import triton_python_backend_utils as pb_utils
from seawall.backends.python import ipc
from seawall.backends.python.messages import Call, RequestHeader


class TritonPythonModel:
    def execute(self, requests):
        how = json.loads(requests[0].parameters()).get("forge", "")
        if how:
            channel = pb_utils._calls[0]._channel
            descriptor = ["INPUT0", "FP32", [4], 0 if not how.endswith("outside") else 4096, 16]
            if how.startswith("inline"):  # the bytes in the message itself: no region, and a lie about them
                size, data = {
                    "inline-long": (8192, b"x" * 8192),  # more than a message may carry inline
                    "inline-big": (8192, b"x" * 16),  # a size above the inline limit
                    "inline-short": (64, b"x" * 16),  # fewer bytes than it says
                    "inline-outside": (16, b"x" * 16),  # a tensor past the bytes it sent
                }.get(how, (16, None))
                text = "!!not base64!!" if data is None else base64.b64encode(data).decode()
                header = RequestHeader("", [descriptor], [], 0, 0, {})
                channel.send(Call(999, "add_sub", "", header, size, 0, text))
                channel.wait_answer(999)
                return [pb_utils.InferenceResponse([]) for _ in requests]
            if how == "unsealed":
                fd = os.memfd_create("x")
                os.ftruncate(fd, 64)
                channel.send_fd(b"c999", fd)
            elif how == "outside":
                channel.send_fd(b"c999", ipc.sealed_region([0], [b"x" * 64], 64))
            channel.send(Call(999, "add_sub", "", RequestHeader("", [descriptor], [], 0, 0, {}), 64, 0))
            channel.wait_answer(999)
        return [pb_utils.InferenceResponse([]) for _ in requests]
"""


def _variant(root: Path, name: str, extra: str) -> None:
    shutil.copytree(root / "bls", root / name)
    config = (root / name / "config.pbtxt").read_text().replace('name: "bls"', f'name: "{name}"')
    if "instance_group" in extra:
        config = config.replace("instance_group [ { kind: KIND_CPU, count: 1 } ]", extra)
    else:
        config += extra + "\n"
    (root / name / "config.pbtxt").write_text(config)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_seawall(repository=repository(tmp_path_factory.mktemp("bls")))
    yield process
    process.stop()


def infer(
    server: ServerProcess, protocol: str, model: str, parameters: dict[str, object], x: np.ndarray = X
) -> tuple[np.ndarray, np.ndarray]:
    """OUTPUT0 and OUTPUT1 of `model` (raises InferenceServerException with the model's error)."""
    module = httpclient if protocol == "http" else grpcclient
    if protocol == "http":
        client = httpclient.InferenceServerClient(server.http, network_timeout=120)
    else:
        client = grpcclient.InferenceServerClient(server.grpc)
    try:
        inputs = [module.InferInput("INPUT0", list(x.shape), "FP32"), module.InferInput("INPUT1", [4], "FP32")]
        inputs[0].set_data_from_numpy(x)
        inputs[1].set_data_from_numpy(Y)
        if protocol == "http":
            result = client.infer(model, inputs, parameters=parameters)
        else:  # bounded: a hang fails the test instead of the suite
            result = client.infer(model, inputs, parameters=parameters, client_timeout=120)
        return result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")
    finally:
        client.close()


def error_of(server: ServerProcess, protocol: str, model: str, parameters: dict[str, object]) -> str:
    with pytest.raises(InferenceServerException) as caught:
        infer(server, protocol, model, parameters)
    assert server.is_ready()
    return str(caught.value.message())


PROTOCOLS = pytest.mark.parametrize("protocol", ["http", "grpc"])


@PROTOCOLS
def test_a_model_calls_add_sub(server: ServerProcess, protocol: str) -> None:
    total, difference = infer(server, protocol, "bls", {})
    assert total.tolist() == (X + Y).tolist() and difference.tolist() == (X - Y).tolist()
    total, difference = infer(server, protocol, "bls", {"outputs": "OUTPUT1", "version": 1})
    assert total is None and difference.tolist() == (X - Y).tolist()  # only the requested output came back


def test_calls_count_in_the_callees_statistics(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.http)
    try:

        def count() -> int:
            stats = client.get_inference_statistics("add_sub")["model_stats"][0]
            return int(stats["inference_stats"]["success"]["count"])

        before = count()
        infer(server, "http", "bls_async", {"calls": 3})
        assert count() == before + 3
    finally:
        client.close()


def test_a_model_may_write_into_the_outputs_of_a_call(server: ServerProcess) -> None:
    total, difference = infer(server, "grpc", "bls", {"inplace": True})
    assert total.tolist() == (X + Y + 1).tolist() and difference.tolist() == (X - Y + 1).tolist()


@PROTOCOLS
def test_an_async_model_awaits_several_calls(server: ServerProcess, protocol: str) -> None:
    total, difference = infer(server, protocol, "bls_async", {"calls": 3})
    assert total.tolist() == (3 * (X + Y)).tolist() and difference.tolist() == (X - Y).tolist()


def test_an_async_model_that_raises_fails_its_batch_and_keeps_serving(server: ServerProcess) -> None:
    assert error_of(server, "grpc", "bls_async", {"raise": True}) == (
        "Failed to process the request(s) for model 'bls_async_0_0', message: ValueError: boom"
    )
    assert infer(server, "grpc", "bls_async", {})[0].tolist() == (X + Y).tolist()


def test_concurrent_requests_of_an_async_model_overlap_their_awaits(server: ServerProcess) -> None:
    """Each request waits (after its call) until two requests are inside execute() at once: with one instance
    that happens only if the stub runs the second execute() while the first awaits (Triton does not:
    server#7888)."""
    results: list[object] = []

    def one() -> None:
        try:
            results.append(infer(server, "grpc", "bls_async", {"barrier": 2})[0].tolist())
        except InferenceServerException as exc:
            results.append(exc.message())

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [(X + Y).tolist()] * 2


@PROTOCOLS
@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (
            {"target": "missing"},
            "Model missing - Error when running inference: Failed for execute the inference request. "
            "Model 'missing' is not ready.",
        ),
        (
            {"version": 7},
            "Model add_sub - Error when running inference: Failed for execute the inference request. "
            "Model 'add_sub' is not ready.",
        ),
        (
            {"rename": "INPUT1:WRONG"},
            "Model add_sub - Error when running inference: unexpected inference input 'WRONG' for model 'add_sub'",
        ),
        (
            {"drop": "INPUT1"},
            "Model add_sub - Error when running inference: [request id: <id_unknown>] expected 2 inputs but got 1 "
            "inputs for model 'add_sub'. Got input(s) ['INPUT0'], but missing required input(s) ['INPUT1']. "
            "Please provide all required input(s).",
        ),
        (
            {"outputs": "NOPE"},
            "Model add_sub - Error when running inference: unexpected inference output 'NOPE' for model 'add_sub'",
        ),
    ],
)
def test_a_failed_call_is_an_error_response_with_tritons_message(
    server: ServerProcess, protocol: str, parameters: dict[str, object], message: str
) -> None:
    assert error_of(server, protocol, "bls", parameters) == f"code=1 message={message}"
    assert infer(server, protocol, "bls", {})[0].tolist() == (X + Y).tolist()  # the model keeps serving


@PROTOCOLS
def test_a_call_that_waits_past_its_timeout_fails(server: ServerProcess, protocol: str) -> None:
    """slow is kept busy by a client; the call's queue timeout (100 ms) expires before slow is free."""
    parameters = {"target": "slow", "batch": True, "drop": "INPUT1", "outputs": "OUTPUT0", "bls_timeout_us": 100_000}
    marker = f"slow busy for {protocol}"
    busy = threading.Thread(target=_keep_slow_busy, args=(server, marker))
    busy.start()
    try:
        server.wait_for_log(marker)  # slow's only instance is executing the busy request
        assert error_of(server, protocol, "bls", parameters) == "code=4 message=Request timeout expired"
    finally:
        busy.join(60)


def _keep_slow_busy(server: ServerProcess, marker: str) -> None:
    client = httpclient.InferenceServerClient(server.http, network_timeout=60)
    tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(X.reshape(1, 4))
    client.infer("slow", [tensor], parameters={"sleep_ms": 3000, "log": marker})
    client.close()


@PROTOCOLS
def test_a_model_calling_itself_with_every_instance_busy_fails_at_once(server: ServerProcess, protocol: str) -> None:
    assert error_of(server, protocol, "bls", {"target": "bls"}) == "code=4 message=" + DEADLOCK.format("bls")
    assert infer(server, protocol, "bls", {})[0].tolist() == (X + Y).tolist()


def test_two_models_calling_each_other_fail_at_once(server: ServerProcess) -> None:
    """bls → bls_async → bls: bls's only instance is busy with the first call."""
    inner = "code=4 message=" + DEADLOCK.format("bls")
    assert error_of(server, "grpc", "bls", {"target": "bls_async", "inner_target": "bls"}) == f"code=1 message={inner}"


def test_a_model_with_an_idle_instance_may_call_itself(server: ServerProcess) -> None:
    total, _ = infer(server, "http", "bls_pair", {"target": "bls_pair", "inner_target": "add_sub"})
    assert total.tolist() == (X + Y).tolist()
    inner = "code=4 message=" + DEADLOCK.format("bls_pair")  # a third level finds both instances busy
    parameters = {"target": "bls_pair", "inner_target": "bls_pair", "inner_inner_target": "add_sub"}
    assert error_of(server, "http", "bls_pair", parameters) == f"code=1 message={inner}"


@pytest.mark.parametrize("count", [1, 1023, 1024, 1025, 4096])
def test_calls_on_both_sides_of_the_inline_limit_return_their_tensors(server: ServerProcess, count: int) -> None:
    """Up to 4 KiB (1024 FP32) a call's inputs and outputs travel inside its messages, above it in regions: the
    values come back exact either way."""
    x = np.arange(count, dtype=np.float32) - 7.5
    parameters = {"target": "identity", "batch": True, "drop": "INPUT1"}
    for protocol in ("http", "grpc"):
        output, missing = infer(server, protocol, "bls", parameters, x=x)
        assert output.tolist() == x.tolist() and missing is None
    output, _ = infer(server, "http", "bls", {**parameters, "inplace": True}, x=x)  # written into by the model
    assert output.tolist() == (x + 1).tolist()


def test_a_64_mib_tensor_goes_through_a_call(server: ServerProcess) -> None:
    count = 64 * 1024 * 1024 // 4
    summary, _ = infer(server, "grpc", "bls", {"target": "identity", "big_mib": 64, "batch": True})
    assert summary.tolist() == [count, 0, count - 1]


def _call_mappings(pid: int) -> tuple[int, int]:
    """How many sealed BLS call regions `pid` has mapped, and its shared-memory RSS in KiB."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    status = Path(f"/proc/{pid}/status").read_text()
    shared = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("RssShmem:"))
    return maps.count("seawall-python-call"), shared


def test_large_calls_leave_no_mapping_behind(server: ServerProcess) -> None:
    """Each 64 MiB call maps its sealed input region in the server; once answered, nothing may keep it mapped
    (parked scheduler workers and idle slots used to keep their last batch, one mapping per call)."""
    count = 64 * 1024 * 1024 // 4
    pid = server.process.pid
    infer(server, "http", "bls", {"target": "identity", "big_mib": 64, "batch": True})  # regions grown once
    baseline = _wait_for_no_call_mapping(pid)
    for _ in range(4):
        summary, _ = infer(server, "http", "bls", {"target": "identity", "big_mib": 64, "batch": True})
        assert summary.tolist() == [count, 0, count - 1]
    shared = _wait_for_no_call_mapping(pid)
    assert shared - baseline < 64 * 1024, f"shared RSS grew by {shared - baseline} KiB over 4 calls"
    assert server.is_ready()


def _wait_for_no_call_mapping(pid: int, timeout: float = 30) -> int:
    """Wait (bounded) until `pid` maps no call region; its shared RSS in KiB then. The reply reaches the client
    a moment before the server's call task lets the region go."""
    deadline = time.monotonic() + timeout
    while True:
        mapped, shared = _call_mappings(pid)
        if not mapped:
            return shared
        assert time.monotonic() < deadline, f"{mapped} call region(s) still mapped by the server"
        time.sleep(0.05)


def _int_infer(server: ServerProcess, model: str, values: list[int]) -> list[int]:
    client = httpclient.InferenceServerClient(server.http, network_timeout=120)
    try:
        tensor = httpclient.InferInput("INPUT0", [len(values)], "INT32")
        tensor.set_data_from_numpy(np.array(values, dtype=np.int32))
        return [int(v) for v in client.infer(model, [tensor]).as_numpy("OUTPUT0")]
    finally:
        client.close()


@pytest.mark.parametrize("caller", ["bls_handed", "bls_handed_inprocess"])
def test_large_call_tensors_are_handed_on_without_a_copy(server: ServerProcess, caller: str) -> None:
    """A stub's call of 1 MiB or more reaches the called model's stub as the caller's sealed region (mapped
    copy-on-write: the callee writes into its inputs, as Triton allows, and the caller's region stays as sealed),
    and the callee's large outputs go back as one sealed region; an in-process caller gets them as arrays it may
    write. Below, at and above the threshold the values are exact, and the callee's next batch from a client, on
    the same slot, gets its own bytes."""
    mib = 1024 * 1024 // 4
    for count in (mib - 16, mib, 3 * mib):
        assert _int_infer(server, caller, [count]) == [count, 1, 2 * (count - 1) + 2]
    callee = stub_pid(server, "write_inputs")
    handed = "seawall-python-call" in Path(f"/proc/{callee}/maps").read_text()
    assert handed == (caller == "bls_handed")  # the slot still maps the last batch's region: the caller's
    assert _int_infer(server, "write_inputs", [1, 2, 3]) == [3, 5, 7]
    assert "seawall-python-call" not in Path(f"/proc/{callee}/maps").read_text()
    assert _int_infer(server, caller, [3 * mib]) == [3 * mib, 1, 6 * mib]
    assert server.is_ready()


@PROTOCOLS
def test_exec_of_a_decoupled_call_returns_its_iterator(server: ServerProcess, protocol: str) -> None:
    """(what the iterator gives: tests/e2e/test_bls_decoupled.py)"""
    assert infer(server, protocol, "bls", {"mode": "decoupled"})[0].tolist() == [1.0]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("none_input", "Input tensor for request with id '' and model name 'add_sub' should not be empty."),
        ("empty_output", "Requested output name for request with id '' and model name 'add_sub' should not be empty."),
        ("correlation", "Correlation ID must be integer or string"),
        ("float_parameter", "Expect parameters values to have type bool/int/str, found type <class 'float'>"),
    ],
)
def test_bad_arguments_of_a_call_raise_tritons_exception(server: ServerProcess, bad: str, message: str) -> None:
    assert error_of(server, "http", "bls", {"mode": "bad", "bad": bad}) == f"exception: {message}"


def test_a_call_from_initialize_is_refused(server: ServerProcess) -> None:
    assert error_of(server, "http", "bls", {"mode": "init"}) == (
        "exception: BLS is only supported during the 'execute' function."
    )


@PROTOCOLS
def test_is_model_ready(server: ServerProcess, protocol: str) -> None:
    assert infer(server, protocol, "bls", {"mode": "ready"})[0].tolist() == [1.0]
    assert infer(server, protocol, "bls", {"mode": "ready", "version": "1"})[0].tolist() == [1.0]
    assert infer(server, protocol, "bls", {"mode": "ready", "version": "2"})[0].tolist() == [0.0]
    assert infer(server, protocol, "bls", {"mode": "ready", "target": "nope"})[0].tolist() == [0.0]
    assert error_of(server, protocol, "bls", {"mode": "ready", "version": "x"}) == (
        "exception: Failed to check model readiness: Failed to process the request for model 'bls_0_0', message: "
        "failed to get model version from specified version string 'x' (details: stol), version should be an "
        "integral value > 0"
    )


@PROTOCOLS
@pytest.mark.parametrize(("mode", "verb"), [("load", "load"), ("unload", "unload")])
def test_model_control_outside_explicit_mode_is_refused(
    server: ServerProcess, protocol: str, mode: str, verb: str
) -> None:
    assert error_of(server, protocol, "bls", {"mode": mode}) == (
        f"exception: Failed to {verb} model: Failed to process the request for model 'bls_0_0', message: "
        "explicit model load / unload is not allowed if polling is enabled"
    )
    assert infer(server, protocol, "bls", {})[0].tolist() == (X + Y).tolist()


def test_in_process_models_call_as_stubs_do(server: ServerProcess) -> None:
    total, difference = infer(server, "http", "bls_inprocess", {})
    assert total.tolist() == (X + Y).tolist() and difference.tolist() == (X - Y).tolist()
    missing = (
        "Model missing - Error when running inference: Failed for execute the inference request. "
        "Model 'missing' is not ready."
    )
    assert error_of(server, "http", "bls_inprocess", {"target": "missing"}) == f"code=1 message={missing}"
    deadlock = "code=4 message=" + DEADLOCK.format("bls_inprocess")
    assert error_of(server, "grpc", "bls_inprocess", {"target": "bls_inprocess"}) == deadlock
    assert infer(server, "grpc", "bls_inprocess", {"mode": "ready", "target": "nope"})[0].tolist() == [0.0]
    assert error_of(server, "http", "bls_inprocess", {"mode": "init"}) == (
        "exception: BLS is only supported during the 'execute' function."
    )
    summary, _ = infer(server, "http", "bls_inprocess", {"target": "identity", "big_mib": 64, "batch": True})
    assert summary.tolist() == [64 * 1024 * 1024 // 4, 0, 64 * 1024 * 1024 // 4 - 1]


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        ("unsealed", "bad call: a call region is not sealed or has the wrong size"),
        ("outside", "bad call: tensor 'INPUT0' lies outside the shared region"),
        ("no-fd", "bad call: a call's region did not arrive before the call"),
        ("inline-long", "protocol violation: bad inline tensor bytes"),
        ("inline-big", "bad call: inline tensor bytes larger than allowed"),
        ("inline-garbage", "bad call: inline tensor bytes are not base64"),
        ("inline-short", "bad call: inline tensor bytes have the wrong size"),
        ("inline-outside", "bad call: tensor 'INPUT0' lies outside the shared region"),
    ],
)
def test_a_stub_that_forges_a_call_is_stopped_and_started_again(server: ServerProcess, forge: str, reason: str) -> None:
    """An unsealed region (the stub could shrink it under the server), a tensor outside its region, a region
    that never came, inline bytes that lie about their size or are too many: the stub breaks the protocol, so it
    is stopped; its request fails, the server stays up."""
    model = _hostile_model(forge)
    with pytest.raises(InferenceServerException) as caught:
        infer(server, "http", model, {"forge": forge})
    assert caught.value.message() == f"model instance '{model}_0_0' crashed"
    for _ in range(100):  # the instance is started again (bounded wait on a loaded machine)
        try:
            infer(server, "http", model, {})
            break
        except InferenceServerException:
            threading.Event().wait(0.2)
    assert infer(server, "http", model, {}) == (None, None)
    server.wait_for_log(f"model instance '{model}_0_0': stopping its stub process: {reason}")
    assert server.is_ready()


def test_model_control_in_explicit_mode_is_audited(tmp_path: Path) -> None:
    root = repository(tmp_path)
    process = start_seawall(
        "--model-control-mode=explicit",
        "--load-model=bls",
        "--load-model=bls_inprocess",
        "--allow-unrestricted-model-repository=true",
        repository=root,
    )
    try:
        assert infer(process, "http", "bls", {"mode": "ready"})[0].tolist() == [0.0]
        assert infer(process, "http", "bls", {"mode": "load"})[0].tolist() == [1.0]
        assert infer(process, "grpc", "bls", {"mode": "ready"})[0].tolist() == [1.0]
        assert infer(process, "grpc", "bls", {})[0].tolist() == (X + Y).tolist()
        assert infer(process, "grpc", "bls", {"mode": "unload"})[0].tolist() == [1.0]
        assert infer(process, "http", "bls", {"mode": "ready"})[0].tolist() == [0.0]
        assert infer(process, "http", "bls_inprocess", {"mode": "load"})[0].tolist() == [1.0]
        assert error_of(process, "http", "bls", {"mode": "load", "target": "nope"}) == (
            "exception: Failed to load model: Failed to process the request for model 'bls_0_0', message: "
            "failed to load 'nope', failed to poll from model repository"
        )
        for _ in range(100):  # the server's log is read by another thread: wait (bounded) for the 4th line
            audit = [line for line in process.lines if "action=" in line and "caller=" in line]
            if len(audit) >= 4:
                break
            threading.Event().wait(0.05)
        assert [line[line.index("caller=") :] for line in audit] == [
            'caller="model bls/1 (python backend)" action="load" target="add_sub" result=OK',
            'caller="model bls/1 (python backend)" action="unload" target="add_sub" result=OK',
            'caller="model bls_inprocess/1 (python backend)" action="load" target="add_sub" result=OK',
            'caller="model bls/1 (python backend)" action="load" target="nope" result=NOT_FOUND',
        ]
    finally:
        process.stop()


AUTO_COMPLETE = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        try:
            pb_utils.is_model_ready("add_sub")
        except pb_utils.TritonModelException as exc:
            config.add_output({"name": "REFUSED: " + str(exc), "data_type": "TYPE_FP32", "dims": [1]})
        config.add_input({"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [1]})
        return config

    def execute(self, requests):
        return [pb_utils.InferenceResponse([]) for _ in requests]
"""


def test_auto_complete_cannot_call_the_server(tmp_path: Path) -> None:
    """auto_complete_config runs in a throw-away stub that no server serves: the call is refused in the stub."""
    (tmp_path / "ac" / "1").mkdir(parents=True)
    (tmp_path / "ac" / "1" / "model.py").write_text(AUTO_COMPLETE)
    process = start_seawall(repository=tmp_path)
    try:
        config = httpclient.InferenceServerClient(process.http).get_model_config("ac")
        assert [output["name"] for output in config["output"]] == [
            "REFUSED: Failed to check model readiness: not available in auto_complete_config"
        ]
    finally:
        process.stop()
