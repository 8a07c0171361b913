"""A closed-loop load generator for any KServe v2 server: HTTP JSON, HTTP binary, or gRPC.

Each worker process runs `concurrency / processes` connections on uvloop; every connection sends a
pre-encoded request, waits for the whole reply, and repeats. HTTP is HTTP/1.1 on raw asyncio streams; gRPC is
a minimal HTTP/2 client (`bench.grpc_client`: one connection per closed loop, grpc-status read from the
trailers), which costs far less per call than a grpc.aio channel. Latencies are collected per request.

    python -m bench.loadgen --url 127.0.0.1:8000 --mode http-json --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import statistics
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace

import numpy as np

from bench.grpc_client import GrpcConnection

MODES = ("http-json", "http-binary", "grpc")
SEQUENCE_LENGTH = 8  # requests per sequence of the `sequence` workload
#: (sequence_id, sequence_start, sequence_end) of one request of a sequence
Sequence = tuple[int, bool, bool]
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class Workload:
    model: str
    inputs: list[tuple[str, str, np.ndarray]]  # name, datatype, data
    outputs: tuple[str, ...]
    sequence_length: int = 0  # > 0: each closed loop sends sequences of this many requests (sequence_id, ...)


def workload(name: str) -> Workload:
    """The request of one benchmark workload (models in bench/models and bench/mlserver)."""
    if name in ("add_sub", "add_sub_inprocess", "add_sub_inline", "bls_add_sub", "ensemble_add_sub"):
        x = np.arange(4, dtype=np.float32)
        return Workload(name, [("INPUT0", "FP32", x), ("INPUT1", "FP32", x)], ("OUTPUT0", "OUTPUT1"))
    if name in ("identity", "identity_1mb"):
        return Workload("identity", [("INPUT0", "FP32", np.ones(262144, dtype=np.float32))], ("OUTPUT0",))
    if name == "matmul":
        return Workload("matmul", [("INPUT0", "FP32", np.ones((1, 256), dtype=np.float32))], ("OUTPUT0",))
    if name.startswith("mlp_"):  # bench/backend_overhead.py: a 3-layer MLP of 256 (ONNX or TorchScript)
        model, _, rows = name.partition("*")  # "mlp_x*32": requests of 32 rows each (perf_analyzer's -b 32)
        count = int(rows or 1)
        x = np.linspace(-1, 1, 256 * count, dtype=np.float32).reshape(count, 256)
        return Workload(model, [("X", "FP32", x)], ("Y",))
    if name == "pipeline":  # the ensemble pipeline_pre -> pipeline_model -> pipeline_post
        return Workload("pipeline", [("INPUT", "FP32", np.arange(4, dtype=np.float32))], ("OUTPUT",))
    if name == "bls_64mib":  # a 4-byte request; the model makes one BLS call of a 64 MiB tensor
        return Workload("bls_64mib", [("INPUT0", "FP32", np.ones(1, dtype=np.float32))], ("OUTPUT0",))
    if name == "sequence":  # a sequence model (direct strategy), sequences of SEQUENCE_LENGTH requests
        inputs = [("INPUT", "INT32", np.ones((1, 1), dtype=np.int32))]
        return Workload("sequence", inputs, ("OUTPUT",), SEQUENCE_LENGTH)
    raise ValueError(f"unknown workload {name}")


def _sequence(load: Workload, sequence: Sequence | None) -> Sequence | None:
    """The sequence parameters of a request: a sequence workload's request is a whole sequence unless told."""
    return sequence if sequence is not None or not load.sequence_length else (1, True, True)


class sequences(Iterator[bytes]):  # noqa: N801 (used as a generator)
    """Requests of consecutive sequences of `length` requests each, ids from `first_id` (one closed loop).

    `open`: the last request given was not the end of its sequence (a loop that stops then finishes the
    sequence first, so that no slot of the model stays held by an abandoned sequence for the next cell)."""

    def __init__(self, make: Callable[[Sequence], bytes], length: int, first_id: int) -> None:
        self._make, self._length, self._ids = make, length, itertools.count(first_id)
        self._id, self._index = 0, length
        self.open = False

    def __next__(self) -> bytes:
        if self._index >= self._length:
            self._id, self._index = next(self._ids), 0
        index, self._index = self._index, self._index + 1
        self.open = self._index < self._length
        return self._make((self._id, index == 0, not self.open))


