"""Triton's JSON trace file for level TIMESTAMPS, through `open_server()`: sampling by trace_rate and
trace_count, the flush points (count used up, log_frequency, shutdown), run-time changes, and the file's safety."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import seawall
from seawall.errors import UnsupportedError
from seawall.options import Options, RepositoryOptions, TraceOptions
from tests.harness import EXAMPLES

ACTIVITIES = ["REQUEST_START", "QUEUE_START", "REQUEST_END"]


def _options(path: Path, **trace: object) -> Options:
    return Options(
        repository=RepositoryOptions(paths=(str(EXAMPLES),)),
        trace=TraceOptions(level=("TIMESTAMPS",), file=str(path), **trace),  # type: ignore[arg-type]
    )


async def _infer(server: seawall.InferenceServer, times: int, model: str = "add_sub") -> None:
    x = np.ones(4, dtype=np.float32)
    for number in range(times):
        if model == "add_sub":
            inputs = [seawall.Tensor.from_numpy("INPUT0", x), seawall.Tensor.from_numpy("INPUT1", x)]
        else:
            inputs = [seawall.Tensor.from_numpy("INPUT0", x.reshape(1, 4))]
        await server.infer(seawall.InferRequest(model, inputs, id=f"r{number}"))


def _traces(path: Path) -> dict[int, list[dict[str, object]]]:
    """The file's objects grouped by trace id, in file order."""
    grouped: dict[int, list[dict[str, object]]] = {}
    for record in json.loads(path.read_text()):
        grouped.setdefault(record["id"], []).append(record)
    return grouped


def _check_trace(records: list[dict[str, object]], trace_id: int, request_id: str, model: str = "add_sub") -> None:
    head = {"id": trace_id, "model_name": model, "model_version": 1, "request_id": request_id}
    assert records[0] == head
    stamps = [r["timestamps"] for r in records[1:]]
    assert [s[0]["name"] for s in stamps] == ACTIVITIES  # type: ignore[index]
    times = [s[0]["ns"] for s in stamps]  # type: ignore[index]
    assert times == sorted(times) and all(isinstance(t, int) and t > 0 for t in times)


async def test_every_request_is_written_to_the_file_at_shutdown(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    async with seawall.open_server(_options(path, rate=1)) as server:
        await _infer(server, 3)
        assert not path.exists()  # log_frequency 0: written at shutdown
    traces = _traces(path)
    assert sorted(traces) == [1, 2, 3]
    for trace_id, records in traces.items():
        _check_trace(records, trace_id, f"r{trace_id - 1}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("trace.json.*"))


async def test_rate_and_count_pick_the_requests_and_a_used_up_count_writes_an_indexed_file(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    async with seawall.open_server(_options(path, rate=2, count=2)) as server:
        await _infer(server, 6)
        traces = _traces(tmp_path / "trace.json.0")  # written as soon as the count is used up
        assert [records[0]["request_id"] for records in traces.values()] == ["r1", "r3"]
    assert not path.exists() and not (tmp_path / "trace.json.1").exists()


async def test_log_frequency_writes_every_n_traces(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    async with seawall.open_server(_options(path, rate=1, log_frequency=2)) as server:
        await _infer(server, 5)
        assert len(_traces(tmp_path / "trace.json.0")) == len(_traces(tmp_path / "trace.json.1")) == 2
    assert list(_traces(tmp_path / "trace.json.2")) == [5]  # the rest at shutdown, still indexed
    assert not path.exists()


async def test_tracing_off_writes_nothing_and_a_model_can_be_traced_at_run_time(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    options = _options(path).replace(trace=TraceOptions(file=str(path)))
    async with seawall.open_server(options) as server:
        await _infer(server, 2)
        server.update_trace_settings({"trace_level": ["TIMESTAMPS"], "trace_rate": ["1"]}, "identity")
        await _infer(server, 2)  # add_sub: still off
        await _infer(server, 1, "identity")
        with pytest.raises(UnsupportedError, match="trace level 'TENSORS' is not supported"):
            server.update_trace_settings({"trace_level": ["TENSORS"]})
    traces = _traces(path)
    assert list(traces) == [1]
    _check_trace(traces[1], 1, "r0", "identity")


async def test_the_file_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    path = tmp_path / "trace.json"
    path.symlink_to(target)
    async with seawall.open_server(_options(path, rate=1)) as server:
        await _infer(server, 1)
    assert target.read_text() == "keep" and os.path.islink(path)
