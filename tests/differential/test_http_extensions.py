"""Triton 2.51 and Seawall side by side over HTTP on one repository: the JSON of the repository index,
statistics, log and trace settings, shared-memory status and classification must agree; the deliberate
differences (docs/differences.md, "HTTP extensions") are asserted as differences."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.utils.shared_memory as shm

from tests.harness import EXAMPLES, TEST_MODELS, TRITON, ServerProcess, http_request, start_seawall, start_triton

_EXPLICIT = ("--model-control-mode=explicit", "--load-model=add_sub", "--load-model=classifier")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    root = tmp_path_factory.mktemp("differential_extensions")
    for source in (EXAMPLES / "add_sub", EXAMPLES / "identity", TEST_MODELS / "classifier"):
        shutil.copytree(source, root / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    triton = start_triton(root, *_EXPLICIT)
    try:
        # Triton starts explicit mode without a key; Seawall needs the opt-in (docs/differences.md)
        seawall = start_seawall(
            *_EXPLICIT, "--allow-unrestricted-model-repository=true", "--allow-client-shm=true", repository=root
        )
    except BaseException:
        triton.stop()
        raise
    yield triton, seawall
    seawall.stop()
    triton.stop()


def _call(server: ServerProcess, method: str, path: str, document: Any = None) -> tuple[int, Any]:
    body = None if document is None else json.dumps(document).encode()
    status, _, data = http_request(server, method, path, body)
    return status, json.loads(data) if data else None


def _both(pair: tuple[ServerProcess, ServerProcess], method: str, path: str, document: Any = None) -> Any:
    triton, seawall = (_call(server, method, path, document) for server in pair)
    assert triton == seawall, f"{method} {path}: Triton {triton} != Seawall {seawall}"
    return seawall


def _index(server: ServerProcess) -> list[dict[str, str]]:
    """The index once no model is in a transient state (Triton unloads asynchronously)."""
    deadline = time.monotonic() + 10
    while True:
        rows: list[dict[str, str]] = _call(server, "POST", "/v2/repository/index")[1]
        if not any(r.get("state") in ("LOADING", "UNLOADING") for r in rows) or time.monotonic() > deadline:
            return rows


def test_repository_index(pair: tuple[ServerProcess, ServerProcess]) -> None:
    triton, seawall = pair
    assert _index(triton) == _index(seawall)
    _both(pair, "POST", "/v2/repository/index", {"ready": True})
    _both(pair, "POST", "/v2/repository/models/identity/load")
    assert _index(triton) == _index(seawall)
    _both(pair, "POST", "/v2/repository/models/identity/unload")
    assert _index(triton) == _index(seawall)
    assert {"name": "identity", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"} in _index(seawall)


def _shape(value: Any) -> Any:
    """Keys and JSON types of a document, without its values."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    return type(value).__name__


def _statistics(pair: tuple[ServerProcess, ServerProcess]) -> list[Any]:
    infer = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}
    _both(pair, "POST", "/v2/models/classifier/infer", infer)
    return [_call(server, "GET", "/v2/models/classifier/stats")[1] for server in pair]


def test_statistics_have_tritons_keys_and_types(pair: tuple[ServerProcess, ServerProcess]) -> None:
    triton, seawall = _statistics(pair)
    for document in (triton, seawall):
        for entry in document["model_stats"]:
            entry["batch_stats"] = []  # compared in the next test
    assert _shape(triton) == _shape(seawall)
    all_models = [_call(server, "GET", "/v2/models/stats")[1] for server in pair]
    assert [m["name"] for m in all_models[0]["model_stats"]] == [m["name"] for m in all_models[1]["model_stats"]]
    _both(pair, "GET", "/v2/models/identity/stats")  # 400, same message


def test_statistics_batch_stats(pair: tuple[ServerProcess, ServerProcess]) -> None:
    triton, seawall = _statistics(pair)
    assert _shape(triton["model_stats"][0]["batch_stats"]) == _shape(seawall["model_stats"][0]["batch_stats"])


def test_log_settings(pair: tuple[ServerProcess, ServerProcess]) -> None:
    _both(pair, "GET", "/v2/logging")
    _both(pair, "POST", "/v2/logging", {"log_verbose_level": 1, "log_info": None})
    _both(pair, "POST", "/v2/logging", {"log_verbose_level": 0})
    _both(pair, "POST", "/v2/logging", {"log_file": "/tmp/seawall_differential.log"})  # 501


def test_trace_settings(pair: tuple[ServerProcess, ServerProcess]) -> None:
    _both(pair, "GET", "/v2/trace/setting")
    _both(pair, "GET", "/v2/models/add_sub/trace/setting")
    _both(pair, "POST", "/v2/models/add_sub/trace/setting", {"trace_rate": "7", "trace_count": "3"})
    _both(pair, "GET", "/v2/models/add_sub/trace/setting")
    _both(pair, "POST", "/v2/models/add_sub/trace/setting", {"trace_rate": None, "trace_count": None})
    _both(pair, "POST", "/v2/trace/setting", {"trace_level": ["OFF", "TIMESTAMPS"]})  # 400
    _both(pair, "POST", "/v2/trace/setting", {"trace_file": "/tmp/seawall_differential.trace"})  # 501
    _both(pair, "GET", "/v2/models/nope/trace/setting")  # 400
    _both(pair, "GET", "/v2/trace/setting")


@pytest.fixture
def region(pair: tuple[ServerProcess, ServerProcess]) -> Iterator[Any]:
    key = "/sw_differential_region"
    handle = shm.create_shared_memory_region("data", key, 64)
    shm.set_shared_memory_region(handle, [np.arange(4, dtype=np.float32), np.full(4, 10, dtype=np.float32)])
    yield key, handle
    for server in pair:
        _call(server, "POST", "/v2/systemsharedmemory/unregister")
    shm.destroy_shared_memory_region(handle)


