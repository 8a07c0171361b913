"""A/B of two Seawall revisions on the same machine, interleaved: this checkout against another checkout with its
own virtual environment (`git worktree add <dir> <rev>` then `python -m venv <dir>/.venv && <dir>/.venv/bin/pip
install -e <dir>`), workloads from bench/models (add_sub by default; `--cells model:mode ...` names others, such as
identity:grpc, or add_sub_inprocess:http-binary for add_sub in-process), each cell with two load clients
(bench.loadgen in Python, and wrk / h2load where installed), medians over rounds with their range; throughput and
server CPU per inference (the steadier figure on a shared machine), and where that CPU went: the server's event
loop, its other threads and the stubs, user and system time and voluntary context switches per inference.

    python -m bench.ab --base /tmp/base [--rounds 3] [--seconds 5] [--concurrency 32 1] [--cells add_sub:grpc ...]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from bench import native, servers
from bench.loadgen import Result, run_load

RAW = Path(__file__).resolve().parent / "results" / "raw"


def _cell(
    server: servers.Server, model: str, mode: str, client: str, concurrency: int, seconds: float
) -> dict[str, float]:
    url = server.grpc if mode == "grpc" else server.http
    run_load(url, mode, model, concurrency, 1.0, warmup=0.0)  # warm the connections and the model
    cpu, started = servers.tree_cpu_seconds(server.pid), time.perf_counter()
    split = servers.thread_split(server.pid)
    if client == "native":
        result: Result = (
            native.run_h2load(url, model, concurrency, seconds, _reply_bytes(server, model))
            if mode == "grpc"
            else native.run_wrk(url, mode, model, concurrency, seconds)
        )
        total = result.requests
    else:
        result = run_load(url, mode, model, concurrency, seconds, warmup=0.0)
        total = result.total_requests
    used = servers.tree_cpu_seconds(server.pid) - cpu
    count = max(1, total)
    after = servers.thread_split(server.pid)
    # per role and inference: user µs, system µs, voluntary context switches
    roles = {role: [(after[role][0] - split[role][0]) * 1e6 / count, (after[role][1] - split[role][1]) * 1e6 / count,
                    (after[role][2] - split[role][2]) / count] for role in split}  # fmt: skip
    return {"throughput": result.throughput, "cpu_us": used * 1e6 / count, "errors": result.errors,
            "wall": time.perf_counter() - started, "split": roles}  # fmt: skip


def _reply_bytes(server: servers.Server, model: str) -> int:
    from bench.run import probe

    ok, size, reason = probe(server, model, "grpc")
    if not ok:
        raise RuntimeError(reason)
    return size


def _range(cells: list[dict[str, object]], key: str) -> tuple[float, float, float]:
    """Median, minimum and maximum of `key` over `cells` (NaN: none)."""
    values = [float(c[key]) for c in cells]  # type: ignore[arg-type]
    return (statistics.median(values), min(values), max(values)) if values else (math.nan,) * 3


def _by_cell(cells: list[dict[str, object]]) -> list[tuple[tuple[object, ...], dict[str, list[dict[str, object]]]]]:
    """`cells` grouped per (model, mode, concurrency, client), in the order they ran: each group's head and base
    cells."""
    groups: dict[tuple[object, ...], dict[str, list[dict[str, object]]]] = {}
    for cell in cells:
        key = (cell["model"], cell["mode"], cell["concurrency"], cell["client"])
        groups.setdefault(key, {"head": [], "base": []})[str(cell["revision"])].append(cell)
    return list(groups.items())


def _print_table(cells: list[dict[str, object]]) -> None:
    """The markdown table of `cells`: per (model, mode, concurrency, client), head's and base's medians [min-max]."""
    print("| model | mode | c | client | head req/s (n) | base req/s (n) | ratio | head CPU µs/inf | base CPU µs/inf |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, of in _by_cell(cells):
        rate = {name: _range(of[name], "throughput") for name in of}
        cpu = {name: _range(of[name], "cpu_us") for name in of}
        print(
            "| " + " | ".join(str(part) for part in key) + " "
            + "".join(f"| {rate[n][0]:.0f} [{rate[n][1]:.0f}-{rate[n][2]:.0f}] ({len(of[n])}) " for n in of)
            + f"| {rate['head'][0] / rate['base'][0]:.2f} "
            + "".join(f"| {cpu[n][0]:.0f} [{cpu[n][1]:.0f}-{cpu[n][2]:.0f}] " for n in of)
            + "|"
        )  # fmt: skip


def _print_split(cells: list[dict[str, object]]) -> None:
    """Where each cell's CPU went: per role (`servers.thread_split`), head's and base's medians of user and system
    µs per inference and of voluntary context switches per inference."""
    print("\n| model | mode | c | client | role | head user+sys µs | base user+sys µs | head / base switches |")
    print("|---|---|---|---|---|---|---|---|")
    for key, of in _by_cell([cell for cell in cells if "split" in cell]):
        for role in ("loop", "threads", "stubs"):
            med = {
                name: [statistics.median(c["split"][role][i] for c in of[name]) if of[name] else math.nan  # type: ignore[index]
                       for i in range(3)]
                for name in of
            }  # fmt: skip
            if max(med["head"][0] + med["head"][1], med["base"][0] + med["base"][1]) < 0.5:
                continue  # a role that used no CPU in this cell (no stub, no worker thread)
            print(
                "| " + " | ".join(str(part) for part in key) + f" | {role} "
                + "".join(f"| {med[n][0]:.0f}+{med[n][1]:.0f} " for n in of)
                + f"| {med['head'][2]:.2f} / {med['base'][2]:.2f} |"
            )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="the other checkout (with .venv)")
    parser.add_argument("--table", type=Path, help="only print the table of an earlier run's raw file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32])
    parser.add_argument("--cells", nargs="+", default=["add_sub:http-json", "add_sub:http-binary", "add_sub:grpc"])
    parser.add_argument("--clients", nargs="+", default=["loadgen", "native"])
    args = parser.parse_args()
    if args.table is not None:
        earlier = json.loads(args.table.read_text())["cells"]
        _print_table(earlier)
        _print_split(earlier)
        return
    if args.base is None:
        parser.error("--base is required")
    cells_wanted = [tuple(cell.split(":", 1)) for cell in args.cells]
    repository = Path(tempfile.mkdtemp(prefix="seawall-ab-"))  # only the workloads named: nothing else loads
    for model in sorted({model for model, _ in cells_wanted}):
        # add_sub_inprocess and add_sub_inline are copies of add_sub written by servers.in_process_repository
        source = servers.in_process_repository() if model in servers.IN_PROCESS_MODES else servers.MODELS
        (repository / model).symlink_to(source / model, target_is_directory=True)
    pythons = {"head": None, "base": args.base / ".venv" / "bin" / "python"}
    plan = [
        (model, mode, client, concurrency)
        for model, mode in cells_wanted
        for concurrency in args.concurrency
        for client in args.clients
        if client != "native" or native.is_available(mode)
    ]
    cells: list[dict[str, object]] = []
    RAW.mkdir(parents=True, exist_ok=True)
    raw = RAW / f"ab-{time.strftime('%Y%m%d-%H%M%S')}.json"
    for round_ in range(args.rounds):
        for name, python in pythons.items():  # one server at a time, alternating: head, base, head, base...
            server = servers.start("seawall", repository=repository, python=python)
            try:
                for model, mode, client, concurrency in plan:
                    try:
                        cell = _cell(server, model, mode, client, concurrency, args.seconds)
                    except (RuntimeError, KeyError, ValueError) as exc:  # a driver's output not parsed: cell lost
                        print(f"bench-ab: {name} round {round_} {model} {mode} {client} c={concurrency}: {exc!r}")
                        continue
                    cells.append({"revision": name, "round": round_, "model": model, "mode": mode,
                                  "client": client, "concurrency": concurrency, **cell})  # fmt: skip
                    print(f"bench-ab: {json.dumps(cells[-1])}", flush=True)
            finally:
                server.stop()
                raw.write_text(json.dumps({"settings": vars(args), "cells": cells}, default=str))  # kept on a failure
    print(f"\n{raw.name}: head vs {args.base}, medians [min-max] of {args.rounds} rounds\n")
    _print_table(cells)
    _print_split(cells)


if __name__ == "__main__":
    main()
