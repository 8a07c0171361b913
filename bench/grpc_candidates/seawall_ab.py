"""Seawall with `--grpc-server=aio` against `--grpc-server=lean`, interleaved, on bench/models: server CPU µs per
inference (whole process tree) and inferences/s over gRPC, with h2load and bench.loadgen.

    python -m bench.grpc_candidates.seawall_ab [--seconds 4] [--rounds 1] [--cells add_sub:32 matmul:64 identity:8]
"""

from __future__ import annotations

import argparse
import statistics

from bench import native, servers
from bench.loadgen import run_load
from bench.run import probe


def _cell(server: servers.Server, model: str, client: str, c: int, seconds: float) -> dict[str, float]:
    run_load(server.grpc, "grpc", model, c, 0.5, warmup=0.0)
    cpu = servers.tree_cpu_seconds(server.pid)
    if client == "h2load":
        ok, size, reason = probe(server, model, "grpc")
        if not ok:
            raise RuntimeError(reason)
        result = native.run_h2load(server.grpc, model, c, seconds, size)
        total = result.requests
    else:
        result = run_load(server.grpc, "grpc", model, c, seconds, warmup=0.0)
        total = result.total_requests
    used = servers.tree_cpu_seconds(server.pid) - cpu
    return {"cpu_us": used / max(1, total) * 1e6, "rate": result.throughput, "errors": result.errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cells", nargs="+", default=["add_sub:32", "matmul:64", "identity:8"])
    parser.add_argument("--clients", nargs="+", default=["h2load", "loadgen"])
    args = parser.parse_args()
    stacks = {name: servers.start("seawall", args=(f"--grpc-server={name}",)) for name in ("aio", "lean")}
    cells: dict[str, list[dict[str, float]]] = {}
    try:
        for _ in range(args.rounds):
            for spec in args.cells:
                model, c = spec.split(":")
                for client in args.clients:
                    for name, server in stacks.items():
                        cell = _cell(server, model, client, int(c), args.seconds)
                        cells.setdefault(f"{model} c={c} {client} {name}", []).append(cell)
                        print(f"{model:8} c={c:<3} {client:7} {name:4} {cell['cpu_us']:8.1f} µs/inf "
                              f"{cell['rate']:8.0f}/s errors={cell['errors']}", flush=True)  # fmt: skip
    finally:
        for server in stacks.values():
            server.stop()
    if args.rounds > 1:
        for key, values in cells.items():
            print(key, f"median {statistics.median(v['cpu_us'] for v in values):.1f} µs/inf")


if __name__ == "__main__":
    main()