def test_shared_memory_status_and_infer(pair: tuple[ServerProcess, ServerProcess], region: Any) -> None:
    key, _ = region
    _both(pair, "POST", "/v2/systemsharedmemory/region/data/register", {"key": key, "offset": 0, "byte_size": 64})
    _both(pair, "GET", "/v2/systemsharedmemory/status")
    _both(pair, "GET", "/v2/systemsharedmemory/region/data/status")
    _both(pair, "GET", "/v2/systemsharedmemory/region/nope/status")  # 404
    _both(pair, "GET", "/v2/cudasharedmemory/status")
    _both(pair, "GET", "/v2/cudasharedmemory/region/nope/status")  # 404
    _both(pair, "POST", "/v2/cudasharedmemory/region/nope/unregister")
    _both(pair, "POST", "/v2/systemsharedmemory/region/other/register", {"byte_size": 4})  # 400, no key
    _both(pair, "POST", "/v2/systemsharedmemory/register", {"key": key, "byte_size": 4})  # 400, no region

    def place(offset: int) -> dict[str, Any]:
        return {"shared_memory_region": "data", "shared_memory_offset": offset, "shared_memory_byte_size": 16}

    document: dict[str, Any] = {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [4], "parameters": place(0)},
            {"name": "INPUT1", "datatype": "FP32", "shape": [4], "parameters": place(16)},
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": place(32)}, {"name": "OUTPUT1"}],
    }
    _both(pair, "POST", "/v2/models/add_sub/infer", document)
    document["outputs"] = [{"name": "OUTPUT0", "parameters": {**place(32), "classification": 1}}]
    _both(pair, "POST", "/v2/models/add_sub/infer", document)  # 400
    document["outputs"] = [{"name": "OUTPUT0", "parameters": {**place(32), "binary_data": True}}]
    _both(pair, "POST", "/v2/models/add_sub/infer", document)  # 400
    document["inputs"][0]["parameters"] = place(2**64 - 1)
    document["outputs"] = []
    _both(pair, "POST", "/v2/models/add_sub/infer", document)  # 400 Invalid offset
    _both(pair, "POST", "/v2/systemsharedmemory/region/data/unregister")
    _both(pair, "GET", "/v2/systemsharedmemory/status")


@pytest.mark.parametrize("count", [0, 1, 3, 9])
def test_classification(pair: tuple[ServerProcess, ServerProcess], count: int) -> None:
    scores = [0.1, 0.9, 0.3, 0.2, 5.0, -1.0]
    document = {
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [6], "data": scores}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"classification": count}}],
    }
    _both(pair, "POST", "/v2/models/classifier/infer", document)


#: (method, path, body, Triton's answer, Seawall's answer): client mistakes Triton answers with 500, and
#: requests it answers for something it does not do.
DIFFERENCES = [
    (
        "POST",
        "/v2/trace/setting",
        {"trace_rate": 50},
        (500, "attempt to access JSON non-string as string"),
        (400, "Unable to parse 'trace_rate': attempt to access JSON non-string as string"),
    ),
    (
        "POST",
        "/v2/repository/index",
        {"ready": 1},
        (500, "attempt to access JSON non-boolean as boolean"),
        (400, "attempt to access JSON non-boolean as boolean"),
    ),
    (
        "POST",
        "/v2/repository/models/identity/load",
        {"parameters": {"x": "y"}},
        (500, "unexpected error on creating Triton parameter"),
        (400, "unrecognized load parameter 'x'."),
    ),
    (
        "POST",
        "/v2/repository/models/identity/load",
        {"parameters": {"config": 5}},
        (500, "attempt to access JSON non-string as string"),
        (400, "invalid value type for load parameter 'config': attempt to access JSON non-string as string"),
    ),
    (
        "POST",
        "/v2/repository/models/nope/unload",
        {"parameters": {"unload_dependents": 5}},
        (200, None),
        (
            400,
            "invalid value type for unload parameter 'unload_dependents': "
            "attempt to access JSON non-boolean as boolean",
        ),
    ),
    (
        "POST",
        "/v2/repository/r/index",
        None,
        (200, None),
        (501, "'repository_name' specification is not supported"),
    ),
    (
        "POST",
        "/v2/systemsharedmemory/region/x/register",
        {"key": 5, "byte_size": 4},
        (500, "attempt to access JSON non-string as string"),
        (400, "Unable to parse 'key': attempt to access JSON non-string as string"),
    ),
    (
        "POST",
        "/v2/logging",
        None,
        (500, "failed to parse the request JSON buffer: The document is empty. at 0"),
        (400, "failed to parse the request JSON buffer: The document is empty."),
    ),
    (
        "POST",
        "/v2/cudasharedmemory/region/gpu/register",
        {"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 4},
        (400, "'raw_handle' must be a valid base64 encoded cudaIpcMemHandle_t"),
        (501, "failed to register CUDA shared memory region 'gpu': GPUs not supported"),
    ),
]


@pytest.mark.parametrize(("method", "path", "document", "expected_triton", "expected_seawall"), DIFFERENCES)
def test_deliberate_differences(
    pair: tuple[ServerProcess, ServerProcess],
    method: str,
    path: str,
    document: Any,
    expected_triton: tuple[int, str | None],
    expected_seawall: tuple[int, str | None],
) -> None:
    for server, (status, message) in zip(pair, (expected_triton, expected_seawall), strict=True):
        got_status, reply = _call(server, method, path, document)
        if status == 200 and path.endswith("/index"):
            reply = None  # the index itself is compared above
        assert (got_status, reply["error"] if isinstance(reply, dict) else reply) == (status, message)
