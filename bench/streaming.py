"""`make bench-streaming`: a decoupled model streaming 100 responses per request (bench/models/stream_100), Seawall
and Triton side by side, over gRPC ModelStreamInfer and HTTP generate_stream (Server-Sent Events), each with two
different clients, interleaved repetitions, medians:

- grpc-aio: one grpc.aio bidirectional stream per closed loop (protobuf parsed to find the final flag);
- tritonclient: tritonclient.grpc's own streaming API (a stream and a callback per thread), as users write it;
- sse-asyncio: raw HTTP/1.1 keep-alive connections on asyncio, the chunked body scanned for `data:` events;
- sse-http-client: http.client in threads, the event stream read line by line.

Figures per cell: responses per second, first-response latency (request sent → first response) and the whole
stream's latency. Raw results go to bench/results/raw/streaming-<run>.json, the table to stdout.

    python -m bench.streaming [--reps 5] [--seconds 5] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import queue
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import servers

MODEL = "stream_100"
COUNT = 100
STREAM_PATH = "/inference.GRPCInferenceService/ModelStreamInfer"
RAW = Path(__file__).resolve().parent / "results" / "raw"
CLIENTS = ("grpc-aio", "tritonclient", "sse-asyncio", "sse-http-client")


@dataclass
class Samples:
    """What the closed loops of one cell saw inside the measurement window."""

    responses: int = 0
    first_s: list[float] = field(default_factory=list)
    whole_s: list[float] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, first: float, whole: float, responses: int) -> None:
        with self.lock:
            self.first_s.append(first)
            self.whole_s.append(whole)
            self.responses += responses
            self.errors += responses != COUNT


def _stream_request() -> bytes:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=MODEL, id="bench")
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    tensor = request.inputs.add(name="COUNT", datatype="INT32", shape=[1])
    tensor.contents.int_contents.append(COUNT)
    return bytes(request.SerializeToString())


async def _grpc_aio_loop(target: str, until: float, samples: Samples) -> None:
    import grpc
    from tritonclient.grpc import service_pb2

    request = _stream_request()
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(STREAM_PATH, request_serializer=None, response_deserializer=None)()
        while time.monotonic() < until:
            sent = time.perf_counter()
            await call.write(request)
            first, responses = 0.0, 0
            while True:
                raw = await call.read()
                message = service_pb2.ModelStreamInferResponse.FromString(raw)
                final = message.infer_response.parameters["triton_final_response"].bool_param
                if message.error_message or not final:
                    first = first or time.perf_counter() - sent
                    responses += not message.error_message
                if final or message.error_message:
                    break
            samples.add(first, time.perf_counter() - sent, responses)
        await call.done_writing()


def _tritonclient_loop(target: str, until: float, samples: Samples) -> None:
    import tritonclient.grpc as grpcclient

    events: queue.Queue[tuple[float, bool]] = queue.Queue()

    def callback(result: object, error: object) -> None:
        final = error is None and result.get_response().parameters["triton_final_response"].bool_param  # type: ignore[attr-defined]
        events.put((time.perf_counter(), bool(final or error is not None)))

    count = grpcclient.InferInput("COUNT", [1], "INT32")
    count.set_data_from_numpy(np.array([COUNT], dtype=np.int32))
    with grpcclient.InferenceServerClient(target) as client:
        client.start_stream(callback=callback)
        while time.monotonic() < until:
            sent = time.perf_counter()
            client.async_stream_infer(MODEL, [count], enable_empty_final_response=True)
            first, responses = 0.0, 0
            while True:
                at, final = events.get(timeout=60)
                if final:
                    break
                first = first or at - sent
                responses += 1
            samples.add(first, time.perf_counter() - sent, responses)
        client.stop_stream()


_SSE_BODY = json.dumps({"COUNT": COUNT}).encode()


def _sse_request(host: str) -> bytes:
    head = (
        f"POST /v2/models/{MODEL}/generate_stream HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(_SSE_BODY)}\r\n\r\n"
    )
    return head.encode() + _SSE_BODY


async def _sse_asyncio_loop(address: str, until: float, samples: Samples) -> None:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    request = _sse_request(address)
    try:
        while time.monotonic() < until:
            sent = time.perf_counter()
            writer.write(request)
            status = await reader.readuntil(b"\r\n\r\n")
            if not status.startswith(b"HTTP/1.1 200") or b"chunked" not in status.lower():
                raise RuntimeError(f"generate_stream: {status[:200]!r}")
            first, responses = 0.0, 0
            while True:  # chunks: <hex size>\r\n<data>\r\n ... 0\r\n\r\n
                size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                events = chunk.count(b"data:")
                if events and not first:
                    first = time.perf_counter() - sent
                responses += events
            samples.add(first, time.perf_counter() - sent, responses)
    finally:
        writer.close()


def _sse_http_client_loop(address: str, until: float, samples: Samples) -> None:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        while time.monotonic() < until:
            sent = time.perf_counter()
            connection.request("POST", f"/v2/models/{MODEL}/generate_stream", _SSE_BODY)
            reply = connection.getresponse()
            first, responses = 0.0, 0
            while line := reply.readline():
                if line.startswith(b"data:"):
                    first = first or time.perf_counter() - sent
                    responses += 1
            reply.read()
            samples.add(first, time.perf_counter() - sent, responses)
    finally:
        connection.close()


def _run_cell(
    server: servers.Server, client: str, concurrency: int, seconds: float, warmup: float
) -> tuple[Samples, float]:
    """`concurrency` closed loops for warm-up + `seconds`: the measurement window's streams and its real length
    (the loops end with the stream they are in when the window closes)."""
    warm, samples = Samples(), Samples()
    target = server.http if client.startswith("sse") else server.grpc

    def run(window: float, into: Samples) -> None:
        until = time.monotonic() + window
        if client in ("grpc-aio", "sse-asyncio"):
            loop = _grpc_aio_loop if client == "grpc-aio" else _sse_asyncio_loop

            async def all_loops() -> None:
                await asyncio.gather(*(loop(target, until, into) for _ in range(concurrency)))

            asyncio.run(all_loops())
        else:
            function: Callable[[str, float, Samples], None] = (
                _tritonclient_loop if client == "tritonclient" else _sse_http_client_loop
            )
            threads = [threading.Thread(target=function, args=(target, until, into)) for _ in range(concurrency)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    run(warmup, warm)
    started = time.perf_counter()
    run(seconds, samples)
    return samples, time.perf_counter() - started


def _cell_record(server: str, client: str, concurrency: int, samples: Samples, window: float) -> dict[str, object]:
    firsts = sorted(samples.first_s) or [0.0]
    wholes = sorted(samples.whole_s) or [0.0]
    return {
        "server": server,
        "client": client,
        "concurrency": concurrency,
        "responses_per_s": samples.responses / window,
        "streams": len(samples.whole_s),
        "first_p50_ms": statistics.median(firsts) * 1e3,
        "first_p99_ms": firsts[min(len(firsts) - 1, int(len(firsts) * 0.99))] * 1e3,
        "whole_p50_ms": statistics.median(wholes) * 1e3,
        "errors": samples.errors,
    }


def _table(cells: list[dict[str, object]], names: list[str]) -> str:
    lines = [
        "| client | c | " + " | ".join(f"{n} resp/s" for n in names) + " | ratio | "
        + " | ".join(f"{n} first p50 ms" for n in names) + " |",
        "|---|---|" + "---|" * (2 * len(names) + 1),
    ]  # fmt: skip
    keys = sorted({(str(c["client"]), int(c["concurrency"])) for c in cells}, key=lambda k: (CLIENTS.index(k[0]), k[1]))  # type: ignore[call-overload]
    for client, concurrency in keys:
        rates, firsts = {}, {}
        for name in names:
            mine = [c for c in cells if (c["server"], c["client"], c["concurrency"]) == (name, client, concurrency)]
            rates[name] = statistics.median(float(c["responses_per_s"]) for c in mine) if mine else 0.0  # type: ignore[arg-type]
            firsts[name] = statistics.median(float(c["first_p50_ms"]) for c in mine) if mine else 0.0  # type: ignore[arg-type]
        ratio = rates[names[0]] / rates[names[1]] if len(names) > 1 and rates[names[1]] else float("nan")
        lines.append(
            f"| {client} | {concurrency} | " + " | ".join(f"{rates[n]:.0f}" for n in names) + f" | {ratio:.2f} | "
            + " | ".join(f"{firsts[n]:.2f}" for n in names) + " |"
        )  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", nargs="+", default=["seawall", "triton"])
    parser.add_argument("--clients", nargs="+", default=list(CLIENTS), choices=CLIENTS)
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    running = {name: servers.start(name) for name in args.servers}
    cells: list[dict[str, object]] = []
    run_id = time.strftime("%Y%m%d-%H%M%S")
    try:
        for rep in range(args.reps):
            for client in args.clients:
                for concurrency in args.concurrency:
                    for name, server in running.items():  # interleaved: A B, A B, ...
                        samples, window = _run_cell(server, client, concurrency, args.seconds, args.warmup)
                        record = _cell_record(name, client, concurrency, samples, window)
                        record["rep"] = rep
                        cells.append(record)
                        print(f"bench-streaming: {json.dumps(record)}", flush=True)
    finally:
        for server in running.values():
            server.stop()
        RAW.mkdir(parents=True, exist_ok=True)
        raw = {"run": run_id, "settings": vars(args), "cells": cells}
        (RAW / f"streaming-{run_id}.json").write_text(json.dumps(raw, indent=1, default=str))
    print(f"\nrun {run_id}: medians of {args.reps} interleaved repetitions, {COUNT} responses per request\n")
    print(_table(cells, list(running)))


if __name__ == "__main__":
    main()
