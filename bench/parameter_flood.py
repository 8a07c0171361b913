"""A gRPC ModelInferRequest with a million parameters (about 15 MB) against Seawall while /v2/health/ready is
polled from another thread: how long the refusal takes and how long health answers are held up meanwhile. With
`--base <checkout>` (its own .venv), the same rounds run interleaved against that revision too.

    python -m bench.parameter_flood [--base /work/main] [--rounds 5] [--count 1000000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb

from bench import servers

_OPTIONS = [("grpc.max_send_message_length", 1 << 27), ("grpc.max_receive_message_length", 1 << 27)]


def flood(count: int, level: str) -> bytes:
    """add_sub's request with `count` bool parameters (map entries written on the wire) at `level`."""
    request = pb.ModelInferRequest(model_name="add_sub")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[4])
        request.raw_input_contents.append(bytes(16))
    parts = []
    for i in range(count):
        key = b"p%d" % i
        entry = b"\x0a" + bytes([len(key)]) + key + b"\x12\x02\x08\x01"
        parts.append(b"\x22" + bytes([len(entry)]) + entry)
    entries = b"".join(parts)
    if level == "input":
        request.inputs[0].MergeFromString(entries)
        return request.SerializeToString()
    return request.SerializeToString() + entries


def _probe(address: str, stop: threading.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://{address}/v2/health/ready", timeout=60) as reply:
            reply.read()
        latencies.append(time.perf_counter() - started)
        stop.wait(0.01)


def one_round(server: servers.Server, data: bytes) -> dict[str, Any]:
    """Send `data` once with health probed; the call's seconds, the worst and median health answer."""
    latencies: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(target=_probe, args=(server.http, stop, latencies))
    with grpc.insecure_channel(server.grpc, options=_OPTIONS) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        prober.start()
        time.sleep(0.1)
        started = time.perf_counter()
        try:
            call(data, timeout=300)
            outcome = "OK"
        except grpc.RpcError as exc:
            outcome = exc.code().name
        elapsed = time.perf_counter() - started
        stop.set()
        prober.join()
    return {
        "call_s": elapsed,
        "worst_health_s": max(latencies),
        "median_health_s": statistics.median(latencies),
        "outcome": outcome,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=Path, help="another checkout with its own .venv, run interleaved")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=1_000_000)
    args = parser.parse_args()
    models = Path(__file__).resolve().parent / "models"
    revisions = {"this": None} | ({"base": args.base / ".venv" / "bin" / "python"} if args.base else {})
    running = {name: servers.start("seawall", repository=models, python=python) for name, python in revisions.items()}
    try:
        for level in ("request", "input"):
            data = flood(args.count, level)
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name in running}
            for _ in range(args.rounds):
                for name, server in running.items():  # interleaved
                    rows[name].append(one_round(server, data))
            for name, results in rows.items():
                median = {
                    key: statistics.median(r[key] for r in results)
                    for key in ("call_s", "worst_health_s", "median_health_s")
                }
                print(
                    f"{name:5} {level:8} {len(data)} B  {results[0]['outcome']:17} call {median['call_s']:.3f} s"
                    f"  worst health {median['worst_health_s']:.3f} s  median health {median['median_health_s']:.4f} s"
                    f"  (medians of {args.rounds}; load {os.getloadavg()[0]:.1f})"
                )
    finally:
        for server in running.values():
            server.stop()


if __name__ == "__main__":
    main()
