"""The response cache in process: the local LRU's byte bound, what the key covers, the stored value's round
trip, Triton's statistics for hits and misses, and the configurations Triton refuses."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import seawall
from seawall.core.response_cache import (
    ENTRY_OVERHEAD,
    LocalCache,
    create_local_cache,
    decode_response,
    encode_response,
    request_key,
)
from seawall.core.types import Duration, InferRequest, InferResponse, RequestedOutput, Tensor
from seawall.errors import InternalError, InvalidArgumentError
from seawall.options import BackendOptions, Options, RepositoryOptions
from tests.harness import EXAMPLES


def test_the_local_cache_evicts_the_least_recently_used_entries_to_stay_within_its_size() -> None:
    cost = 3 + 10 + ENTRY_OVERHEAD
    cache = LocalCache(2 * cost)
    cache.insert(b"k-a", b"a" * 10)
    cache.insert(b"k-b", b"b" * 10)
    assert cache.lookup(b"k-a") == b"a" * 10  # now k-b is the least recently used
    cache.insert(b"k-c", b"c" * 10)
    assert (cache.lookup(b"k-b"), cache.lookup(b"k-a"), cache.lookup(b"k-c")) == (None, b"a" * 10, b"c" * 10)
    assert (len(cache), cache.used, cache.evictions, cache.hits, cache.misses) == (2, 2 * cost, 1, 3, 1)
    cache.insert(b"k-big", b"x" * (2 * cost))  # larger than the whole cache: not stored, nothing evicted
    assert (len(cache), cache.lookup(b"k-big")) == (2, None)
    cache.insert(b"k-a", b"A" * 10)  # replacing an entry does not count its old bytes twice
    assert (cache.used, cache.lookup(b"k-a")) == (2 * cost, b"A" * 10)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "Failed to initialize LocalCache: config didn't contain a valid 'size' field."),
        ({"size": "abc"}, "Failed to initialize LocalCache: 'size' must be a positive number of bytes. Got abc"),
        ({"size": "0"}, "Failed to initialize LocalCache: 'size' must be a positive number of bytes. Got 0"),
        ({"size": "-5"}, "Failed to initialize LocalCache: 'size' must be a positive number of bytes. Got -5"),
        ({"size": "10", "ttl": "3"}, "Failed to initialize LocalCache: unknown setting 'ttl'"),
    ],
)
def test_bad_local_cache_settings_are_refused(settings: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        create_local_cache(settings)
    assert caught.value.message == message


def _request(**changes: object) -> InferRequest:
    request = InferRequest(
        "m",
        [Tensor.from_numpy("B", np.array([b"x", b"yz"], dtype=object)), Tensor.from_numpy("A", np.arange(4.0))],
    )
    for name, value in changes.items():
        setattr(request, name, value)
    return request


def test_the_key_covers_everything_that_decides_the_response() -> None:
    base = request_key(_request(), 1)
    assert request_key(_request(), 1) == base
    assert request_key(_request(inputs=list(reversed(_request().inputs))), 1) == base  # input order is not
    assert request_key(_request(parameters={"timeout": 5, "priority": 1}), 1) == base  # scheduling is not
    assert request_key(_request(id="other"), 1) == base
    reshaped = _request()
    reshaped.inputs[1] = Tensor.from_numpy("A", np.arange(4.0).reshape(2, 2))
    retyped = _request()
    retyped.inputs[1] = Tensor.from_numpy("A", np.arange(4.0, dtype=np.float32))
    changed = _request()
    changed.inputs[0] = Tensor.from_numpy("B", np.array([b"xy", b"z"], dtype=object))  # same bytes, other split
    different = [
        request_key(_request(), 2),
        request_key(_request(model_name="n"), 1),
        request_key(reshaped, 1),
        request_key(retyped, 1),
        request_key(changed, 1),
        request_key(_request(outputs=[RequestedOutput("OUT")]), 1),
        request_key(_request(outputs=[RequestedOutput("OUT", {"classification": 2})]), 1),
        request_key(_request(parameters={"custom": 1}), 1),
        request_key(_request(parameters={"custom": "1"}), 1),
    ]
    assert len({base, *different}) == len(different) + 1


def test_a_stored_response_comes_back_equal() -> None:
    outputs = [
        Tensor.from_numpy("F", np.arange(6, dtype=np.float16).reshape(2, 3)),
        Tensor.from_numpy("S", np.array([[b""], [b"\x00abc"]], dtype=object)),
        Tensor.from_numpy("E", np.zeros((1, 0), dtype=np.int64)),
    ]
    outputs[0].parameters["p"] = 1
    response = decode_response(encode_response(InferResponse("m", "1", outputs, parameters={"q": "x"})), "m", "1")
    assert [(t.name, t.datatype, t.shape, t.parameters) for t in response.outputs] == [
        ("F", "FP16", (2, 3), {"p": 1}),
        ("S", "BYTES", (2, 1), {}),
        ("E", "INT64", (1, 0), {}),
    ]
    for got, sent in zip(response.outputs, outputs, strict=True):
        assert np.array_equal(got.data, sent.data)
    assert response.parameters == {"q": "x"}
    with pytest.raises(InternalError, match="malformed entry"):
        decode_response(b"\x05\x00\x00\x00\x00\x00\x00\x00{}", "m", "1")


def _repository(root: Path, extra: str) -> Path:
    repo = root / "models"
    shutil.copytree(EXAMPLES / "add_sub", repo / "add_sub", ignore=shutil.ignore_patterns("__pycache__"))
    config = repo / "add_sub" / "config.pbtxt"
    config.write_text(config.read_text() + extra)
    return repo


def _add_sub(first: float) -> InferRequest:
    data = np.full(4, first, dtype=np.float32)
    return InferRequest("add_sub", [Tensor.from_numpy("INPUT0", data), Tensor.from_numpy("INPUT1", data)])


async def test_hits_skip_execution_and_are_counted_like_triton(tmp_path: Path) -> None:
    options = Options(
        repository=RepositoryOptions(paths=(str(_repository(tmp_path, "response_cache { enable: true }\n")),)),
        backends=BackendOptions(cache_config=(("local", "size", "1048576"),)),
    )
    async with seawall.open_server(options) as server:
        answers = [await server.infer(_add_sub(value)) for value in (1.0, 1.0, 2.0, 1.0)]
        [stats] = server.model_statistics("add_sub")
    assert [a.outputs[0].data.tolist() for a in answers] == [[2.0] * 4, [2.0] * 4, [4.0] * 4, [2.0] * 4]
    assert [a.model_version for a in answers] == ["1"] * 4
    assert (stats.cache_hit.count, stats.cache_miss.count) == (2, 2)
    assert (stats.success.count, stats.queue.count) == (4, 4)  # hits included
    assert (stats.inference_count, stats.execution_count, stats.compute_infer.count) == (2, 2, 2)  # hits not
    assert stats.response_cache and stats.cache_hit.ns > 0 and stats.cache_miss.ns > 0


async def test_without_a_server_cache_the_model_setting_changes_nothing(tmp_path: Path) -> None:
    options = Options(
        repository=RepositoryOptions(paths=(str(_repository(tmp_path, "response_cache { enable: true }\n")),))
    )
    async with seawall.open_server(options) as server:
        for _ in range(2):
            await server.infer(_add_sub(1.0))
        [stats] = server.model_statistics("add_sub")
    assert (stats.cache_hit, stats.cache_miss, stats.execution_count, stats.response_cache) == (
        Duration(),
        Duration(),
        2,
        False,
    )


async def test_a_decoupled_model_with_the_cache_enabled_is_refused_like_triton(tmp_path: Path) -> None:
    extra = "response_cache { enable: true }\nmodel_transaction_policy { decoupled: true }\n"
    options = Options(repository=RepositoryOptions(paths=(str(_repository(tmp_path, extra)),), exit_on_error=False))
    async with seawall.open_server(options) as server:
        [entry] = server.repository_index()
    assert (entry.state, entry.reason) == (
        "UNAVAILABLE",
        "Response Cache does not currently support model add_sub with 'decoupled' transaction policy. "
        "Please disable the response cache.",
    )
