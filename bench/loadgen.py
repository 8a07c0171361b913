"""A closed-loop load generator for any KServe v2 server: HTTP JSON, HTTP binary, or gRPC.

Each worker process runs `concurrency / processes` connections on uvloop; every connection sends a
pre-encoded request, waits for the whole reply, and repeats. Latencies are collected per request.

    python -m bench.loadgen --url 127.0.0.1:8000 --mode http-json --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Workload:
    model: str
    inputs: list[tuple[str, str, np.ndarray]]  # name, datatype, data


def workload(model: str) -> Workload:
    if model == "add_sub":
        x = np.arange(4, dtype=np.float32)
        return Workload("add_sub", [("INPUT0", "FP32", x), ("INPUT1", "FP32", x)])
    if model == "identity_1mb":
        return Workload("identity", [("INPUT0", "FP32", np.ones((1, 262144), dtype=np.float32))])
    if model == "matmul":
        return Workload("matmul", [("INPUT0", "FP32", np.ones((1, 256), dtype=np.float32))])
    raise SystemExit(f"unknown workload {model}")


def http_request(host: str, load: Workload, binary: bool) -> bytes:
    tensors, blobs = [], []
    for name, datatype, data in load.inputs:
        entry: dict[str, object] = {"name": name, "shape": list(data.shape), "datatype": datatype}
        if binary:
            blob = data.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = data.reshape(-1).tolist()
        tensors.append(entry)
    outputs = None
    if binary:
        outputs = [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]
    header = json.dumps({"inputs": tensors, **({"outputs": outputs} if outputs else {})}).encode()
    body = header + b"".join(blobs)
    lines = [
        f"POST /v2/models/{load.model}/infer HTTP/1.1",
        f"Host: {host}",
        f"Content-Length: {len(body)}",
        "Content-Type: application/octet-stream" if binary else "Content-Type: application/json",
    ]
    if binary:
        lines.append(f"Inference-Header-Content-Length: {len(header)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_reply(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _http_connection(host: str, port: int, payload: bytes, deadline: float, lat: list[float]) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    errors = 0
    while time.monotonic() < deadline:
        start = time.perf_counter()
        writer.write(payload)
        status = await _read_reply(reader)
        lat.append(time.perf_counter() - start)
        errors += status != 200
    writer.close()
    return errors


def _grpc_request(load: Workload) -> bytes:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=load.model)
    for name, datatype, data in load.inputs:
        tensor = request.inputs.add(name=name, datatype=datatype)
        tensor.shape.extend(data.shape)
        request.raw_input_contents.append(data.tobytes())
    return bytes(request.SerializeToString())


async def _grpc_connection(target: str, payload: bytes, deadline: float, lat: list[float]) -> int:
    import grpc

    channel = grpc.aio.insecure_channel(target)
    call = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=None,
        response_deserializer=None,
    )
    errors = 0
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            await call(payload)
        except grpc.RpcError:
            errors += 1
        lat.append(time.perf_counter() - start)
    await channel.close()
    return errors


def _worker(args: tuple[str, str, str, int, float, float], queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    url, mode, model, connections, seconds, start_at = args
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    load = workload(model)
    host, port = url.rsplit(":", 1)

    async def run() -> tuple[list[float], int]:
        while time.time() < start_at:
            await asyncio.sleep(0.001)
        deadline = time.monotonic() + seconds
        lat: list[float] = []
        if mode == "grpc":
            payload = _grpc_request(load)
            jobs = [_grpc_connection(url, payload, deadline, lat) for _ in range(connections)]
        else:
            payload = http_request(host, load, binary=(mode == "http-binary"))
            jobs = [_http_connection(host, int(port), payload, deadline, lat) for _ in range(connections)]
        errors = await asyncio.gather(*jobs)
        return lat, sum(errors)

    lat, errors = asyncio.run(run())
    queue.put((lat, errors))


@dataclass(frozen=True)
class Result:
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int


def run_load(url: str, mode: str, model: str, concurrency: int, seconds: float, processes: int = 2) -> Result:
    """Drive `url` with `concurrency` closed-loop connections spread over `processes` for `seconds`."""
    processes = max(1, min(processes, concurrency))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    start_at = time.time() + 1.0  # let every process connect before the clock starts
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    workers = [
        context.Process(target=_worker, args=((url, mode, model, share, seconds, start_at), queue))
        for share in shares
    ]
    for worker in workers:
        worker.start()
    latencies: list[float] = []
    errors = 0
    for _ in workers:
        lat, errs = queue.get()
        latencies.extend(lat)
        errors += errs
    for worker in workers:
        worker.join()
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return Result(
        len(latencies) / seconds,
        quantiles[49] * 1e3,
        quantiles[89] * 1e3,
        quantiles[98] * 1e3,
        len(latencies),
        errors,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("http-json", "http-binary", "grpc"), default="http-json")
    parser.add_argument("--model", default="add_sub")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    result = run_load(args.url, args.mode, args.model, args.concurrency, args.seconds, args.processes)
    print(json.dumps(result.__dict__))


if __name__ == "__main__":
    main()
