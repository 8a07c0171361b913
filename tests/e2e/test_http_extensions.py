"""Triton's logging, trace, shared-memory and classification extensions over HTTP, end to end."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

from tests.harness import EXAMPLES, TEST_MODELS, ServerProcess, start_seawall
from tests.harness import http_request as request

FORGED = "E1231 00:00:00.000000 1 forged.py:1] FORGED"


@pytest.fixture(scope="module")
def plain() -> Iterator[ServerProcess]:
    """Default flags: client shared memory off."""
    process = start_seawall()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def shm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("extensions")
    for source in (EXAMPLES / "add_sub", TEST_MODELS / "slow", TEST_MODELS / "classifier"):
        shutil.copytree(source, root / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    process = start_seawall("--allow-client-shm=true", repository=root)
    try:
        yield process
    finally:
        process.stop()


def _call(server: ServerProcess, method: str, path: str, document: Any = None) -> tuple[int, Any]:
    body = None if document is None else json.dumps(document).encode()
    status, _, reply = request(server, method, path, body)
    return status, json.loads(reply) if reply else None


# ------------------------------------------------------------------------------------------- logging


def test_log_settings_round_trip(plain: ServerProcess) -> None:
    status, settings = _call(plain, "GET", "/v2/logging")
    assert (status, settings) == (
        200,
        {
            "log_file": "",
            "log_info": True,
            "log_warning": True,
            "log_error": True,
            "log_verbose_level": 0,
            "log_format": "default",
        },
    )
    changed = _call(plain, "POST", "/v2/logging", {"log_verbose_level": 1, "log_info": None})
    assert changed == (200, {**settings, "log_verbose_level": 1})
    assert _call(plain, "GET", "/v2/logging") == changed
    assert _call(plain, "POST", "/v2/logging", {"log_verbose_level": 0}) == (200, settings)


@pytest.mark.parametrize(
    ("document", "status", "message"),
    [
        (
            {"log_file": "/tmp/x", "log_verbose_level": 3},
            501,
            "log file location can not be updated through network protocol",
        ),
        ({"log_info": "yes"}, 400, "expect boolean for 'log_info'"),
        ({"log_verbose_level": -1}, 400, "expect int32 for 'log_verbose_level'"),
        ({"log_format": "json"}, 400, "invalid argument for --log_format, got: 'json'"),
        ([], 400, "failed to parse the request JSON buffer: expected a JSON object"),
    ],
)
def test_log_settings_refusals_change_nothing(plain: ServerProcess, document: Any, status: int, message: str) -> None:
    before = _call(plain, "GET", "/v2/logging")
    assert _call(plain, "POST", "/v2/logging", document) == (status, {"error": message})
    assert _call(plain, "GET", "/v2/logging") == before


def test_newlines_in_requests_never_forge_a_log_line(plain: ServerProcess) -> None:
    _call(plain, "POST", "/v2/logging", {"log_verbose_level": 1})
    try:
        request(plain, "GET", "/v2/models/evil%0A" + FORGED.replace(" ", "%20") + "/ready")
        request(plain, "POST", "/v2/models/evil%0Aname/infer", b'{"inputs":[]}')
        bad_input = {"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [1, 2]}
        _call(plain, "POST", "/v2/models/add_sub/infer", {"id": "x\n" + FORGED, "inputs": [bad_input]})
        _call(plain, "POST", "/v2/models/add_sub/infer", {"id": "x\r\n" + FORGED, "inputs": "no"})
        _call(plain, "GET", "/v2/models/x%0D%0A" + FORGED.replace(" ", "%20") + "/trace/setting")
    finally:
        _call(plain, "POST", "/v2/logging", {"log_verbose_level": 0})
    plain.wait_for_log("[request id: x\\nE1231 00:00:00.000000 1 forged.py:1] FORGED]")
    assert not any(line.startswith(FORGED) for line in plain.lines)
    assert all(not line.strip().startswith("FORGED") for line in plain.lines)


# --------------------------------------------------------------------------------------------- trace

TRACE_DEFAULTS = {
    "trace_level": ["OFF"],
    "trace_rate": "1000",
    "trace_count": "-1",
    "log_frequency": "0",
    "trace_file": "",
    "trace_mode": "triton",
}


def test_trace_settings_round_trip(plain: ServerProcess) -> None:
    assert _call(plain, "GET", "/v2/trace/setting") == (200, TRACE_DEFAULTS)
    assert _call(plain, "POST", "/v2/models/add_sub/trace/setting", {"trace_count": "5"}) == (
        200,
        {**TRACE_DEFAULTS, "trace_count": "5"},
    )
    assert _call(plain, "GET", "/v2/trace/setting") == (200, TRACE_DEFAULTS)  # a model override only
    assert _call(plain, "POST", "/v2/trace/setting", {"trace_rate": "50", "trace_level": ["OFF"]}) == (
        200,
        {**TRACE_DEFAULTS, "trace_rate": "50"},
    )
    assert _call(plain, "GET", "/v2/models/add_sub/trace/setting") == (
        200,
        {**TRACE_DEFAULTS, "trace_rate": "50", "trace_count": "5"},
    )
    assert _call(plain, "POST", "/v2/models/add_sub/trace/setting", {"trace_count": None}) == (
        200,
        {**TRACE_DEFAULTS, "trace_rate": "50"},
    )
    assert _call(plain, "POST", "/v2/trace/setting", {"trace_rate": "1000"})[0] == 200


@pytest.mark.parametrize(
    ("path", "document", "status", "message"),
    [
        (
            "/v2/trace/setting",
            {"trace_file": "/tmp/x", "trace_level": ["TIMESTAMPS"]},
            501,
            "trace file location can not be updated through network protocol",
        ),
        (
            "/v2/models/add_sub/trace/setting",
            {"trace_file": "/tmp/x"},
            501,
            "trace file location can not be updated through network protocol",
        ),
        ("/v2/models/nope/trace/setting", {"trace_rate": "1"}, 400, "Request for unknown model : nope"),
        (
            "/v2/trace/setting",
            {"trace_rate": 50},
            400,
            "Unable to parse 'trace_rate': attempt to access JSON non-string as string",
        ),
        ("/v2/trace/setting", {"trace_rate": "abc"}, 400, "Unable to parse 'trace_rate', got: abc"),
        (
            "/v2/trace/setting",
            {"trace_level": ["OFF", "TIMESTAMPS"]},
            400,
            "Expect only one trace level 'OFF' is specified",
        ),
        (
            "/v2/trace/setting",
            {"trace_level": ["TIMESTAMPS"]},
            400,
            "Attempting to set invalid trace setting :trace file name is not given",
        ),
        ("/v2/trace/setting", None, 400, "failed to parse the request JSON buffer: The document is empty."),
    ],
)
def test_trace_refusals_change_nothing(
    plain: ServerProcess, path: str, document: Any, status: int, message: str
) -> None:
    assert _call(plain, "POST", path, document) == (status, {"error": message})
    assert _call(plain, "GET", "/v2/trace/setting") == (200, TRACE_DEFAULTS)


# ------------------------------------------------------------------------------------- shared memory

_DISABLED = "client shared memory is disabled on this server (start it with --allow-client-shm)"


def test_shared_memory_is_refused_without_the_flag(plain: ServerProcess) -> None:
    register = {"key": "/seawall_test_x", "offset": 0, "byte_size": 16}
    assert _call(plain, "POST", "/v2/systemsharedmemory/region/x/register", register) == (501, {"error": _DISABLED})
    assert _call(plain, "GET", "/v2/systemsharedmemory/status") == (501, {"error": _DISABLED})
    shm_input = {"shared_memory_region": "x", "shared_memory_byte_size": 16}
    inputs = [{"name": n, "datatype": "FP32", "shape": [4], "parameters": shm_input} for n in ("INPUT0", "INPUT1")]
    assert _call(plain, "POST", "/v2/models/add_sub/infer", {"inputs": inputs}) == (501, {"error": _DISABLED})
    assert _call(plain, "GET", "/v2/cudasharedmemory/status") == (200, [])


@pytest.fixture
def region(shm_server: ServerProcess) -> Iterator[Any]:
    key = f"/sw_http_test_{id(shm_server)}"
    handle = shm.create_shared_memory_region("data", key, 64)
    yield key, handle
    request(shm_server, "POST", "/v2/systemsharedmemory/unregister")
    shm.destroy_shared_memory_region(handle)


def test_inputs_and_outputs_in_shared_memory(shm_server: ServerProcess, region: Any) -> None:
    key, handle = region
    client = httpclient.InferenceServerClient(shm_server.http)
    shm.set_shared_memory_region(handle, [np.arange(4, dtype=np.float32), np.full(4, 10, dtype=np.float32)])
    client.register_system_shared_memory("data", key, 64)
    assert client.get_system_shared_memory_status() == [{"name": "data", "key": key, "offset": 0, "byte_size": 64}]
    assert client.get_system_shared_memory_status("data")[0]["byte_size"] == 64
    inputs = [httpclient.InferInput("INPUT0", [4], "FP32"), httpclient.InferInput("INPUT1", [4], "FP32")]
    inputs[0].set_shared_memory("data", 16)
    inputs[1].set_shared_memory("data", 16, offset=16)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0"), httpclient.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("data", 16, offset=32)
    outputs[1].set_shared_memory("data", 16, offset=48)
    result = client.infer("add_sub", inputs, outputs=outputs)
    assert result.get_response()["outputs"] == [
        {"name": "OUTPUT0", "datatype": "FP32", "shape": [4]},
        {"name": "OUTPUT1", "datatype": "FP32", "shape": [4]},
    ]
    added = shm.get_contents_as_numpy(handle, np.float32, [4], offset=32)
    subtracted = shm.get_contents_as_numpy(handle, np.float32, [4], offset=48)
    np.testing.assert_array_equal(added, np.arange(4) + 10)
    np.testing.assert_array_equal(subtracted, np.arange(4) - 10)
    client.unregister_system_shared_memory("data")
    assert client.get_system_shared_memory_status() == []
    client.close()


def _shm_infer(offset: int, size: int) -> dict[str, Any]:
    first = {"shared_memory_region": "data", "shared_memory_offset": offset, "shared_memory_byte_size": size}
    second = {"shared_memory_region": "data", "shared_memory_byte_size": 16}
    return {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [4], "parameters": first},
            {"name": "INPUT1", "datatype": "FP32", "shape": [4], "parameters": second},
        ]
    }


@pytest.mark.parametrize(
    ("path", "document", "status", "message"),
    [
        (
            "/v2/models/add_sub/infer",
            _shm_infer(64, 16),
            400,
            "Invalid offset + byte size for shared memory region: 'data'",
        ),
        ("/v2/models/add_sub/infer", _shm_infer(80, 16), 400, "Invalid offset for shared memory region: 'data'"),
        ("/v2/models/add_sub/infer", _shm_infer(2**64 - 1, 16), 400, "Invalid offset for shared memory region: 'data'"),
        (
            "/v2/models/add_sub/infer",
            _shm_infer(16, 2**64 - 1),
            400,
            "Invalid offset + byte size for shared memory region: 'data'",
        ),
        (
            "/v2/systemsharedmemory/region/evil/register",
            {"key": "triton_python_backend_shm_region_x", "byte_size": 16},
            400,
            "failed to register shared memory region 'evil': invalid key",
        ),
        (
            "/v2/systemsharedmemory/region/evil/register",
            {"key": "///triton_python_backend_shm_region_x", "byte_size": 16},
            400,
            "failed to register shared memory region 'evil': invalid key",
        ),
        (
            "/v2/systemsharedmemory/region/evil/register",
            {"key": "/sw_absent_key", "offset": 2**64 - 3, "byte_size": 2},
            400,
            "Unable to open shared memory region: 'evil'",
        ),
        (
            "/v2/systemsharedmemory/region/evil/register",
            {"byte_size": 4},
            400,
            "Shared memory register request has no 'key' field",
        ),
        (
            "/v2/systemsharedmemory/region/evil/register",
            {"key": "k"},
            400,
            "Shared memory register request has no 'byte_size' field",
        ),
        (
            "/v2/systemsharedmemory/region/evil/register",
            {"key": "k", "byte_size": -1},
            400,
            "Unable to parse 'byte_size': attempt to access JSON non-unsigned-integer as unsigned-integer",
        ),
        (
            "/v2/systemsharedmemory/region/evil/register",
            {"key": 5, "byte_size": 4},
            400,
            "Unable to parse 'key': attempt to access JSON non-string as string",
        ),
        (
            "/v2/systemsharedmemory/register",
            {"key": "k", "byte_size": 4},
            400,
            "'region name' is necessary to register system shared memory region",
        ),
        (
            "/v2/cudasharedmemory/region/gpu/register",
            {"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 4},
            501,
            "failed to register CUDA shared memory region 'gpu': GPUs not supported",
        ),
    ],
)
def test_shared_memory_refusals(
    shm_server: ServerProcess, region: Any, path: str, document: Any, status: int, message: str
) -> None:
    key, _ = region
    assert (
        _call(shm_server, "POST", "/v2/systemsharedmemory/region/data/register", {"key": key, "byte_size": 64})[0]
        == 200
    )
    assert _call(shm_server, "POST", path, document) == (status, {"error": message})
    assert _call(shm_server, "GET", "/v2/systemsharedmemory/status")[1] == [
        {"name": "data", "key": key, "offset": 0, "byte_size": 64}
    ]
    assert request(shm_server, "GET", "/v2/health/ready")[0] == 200


def test_unregister_while_a_request_uses_the_region_is_safe(shm_server: ServerProcess, region: Any) -> None:
    key, handle = region
    shm.set_shared_memory_region(handle, [np.arange(8, dtype=np.float32)])
    assert (
        _call(shm_server, "POST", "/v2/systemsharedmemory/region/data/register", {"key": key, "byte_size": 64})[0]
        == 200
    )
    params = {"shared_memory_region": "data", "shared_memory_byte_size": 32}
    document = {
        "parameters": {"sleep_ms": 500},
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 8], "parameters": params}],
        "outputs": [{"name": "OUTPUT0"}],
    }
    replies: list[tuple[int, Any]] = []
    worker = threading.Thread(
        target=lambda: replies.append(_call(shm_server, "POST", "/v2/models/slow/infer", document))
    )
    worker.start()
    time.sleep(0.2)
    assert _call(shm_server, "POST", "/v2/systemsharedmemory/region/data/unregister") == (200, None)
    assert _call(shm_server, "GET", "/v2/systemsharedmemory/status") == (200, [])
    worker.join(10)
    status, body = replies[0]
    assert status == 200 and body["outputs"][0]["data"] == list(range(8))  # read before the unregister
    assert request(shm_server, "GET", "/v2/health/ready")[0] == 200


# ------------------------------------------------------------------------------------- classification


@pytest.mark.parametrize("binary", [False, True])
def test_classification_with_labels(shm_server: ServerProcess, binary: bool) -> None:
    client = httpclient.InferenceServerClient(shm_server.http)
    tensor = httpclient.InferInput("INPUT0", [4], "FP32")
    tensor.set_data_from_numpy(np.array([0.1, 0.9, 0.3, 0.2], dtype=np.float32))
    wanted = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary, class_count=2)
    result = client.infer("classifier", [tensor], outputs=[wanted])
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("OUTPUT0").tolist()]
    assert labels == ["0.900000:1:banana", "0.300000:2:cherry"]
    assert result.get_output("OUTPUT0")["datatype"] == "BYTES"
    too_many = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary, class_count=9)
    assert len(client.infer("classifier", [tensor], outputs=[too_many]).as_numpy("OUTPUT0")) == 4
    client.close()


def test_classification_and_shared_memory_on_one_output_is_refused(shm_server: ServerProcess) -> None:
    params = {"shared_memory_region": "r", "shared_memory_byte_size": 16, "classification": 1}
    document = {
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}],
        "outputs": [{"name": "OUTPUT0", "parameters": params}],
    }
    assert _call(shm_server, "POST", "/v2/models/classifier/infer", document) == (
        400,
        {"error": "Output can't set both 'shared_memory_region' and 'classification'"},
    )


def test_timeout_parameter_is_passed_to_the_core(shm_server: ServerProcess) -> None:
    def slow(parameters: dict[str, Any]) -> dict[str, Any]:
        data = {"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1]}
        return {"parameters": parameters, "inputs": [data], "outputs": [{"name": "OUTPUT0"}]}

    def queued_behind_a_busy_instance(wait: float) -> tuple[int, Any]:
        replies: list[tuple[int, Any]] = []
        # the instance takes up to two batches at once (the stub pipelines them): keep three busy
        busy = [
            threading.Thread(
                target=lambda: replies.append(
                    _call(shm_server, "POST", "/v2/models/slow/infer", slow({"sleep_ms": 400}))
                )
            )
            for _ in range(3)
        ]
        for thread in busy:
            thread.start()
        time.sleep(wait)  # the busy requests have reached the instance (longer waits when the machine is loaded)
        expired = _call(shm_server, "POST", "/v2/models/slow/infer", slow({"timeout": 1000}))  # µs
        for thread in busy:
            thread.join(10)
        assert [status for status, _ in replies] == [200, 200, 200]
        return expired

    outcomes = []
    for wait in (0.2, 0.4, 0.6):
        outcomes.append(queued_behind_a_busy_instance(wait))
        if outcomes[-1][0] != 200:
            break
    assert outcomes[-1] == (503, {"error": "Request timeout expired"}), outcomes
    assert _call(shm_server, "POST", "/v2/models/slow/infer", slow({"timeout": 10_000_000}))[0] == 200
    assert _call(shm_server, "POST", "/v2/models/slow/infer", slow({"timeout": -1})) == (
        400,
        {"error": "Unable to parse 'timeout': expected a non-negative integer"},
    )