class spread(Iterator[bytes]):  # noqa: N801 (used as a generator)
    """Requests to models drawn uniformly from a list (one closed loop; seeded per connection)."""

    def __init__(self, payloads: list[bytes], seed: int) -> None:
        self._payloads, self._rng = payloads, np.random.default_rng(seed)

    def __next__(self) -> bytes:
        return self._payloads[int(self._rng.integers(len(self._payloads)))]


def sequence_base(connection: int) -> int:
    """The first sequence id of one closed loop: distinct across processes and connections."""
    return (os.getpid() << 32) | (connection << 20)


def http_body(load: Workload, binary: bool, sequence: Sequence | None = None) -> tuple[dict[str, str], bytes]:
    """Headers and body of one inference request (JSON, or Triton's binary tensor extension)."""
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
    document: dict[str, object] = {"inputs": tensors}
    sequence = _sequence(load, sequence)
    if sequence is not None:
        document["parameters"] = dict(zip(("sequence_id", "sequence_start", "sequence_end"), sequence, strict=True))
    if binary:
        document["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in load.outputs]
    header = json.dumps(document).encode()
    if not binary:
        return {"Content-Type": "application/json"}, header
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return headers, header + b"".join(blobs)


def http_request(host: str, load: Workload, binary: bool, sequence: Sequence | None = None) -> bytes:
    """The whole HTTP/1.1 request, bytes on the wire."""
    headers, body = http_body(load, binary, sequence)
    lines = [f"POST /v2/models/{load.model}/infer HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def grpc_body(load: Workload, sequence: Sequence | None = None) -> bytes:
    """A gRPC message: the 5-byte frame prefix (uncompressed, length) and a serialized ModelInferRequest."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=load.model)
    sequence = _sequence(load, sequence)
    if sequence is not None:
        request.parameters["sequence_id"].int64_param = sequence[0]
        request.parameters["sequence_start"].bool_param = sequence[1]
        request.parameters["sequence_end"].bool_param = sequence[2]
    for name, datatype, data in load.inputs:
        tensor = request.inputs.add(name=name, datatype=datatype)
        tensor.shape.extend(data.shape)
        request.raw_input_contents.append(data.tobytes())
    for name in load.outputs:
        request.outputs.add(name=name)
    message = bytes(request.SerializeToString())
    return struct.pack(">BI", 0, len(message)) + message


async def _read_reply(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _http_loop(host: str, port: int, payload: bytes | Iterator[bytes], clock: _Clock, lat: list[float]) -> int:
    """One closed loop: the same request again and again, or the next request of `payload`'s sequences."""
    errors = 0
    reader, writer = await asyncio.open_connection(host, port)
    await clock.started.wait()
    while not clock.is_over():
        data = payload if isinstance(payload, bytes) else next(payload)
        start = time.perf_counter()
        try:
            writer.write(data)
            ok = await _read_reply(reader) == 200
        except (OSError, asyncio.IncompleteReadError, ValueError):
            ok = False
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
        clock.record(lat, time.perf_counter() - start)
        errors += not ok and clock.is_measuring()
    while isinstance(payload, sequences) and payload.open:  # end the sequence (not measured)
        try:
            writer.write(next(payload))
            await _read_reply(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            break
    writer.close()
    return errors


async def open_grpc(host: str, port: int, body: bytes) -> GrpcConnection:
    """Connect one `GrpcConnection` to host:port."""
    _, protocol = await asyncio.get_running_loop().create_connection(
        lambda: GrpcConnection(f"{host}:{port}", body, GRPC_PATH), host, port
    )
    return protocol


async def _grpc_loop(
    host: str, port: int, body: bytes, clock: _Clock, lat: list[float], bodies: sequences | None = None
) -> int:
    """One closed loop over one HTTP/2 connection: `body` again and again, or the next request of `bodies`."""
    errors = 0
    connection = await open_grpc(host, port, body)
    await clock.started.wait()
    while not clock.is_over():
        if bodies is not None:
            connection.set_body(next(bodies))
        start = time.perf_counter()
        try:
            ok = await connection.call()
        except Exception:  # a broken connection: count, reconnect, go on
            ok = False
        if not ok and connection.is_closed():
            connection = await open_grpc(host, port, body)
        clock.record(lat, time.perf_counter() - start)
        errors += not ok and clock.is_measuring()
    while isinstance(bodies, sequences) and bodies.open and not connection.is_closed():  # end the sequence
        connection.set_body(next(bodies))
        try:
            await connection.call()
        except Exception:
            break
    connection.close()
    return errors


class _Clock:
    """Warm-up then measurement window, shared by the connections of one worker process."""

    def __init__(self, warmup: float, seconds: float) -> None:
        self.started = asyncio.Event()
        self._warmup, self._seconds = warmup, seconds
        self._measure_from = self._end = 0.0
        self.warmup_requests = 0

    def start(self) -> None:
        now = time.monotonic()
        self._measure_from, self._end = now + self._warmup, now + self._warmup + self._seconds
        self.started.set()

    def is_measuring(self) -> bool:
        return time.monotonic() >= self._measure_from

    def is_over(self) -> bool:
        return time.monotonic() >= self._end

    def record(self, lat: list[float], seconds: float) -> None:
        if self.is_measuring():
            lat.append(seconds)
        else:
            self.warmup_requests += 1


def _worker(
    args: tuple[str, str, str, int, float, float, tuple[str, ...]],
    barrier: object,
    queue: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    url, mode, model, connections, warmup, seconds, models = args
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    load = workload(model)
    host, port = url.rsplit(":", 1)

    async def run() -> tuple[list[float], int, int]:
        clock = _Clock(warmup, seconds)
        lat: list[float] = []
        length = load.sequence_length
        if mode == "grpc":
            body = grpc_body(load)
            jobs = []
            for index in range(connections):
                bodies = None
                if length:
                    bodies = sequences(lambda s: grpc_body(load, s), length, sequence_base(index))
                jobs.append(asyncio.create_task(_grpc_loop(host, int(port), body, clock, lat, bodies)))
        else:
            binary = mode == "http-binary"
            jobs = []
            for index in range(connections):
                payload: bytes | Iterator[bytes] = http_request(host, load, binary)
                if models:
                    payloads = [http_request(host, replace(load, model=name), binary) for name in models]
                    payload = spread(payloads, sequence_base(index))
                elif length:
                    payload = sequences(lambda s: http_request(host, load, binary, s), length, sequence_base(index))
                jobs.append(asyncio.create_task(_http_loop(host, int(port), payload, clock, lat)))
        await asyncio.sleep(0.05)  # let the connections open before the common start
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)  # type: ignore[attr-defined]
        clock.start()
        errors = await asyncio.gather(*jobs)
        return lat, sum(errors), clock.warmup_requests

    try:
        queue.put(asyncio.run(run()))
    except Exception as exc:  # report, do not hang the parent
        queue.put(([], -1, 0, repr(exc)))


@dataclass(frozen=True)
class Result:
    driver: str
    throughput: float  # requests/s in the measurement window
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int  # in the measurement window
    errors: int
    total_requests: int  # warm-up included (for CPU per inference)


def summarize(driver: str, latencies: list[float], seconds: float, errors: int, total: int) -> Result:
    """Throughput and percentiles of a list of per-request latencies (seconds)."""
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    return Result(
        driver,
        len(latencies) / seconds,
        quantiles[49] * 1e3,
        quantiles[89] * 1e3,
        quantiles[98] * 1e3,
        len(latencies),
        errors,
        total,
    )


def run_load(
    url: str,
    mode: str,
    model: str,
    concurrency: int,
    seconds: float,
    processes: int = 2,
    warmup: float = 0.3,
    on_start: object = None,
    models: tuple[str, ...] = (),
) -> Result:
    """Drive `url` with `concurrency` closed-loop connections spread over `processes` for `warmup + seconds`.

    `models` (HTTP only): copies of the workload's model; each request goes to one drawn uniformly.

    `on_start` (a callable) runs in this process when every connection is open, just before the load starts.
    Raises RuntimeError when a worker process fails.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode}")
    processes = max(1, min(processes, concurrency))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    barrier = context.Barrier(processes + 1)
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    workers = [
        context.Process(
            target=_worker, args=((url, mode, model, share, warmup, seconds, models), barrier, queue), daemon=True
        )
        for share in shares
    ]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=60)
    if callable(on_start):
        on_start()
    latencies: list[float] = []
    errors = warm = 0
    failures = []
    for _ in workers:
        item = queue.get(timeout=warmup + seconds + 60)
        if item[1] < 0:
            failures.append(item[3])
        latencies.extend(item[0])
        errors += item[1]
        warm += item[2]
    for worker in workers:
        worker.join(10)
    if failures:
        raise RuntimeError(f"load generator failed: {failures[0]}")
    driver = "loadgen-http1" if mode != "grpc" else "loadgen-http2"
    return summarize(driver, latencies, seconds, errors, len(latencies) + warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=MODES, default="http-json")
    parser.add_argument("--model", default="add_sub", help="workload: add_sub, identity, matmul")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    result = run_load(args.url, args.mode, args.model, args.concurrency, args.seconds, args.processes)
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
