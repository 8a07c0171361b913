"""A/B of BLS between two Seawall revisions, interleaved: this checkout against another with its own virtual
environment (as `bench.ab`), on bls_add_sub beside the same pipeline as an ensemble (ensemble_add_sub) and on
one BLS call of a 64 MiB tensor (bls_64mib, c=1). Medians over rounds of throughput and of server CPU per
inference of the whole process tree (the steadier figure on a shared machine); the load average is printed.

    python -m bench.ab_bls --base /tmp/base [--rounds 5] [--seconds 5] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench import servers
from bench.loadgen import run_load

RAW = Path(__file__).resolve().parent / "results" / "raw"
MODELS = ("add_sub", "bls_add_sub", "ensemble_add_sub", "identity", "bls_64mib")


def _cell(server: servers.Server, workload: str, mode: str, concurrency: int, seconds: float) -> dict[str, float]:
    url = server.grpc if mode == "grpc" else server.http
    run_load(url, mode, workload, concurrency, 1.0, warmup=0.0)  # warm the connections and the models
    cpu = servers.tree_cpu_seconds(server.pid)
    result = run_load(url, mode, workload, concurrency, seconds, warmup=0.0)
    used = servers.tree_cpu_seconds(server.pid) - cpu
    return {
        "throughput": result.throughput,
        "cpu_us": used / max(1, result.total_requests) * 1e6,
        "p50_ms": result.p50_ms,
        "errors": result.errors,
    }


def _cells(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(workload, mode, concurrency) of every cell: the BLS pair at `concurrency`, the 64 MiB call at c=1."""
    cells = [(w, mode, args.concurrency) for w in ("bls_add_sub", "ensemble_add_sub") for mode in args.modes]
    return [*cells, ("bls_64mib", "http-binary", 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (with .venv)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--modes", nargs="+", default=["http-binary", "grpc"])
    args = parser.parse_args()
    repository = Path(tempfile.mkdtemp(prefix="seawall-ab-bls-"))
    for model in MODELS:
        (repository / model).symlink_to(servers.MODELS / model, target_is_directory=True)
    pythons = {"head": None, "base": args.base / ".venv" / "bin" / "python"}
    cells: list[dict[str, object]] = []
    loads = [os.getloadavg()[0]]
    for round_ in range(args.rounds):
        order = list(pythons.items()) if round_ % 2 == 0 else list(pythons.items())[::-1]  # ABBA: no order bias
        for name, python in order:
            server = servers.start("seawall", repository=repository, python=python)
            try:
                for workload, mode, concurrency in _cells(args):
                    cell = _cell(server, workload, mode, concurrency, args.seconds)
                    cells.append({"revision": name, "round": round_, "workload": workload, "mode": mode,
                                  "concurrency": concurrency, **cell})  # fmt: skip
                    print(f"bench-ab-bls: {json.dumps(cells[-1])}", flush=True)
            finally:
                server.stop()
            loads.append(os.getloadavg()[0])
    RAW.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y%m%d-%H%M%S")
    (RAW / f"ab-bls-{run_id}.json").write_text(json.dumps({"settings": vars(args), "cells": cells}, default=str))
    print(f"\nrun {run_id}: head vs {args.base}, medians of {args.rounds} rounds; load average (1 min) during the "
          f"run: median {statistics.median(loads):.1f}, max {max(loads):.1f}\n")  # fmt: skip
    _print_table(cells, _cells(args), list(pythons))


def _print_table(cells: list[dict[str, object]], keys: list[tuple[str, str, int]], revisions: list[str]) -> None:
    print("| workload | mode | c | head req/s | base req/s | ratio | head CPU µs/inf | base CPU µs/inf | head p50 ms |"
          " base p50 ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    medians: dict[tuple[str, str, str], dict[str, float]] = {}
    for workload, mode, concurrency in keys:
        for name in revisions:
            rows = [c for c in cells if (c["revision"], c["workload"], c["mode"]) == (name, workload, mode)]
            medians[(name, workload, mode)] = {
                key: statistics.median(float(c[key]) for c in rows)  # type: ignore[arg-type]
                for key in ("throughput", "cpu_us", "p50_ms")
            }
        head, base = medians[("head", workload, mode)], medians[("base", workload, mode)]
        print(
            f"| {workload} | {mode} | {concurrency} | {head['throughput']:.0f} | {base['throughput']:.0f} | "
            f"{head['throughput'] / base['throughput']:.2f} | {head['cpu_us']:.0f} | {base['cpu_us']:.0f} | "
            f"{head['p50_ms']:.1f} | {base['p50_ms']:.1f} |"
        )
    for mode in sorted({m for w, m, _ in keys if w != "bls_64mib"}):
        for name in revisions:
            bls, ensemble = medians.get((name, "bls_add_sub", mode)), medians.get((name, "ensemble_add_sub", mode))
            if bls and ensemble:
                print(f"{name} {mode}: BLS/ensemble CPU per inference {bls['cpu_us'] / ensemble['cpu_us']:.2f}×, "
                      f"throughput {ensemble['throughput'] / bls['throughput']:.2f}× lower")  # fmt: skip


if __name__ == "__main__":
    main()
