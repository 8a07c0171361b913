"""Smoke test of the benchmark's load generator: ~1 s of add_sub load on a Seawall process, HTTP JSON and gRPC,
and the gRPC client of `bench.grpc_client` on a 1 MiB message (flow control, many frames) and a failing call.

The full benchmark (`make bench`) is not part of the test suite; this only checks that the load path works.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bench.loadgen import SEQUENCE_LENGTH, grpc_body, http_body, open_grpc, run_load, sequences, workload
from tests.harness import ROOT, ServerProcess, start_seawall


@pytest.fixture(scope="module")
def seawall() -> Iterator[ServerProcess]:
    server = start_seawall(repository=ROOT / "bench" / "models")
    yield server
    server.stop()


@pytest.mark.parametrize("mode", ["http-json", "grpc"])
def test_loadgen_drives_add_sub_without_errors(seawall: ServerProcess, mode: str) -> None:
    url = seawall.grpc if mode == "grpc" else seawall.http
    result = run_load(url, mode, "add_sub", concurrency=4, seconds=1.0, processes=2, warmup=0.1)
    assert result.errors == 0
    assert result.requests > 10
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms


@pytest.mark.parametrize("mode", ["http-json", "grpc"])
def test_loadgen_drives_concurrent_sequences_without_errors(seawall: ServerProcess, mode: str) -> None:
    url = seawall.grpc if mode == "grpc" else seawall.http
    result = run_load(url, mode, "sequence", concurrency=4, seconds=1.0, processes=2, warmup=0.1)
    assert result.errors == 0
    assert result.requests > 2 * SEQUENCE_LENGTH  # several whole sequences, one after another per loop


def test_the_grpc_client_moves_a_mib_each_way_and_tells_a_failed_call(seawall: ServerProcess) -> None:
    host, port = seawall.grpc.rsplit(":", 1)
    identity = grpc_body(workload("identity"))  # 1 MiB: past the server's first window and its frame size

    async def calls() -> list[tuple[bool, int]]:
        connection = await open_grpc(host, int(port), identity)
        outcomes = []
        for body in (identity, grpc_body(replace(workload("add_sub"), model="no_such_model")), identity):
            connection.set_body(body)
            outcomes.append((await connection.call(), connection.received))
        connection.close()
        return outcomes

    (ok, size), (failed, _), (again, size_again) = asyncio.run(calls())
    assert ok and again and not failed  # a call that fails does not break the connection for the next one
    assert size == size_again > len(identity) - 64  # the reply carries the same 1 MiB tensor back


def test_sequence_requests_carry_their_sequence() -> None:
    bodies = sequences(lambda s: json.dumps(s).encode(), 3, 7)
    assert [json.loads(next(bodies)) for _ in range(2)] == [[7, True, False], [7, False, False]]
    assert bodies.open  # a loop that stops now sends the rest of the sequence first
    assert json.loads(next(bodies)) == [7, False, True] and not bodies.open
    assert json.loads(next(bodies)) == [8, True, False]
    _, body = http_body(workload("sequence"), False, (9, True, False))
    assert json.loads(body)["parameters"] == {"sequence_id": 9, "sequence_start": True, "sequence_end": False}


def _cell(
    server: str, workload: str, mode: str, conc: int, throughput: float, p99: float, cpu: float
) -> dict[str, object]:
    return {
        "server": server,
        "workload": workload,
        "mode": mode,
        "concurrency": conc,
        "throughput": throughput,
        "p50_ms": p99 / 2,
        "p90_ms": p99 / 1.5,
        "p99_ms": p99,
        "errors": 0,
        "server_cpu_us_per_inference": cpu,
        "other_cores": 0.0,
        "peak_pss_bytes": 0,
        "driver": "wrk",
    }


def test_report_targets_use_medians_of_the_same_run() -> None:
    from bench.report import _group, render, targets

    cells = [_cell("seawall", "add_sub", "http-json", 32, t, 5.0, 100) for t in (900, 1100, 1000)]
    cells += [_cell("triton", "add_sub", "http-json", 32, t, 4.0, 200) for t in (800, 810, 3000)]
    cells += [_cell("mlserver", "add_sub", "http-json", 32, 150, 40.0, 900)]
    cells += [_cell(s, "add_sub", "grpc", 1, 100, p99, 100) for s, p99 in (("seawall", 2.0), ("triton", 1.0))]
    data = {
        "run": "test",
        "quick": True,
        "settings": {"reps": 3, "slow_reps": 1, "seconds": 1},
        "machine": {"cpus": 2, "platform": "linux"},
        "idle_pss": {"seawall": 80 << 20, "triton": 84 << 20},
        "starts": [{"server": "seawall", "seconds": 1.2}],
        "cells": cells,
    }
    rows = {label: (value, ok) for label, value, ok in targets(data, _group(cells))}
    assert rows["add_sub http-json: Seawall/Triton ≥ 1.0"] == ("c=32 1.23", True)  # 1000 / 810
    assert rows["add_sub grpc: Seawall/Triton ≥ 1.0"] == ("n/a", None)  # c=1 only: not a target cell
    assert rows["Seawall/MLServer ≥ 5 in every cell"][1] is True
    assert rows["p99 at c=1 ≤ Triton's (every workload and mode)"][1] is False
    assert rows["server CPU per inference ≤ Triton's (every cell at c ≥ 8)"] == ("1/1 cells", True)
    assert rows["idle PSS ≤ Triton's"][1] is True
    assert rows["start to ready ≤ 1.5 s"][1] is True
    text = "\n".join(render(data, _group(cells), [], "test.json"))
    assert "| add_sub http-json c=32 | 1000 | 810 | 150 | 1.23 | 6.67 |" in text


def test_in_process_cells_are_compared_with_tritons_add_sub() -> None:
    from bench.report import _group, targets

    cells = [_cell("triton", "add_sub", "http-json", 32, t, 4.0, 200) for t in (800, 1000, 1200)]
    cells += [_cell("seawall", "add_sub_inprocess", "http-json", 32, t, 3.0, 100) for t in (1400, 1600, 1700)]
    data = {"cells": cells}
    rows = {label: (value, ok) for label, value, ok in targets(data, _group(cells))}
    assert rows["add_sub in-process (worker thread) http-json: Seawall/Triton ≥ 1.5"] == ("c=32 1.60", True)
    assert not any("inline" in label for label in rows)  # not measured: no row


def test_a_target_holds_only_where_every_run_meets_it(tmp_path: Path) -> None:
    from bench import report

    def run(name: str, seawall: float, driver: str) -> Path:
        cells = [_cell("seawall", "add_sub", "http-json", c, seawall, 3.0, 100) for c in (8, 32)]
        cells += [_cell("triton", "add_sub", "http-json", c, 1000, 4.0, 200) for c in (8, 32)]
        for cell in cells:
            cell["driver"] = driver
        data = {
            "run": name,
            "quick": True,
            "settings": {"reps": 1, "slow_reps": 1, "seconds": 1},
            "machine": {"cpus": 2, "platform": "linux"},
            "cells": cells,
        }
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        return path

    out = report.write([run("one", 1200, "wrk"), run("two", 900, "bench.loadgen")], tmp_path / "out", plots=False)
    text = out.read_text()
    assert (
        "| add_sub http-json: Seawall/Triton ≥ 1.0 | c=8 1.20 / c=32 1.20 (**met**) | c=8 0.90 / c=32 0.90 (not met)"
        " | not met |" in text
    )
    assert "`one` (wrk)" in text and "`two` (bench.loadgen)" in text


def test_bls_rows_set_the_bls_pipeline_beside_its_ensemble() -> None:
    from bench.report import _group, targets

    cells = [_cell("seawall", "bls_add_sub", "grpc", 32, 1000, 9.0, 600)]
    cells += [_cell("seawall", "ensemble_add_sub", "grpc", 32, 2000, 5.0, 300)]
    cells += [_cell("triton", "bls_add_sub", "grpc", 32, 1500, 9.0, 450)]
    cells += [_cell("triton", "ensemble_add_sub", "grpc", 32, 3000, 5.0, 150)]
    cells += [_cell(s, "bls_64mib", "http-binary", 1, 10, p99, cpu) for s, p99, cpu in (("seawall", 80, 4e4),)]
    rows = {label: (value, ok) for label, value, ok in targets({"cells": cells}, _group(cells))}
    assert rows["BLS / ensemble (add_sub) c=32 grpc: Seawall server CPU per inference ≤ 1.5×"] == (
        "Seawall 2.00× CPU, 2.00× by req/s; Triton 3.00× CPU, 2.00× by req/s",
        False,
    )
    assert "BLS / ensemble (add_sub) c=1 grpc: Seawall server CPU per inference ≤ 1.5×" not in rows
    assert rows["BLS call of a 64 MiB tensor (and back), c=1: p50 ≤ Triton's"] == (
        "Seawall 40.0 ms (40.0 ms CPU), Triton – ms (– ms CPU)",
        None,
    )


@pytest.mark.parametrize("flag", [[], ["--no-report"]])
def test_a_run_of_a_few_cells_can_leave_the_report_as_it_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: list[str]
) -> None:
    """`--no-report` keeps the raw results only: a run of a few cells must not replace the committed report of
    whole runs (it did, with its few cells and their plots)."""
    from bench import run

    written: list[list[Path]] = []
    monkeypatch.setattr(run, "measure", lambda args: tmp_path / "raw.json")
    monkeypatch.setattr(run.report, "write", lambda raws: written.append(list(raws)) or tmp_path / "report.md")
    monkeypatch.setattr("sys.argv", ["bench.run", "--workloads", "identity", *flag])
    run.main()
    assert written == ([] if flag else [[tmp_path / "raw.json"]])
