"""Ensembles in --model-control-mode=poll, as Triton 2.51 (checked on the reference binary): when a composing
model changes so that the ensemble no longer fits it, the ensemble is unloaded (index: UNAVAILABLE "unloaded");
when it fits again, or a removed composing model comes back, the ensemble loads again by itself."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ensembles import make_stream_repository
from tests.harness import TRITON, ServerProcess, http_request, start_seawall, start_triton

POLL = ("--model-control-mode=poll", "--repository-poll-secs=1", "--exit-on-error=false")
BODY = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}).encode()
ENSEMBLES = ("es_chain", "es_declared")  # the ensembles over ens_plus


def _repository(root: Path) -> Path:
    repository = make_stream_repository(root)
    for name in ("es_two", "es_modes", "decoupled_modes"):
        shutil.rmtree(repository / name)
    return repository


def _index(server: ServerProcess) -> dict[str, tuple[str, str]]:
    status, _, reply = http_request(server, "POST", "/v2/repository/index", b"{}")
    assert status == 200
    return {m["name"]: (m.get("state", ""), m.get("reason", "")) for m in json.loads(reply)}


def _wait(server: ServerProcess, what: Callable[[dict[str, tuple[str, str]]], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        index = _index(server)
        if what(index):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the index never got there: {index}")
        time.sleep(0.2)


def _ensembles(state: tuple[str, str]) -> Callable[[dict[str, tuple[str, str]]], bool]:
    return lambda index: all(index.get(name) == state for name in ENSEMBLES)


def _scenario(server: ServerProcess, repository: Path, moved: Path) -> list[Any]:
    """Break ens_plus, restore it, remove it, bring it back; what the index says of the ensembles each time."""
    seen = []
    config = repository / "ens_plus" / "config.pbtxt"
    text = config.read_text()
    _wait(server, _ensembles(("READY", "")))
    config.write_text(text.replace("dims: [ 4 ] } ]\n", "dims: [ 5 ] } ]\n", 2).replace("[ 5 ]", "[ 4 ]", 1))
    _wait(server, _ensembles(("UNAVAILABLE", "unloaded")))
    seen.append(http_request(server, "POST", "/v2/models/es_declared/infer", BODY)[0])
    config.write_text(text)
    _wait(server, _ensembles(("READY", "")))
    seen.append(http_request(server, "POST", "/v2/models/es_declared/infer", BODY)[0])
    shutil.move(str(repository / "ens_plus"), str(moved))
    _wait(server, _ensembles(("UNAVAILABLE", "unloaded")))
    shutil.move(str(moved), str(repository / "ens_plus"))
    _wait(server, _ensembles(("READY", "")))
    seen.append(http_request(server, "POST", "/v2/models/es_declared/infer", BODY)[0])
    assert _index(server)["es_single"] == ("READY", "")  # the ensemble over the other model is left alone
    assert http_request(server, "GET", "/v2/health/live")[0] == 200
    return seen


@pytest.fixture
def seawall(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    repository = _repository(tmp_path / "models")
    process = start_seawall(*POLL, repository=repository)
    yield process, repository
    process.stop()


def test_an_ensemble_is_checked_again_when_its_composing_model_changes(
    seawall: tuple[ServerProcess, Path], tmp_path: Path
) -> None:
    server, repository = seawall
    assert _scenario(server, repository, tmp_path / "moved") == [404, 200, 200]  # as Triton: no ready version
    assert (
        "in ensemble es_chain, ensemble tensor OUTPUT: inconsistent shape: [4] is inferred from model es_chain "
        "while [5] is inferred from model ens_plus" in server.log()
    )


@pytest.mark.differential
def test_the_same_as_triton(tmp_path: Path) -> None:
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    repository = _repository(tmp_path / "triton" / "models")
    triton = start_triton(repository, *POLL)
    try:
        assert _scenario(triton, repository, tmp_path / "triton" / "moved") == [404, 200, 200]
    finally:
        triton.stop()
