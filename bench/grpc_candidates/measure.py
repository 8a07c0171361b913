"""Measure the canned gRPC servers of `canned.py` side by side: server CPU µs per call and calls/s, for a small
call (add_sub's request and reply) and a 1 MiB call (identity's, echoed), at several concurrencies, with two
load clients (h2load, and bench.loadgen's Python HTTP/2 client), the candidates interleaved in every cell.

    python -m bench.grpc_candidates.measure [--seconds 3] [--kinds aio aio-exp sync h2 lean] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time

from bench import native, servers
from bench.grpc_candidates.canned import CANNED
from bench.loadgen import grpc_body, run_load, workload

KINDS = ("aio", "aio-exp", "sync", "h2", "lean")
SIZES = {"small": "add_sub", "1MiB": "identity"}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(kind: str) -> tuple[subprocess.Popen[str], str]:
    port = _port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.grpc_candidates.canned", kind, str(port)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{kind} did not start")
    return process, f"127.0.0.1:{port}"


def _cell(process: subprocess.Popen[str], url: str, size: str, client: str, c: int, seconds: float) -> dict[str, float]:
    model = SIZES[size]
    reply = 5 + (len(CANNED) if size == "small" else len(grpc_body(workload(model))) - 5)
    run_load(url, "grpc", model, c, 0.5, warmup=0.0)  # warm up
    cpu = servers.tree_cpu_seconds(process.pid)
    if client == "h2load":
        result = native.run_h2load(url, model, c, seconds, reply)
        calls = result.requests
    else:
        result = run_load(url, "grpc", model, c, seconds, warmup=0.0)
        calls = result.total_requests
    used = servers.tree_cpu_seconds(process.pid) - cpu
    return {"cpu_us": used / max(1, calls) * 1e6, "calls_s": result.throughput, "errors": result.errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--clients", nargs="+", default=["h2load", "loadgen"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    started = {kind: _start(kind) for kind in args.kinds}
    results: dict[str, list[dict[str, float]]] = {}
    try:
        for _ in range(args.rounds):
            for size in args.sizes:
                for client in args.clients:
                    for c in args.concurrency:
                        for kind in args.kinds:  # interleaved: every candidate in each cell, one after another
                            process, url = started[kind]
                            cell = _cell(process, url, size, client, c, args.seconds)
                            results.setdefault(f"{kind}|{size}|{client}|{c}", []).append(cell)
                            print(f"{size:5} {client:7} c={c:<3} {kind:8} {cell['cpu_us']:8.1f} µs/call "
                                  f"{cell['calls_s']:9.0f} calls/s errors={cell['errors']}", flush=True)  # fmt: skip
                            time.sleep(0.2)
    finally:
        for process, _ in started.values():
            process.kill()
    table = {
        key: {name: statistics.median(cell[name] for cell in cells) for name in ("cpu_us", "calls_s", "errors")}
        for key, cells in results.items()
    }
    if args.json:
        with open(args.json, "w") as out:
            json.dump(table, out, indent=1)


if __name__ == "__main__":
    main()
