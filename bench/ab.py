"""A/B of two Seawall revisions on the same machine, interleaved: this checkout against another checkout with its
own virtual environment (`git worktree add <dir> <rev>` then `python -m venv <dir>/.venv && <dir>/.venv/bin/pip
install -e <dir>`), add_sub from bench/models, each mode with two load clients (bench.loadgen in Python, and
wrk / h2load), medians over rounds; throughput and server CPU per inference (the steadier figure on a shared
machine).

    python -m bench.ab --base /tmp/base [--rounds 3] [--seconds 5] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench import native, servers
from bench.loadgen import Result, run_load

RAW = Path(__file__).resolve().parent / "results" / "raw"


def _cell(server: servers.Server, mode: str, client: str, concurrency: int, seconds: float) -> dict[str, float]:
    url = server.grpc if mode == "grpc" else server.http
    run_load(url, mode, "add_sub", concurrency, 1.0, warmup=0.0)  # warm the connections and the model
    cpu, started = servers.tree_cpu_seconds(server.pid), time.perf_counter()
    if client == "native":
        result: Result = (
            native.run_h2load(url, "add_sub", concurrency, seconds, _reply_bytes(server))
            if mode == "grpc"
            else native.run_wrk(url, mode, "add_sub", concurrency, seconds)
        )
        total = result.requests
    else:
        result = run_load(url, mode, "add_sub", concurrency, seconds, warmup=0.0)
        total = result.total_requests
    used = servers.tree_cpu_seconds(server.pid) - cpu
    return {"throughput": result.throughput, "cpu_us": used / max(1, total) * 1e6, "errors": result.errors,
            "wall": time.perf_counter() - started}  # fmt: skip


def _reply_bytes(server: servers.Server) -> int:
    from bench.run import probe

    ok, size, reason = probe(server, "add_sub", "grpc")
    if not ok:
        raise RuntimeError(reason)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (with .venv)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--modes", nargs="+", default=["http-json", "http-binary", "grpc"])
    parser.add_argument("--clients", nargs="+", default=["loadgen", "native"])
    args = parser.parse_args()
    repository = Path(tempfile.mkdtemp(prefix="seawall-ab-"))  # add_sub only: nothing else loads
    (repository / "add_sub").symlink_to(servers.MODELS / "add_sub", target_is_directory=True)
    pythons = {"head": None, "base": args.base / ".venv" / "bin" / "python"}
    cells: list[dict[str, object]] = []
    for round_ in range(args.rounds):
        for name, python in pythons.items():  # one server at a time, alternating: head, base, head, base...
            server = servers.start("seawall", repository=repository, python=python)
            try:
                for mode in args.modes:
                    for client in args.clients:
                        cell = _cell(server, mode, client, args.concurrency, args.seconds)
                        cells.append({"revision": name, "round": round_, "mode": mode, "client": client, **cell})
                        print(f"bench-ab: {json.dumps(cells[-1])}", flush=True)
            finally:
                server.stop()
    RAW.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y%m%d-%H%M%S")
    (RAW / f"ab-{run_id}.json").write_text(json.dumps({"settings": vars(args), "cells": cells}, default=str))
    print(f"\nrun {run_id}: head vs {args.base}, c={args.concurrency}, medians of {args.rounds} rounds\n")
    print("| mode | client | head req/s | base req/s | ratio | head CPU µs/inf | base CPU µs/inf |")
    print("|---|---|---|---|---|---|---|")
    for mode in args.modes:
        for client in args.clients:
            med = {
                name: {
                    key: statistics.median(
                        float(c[key])  # type: ignore[arg-type]
                        for c in cells
                        if (c["revision"], c["mode"], c["client"]) == (name, mode, client)
                    )
                    for key in ("throughput", "cpu_us")
                }
                for name in pythons
            }
            ratio = med["head"]["throughput"] / med["base"]["throughput"]
            print(
                f"| {mode} | {client} | {med['head']['throughput']:.0f} | {med['base']['throughput']:.0f} | "
                f"{ratio:.2f} | {med['head']['cpu_us']:.0f} | {med['base']['cpu_us']:.0f} |"
            )


if __name__ == "__main__":
    main()
