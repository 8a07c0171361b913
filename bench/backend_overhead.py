"""Overhead of the onnxruntime and pytorch backends: an MLP (3 layers of 256, ReLU between, built at run time with
the onnx helper API, and the same weights as a TorchScript module) served by Seawall in worker processes (the
default) and on threads of the server (SEAWALL_IN_PROCESS), against calling `session.run()` / the module directly
in this process, the physical limit of this server design.

    python -m bench.backend_overhead [--seconds 3] [--concurrency 1 8 32] [--mode http-binary]

Per model and concurrency: throughput, and server CPU per inference (the whole process tree: workers included)
beside the direct call's CPU per inference; their difference is the server's overhead per inference, the steadier
figure on a shared machine. A floor row per concurrency gives Seawall's cheapest model (the python add_sub run
inline on the event loop): what the frontend and core cost whatever the backend. Every session and module (served
and direct) gets `--threads` intra-op threads (default 1: on a small machine a runtime's spinning thread pool
competes with the server's own threads and the load generator for the same cores). Then dynamic batching
(max_batch_size 32) against the direct batched call (one run of 32 rows): requests of 32 rows each, as Triton's
perf_analyzer measures a batched model (`-b 32`), at c=1 and c=4, and 1-row requests at the largest concurrency
(the batcher gathers them). Throughput and CPU count rows (inferences), not requests. Writes
bench/results/raw/backend-overhead-<time>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import servers
from bench.loadgen import run_load

RAW = Path(__file__).resolve().parent / "results" / "raw"
WIDTH = 256
LAYERS = 3
MAX_BATCH = 32
IN_PROCESS = 'parameters { key: "SEAWALL_IN_PROCESS" value: { string_value: "true" } }\n'
BATCHING = "dynamic_batching { max_queue_delay_microseconds: 200 }\n"


def _weights() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    scale = 1.0 / np.sqrt(WIDTH)
    return [
        (rng.normal(0, scale, (WIDTH, WIDTH)).astype(np.float32), rng.normal(0, 0.1, WIDTH).astype(np.float32))
        for _ in range(LAYERS)
    ]


def onnx_model(weights: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers, current = [], [], "X"
    for index, (weight, bias) in enumerate(weights):
        initializers += [numpy_helper.from_array(weight, f"W{index}"), numpy_helper.from_array(bias, f"B{index}")]
        out = "Y" if index == len(weights) - 1 else f"h{index}"
        gemm = f"g{index}" if index < len(weights) - 1 else out
        nodes.append(helper.make_node("Gemm", [current, f"W{index}", f"B{index}"], [gemm]))
        if index < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [gemm], [out]))
        current = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", WIDTH])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def torch_model(weights: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    import torch

    layers: list[torch.nn.Module] = []
    for index, (weight, bias) in enumerate(weights):
        linear = torch.nn.Linear(WIDTH, WIDTH)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight.T.copy()))  # Gemm: X @ W; Linear: X @ weight.T
            linear.bias.copy_(torch.from_numpy(bias))
        layers += [linear] if index == len(weights) - 1 else [linear, torch.nn.ReLU()]
    mlp = torch.nn.Sequential(*layers).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(mlp), buffer)
    return buffer.getvalue()


def _config(name: str, platform: str, extra: str, threads: int) -> str:
    key = "intra_op_thread_count" if platform == "onnxruntime_onnx" else "INTRA_OP_THREAD_COUNT"
    if threads:
        extra += f'parameters {{ key: "{key}" value: {{ string_value: "{threads}" }} }}\n'
    return (
        f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {MAX_BATCH}\n'
        f'input [ {{ name: "X", data_type: TYPE_FP32, dims: [ {WIDTH} ] }} ]\n'
        f'output [ {{ name: "Y", data_type: TYPE_FP32, dims: [ {WIDTH} ] }} ]\n'
        f"instance_group [ {{ kind: KIND_CPU, count: 1 }} ]\n{extra}"
    )


#: model name → (runtime, config extra)
MODELS = {
    "mlp_onnx": ("onnx", ""),
    "mlp_onnx_inprocess": ("onnx", IN_PROCESS),
    "mlp_torch": ("torch", ""),
    "mlp_torch_inprocess": ("torch", IN_PROCESS),
    "mlp_onnx_batched": ("onnx", BATCHING),
    "mlp_onnx_batched_inprocess": ("onnx", BATCHING + IN_PROCESS),
    "mlp_torch_batched": ("torch", BATCHING),
    "mlp_torch_batched_inprocess": ("torch", BATCHING + IN_PROCESS),
}


def repository(root: Path, files: dict[str, bytes], threads: int) -> Path:
    for name, (runtime, extra) in MODELS.items():
        version = root / name / "1"
        version.mkdir(parents=True)
        platform = "onnxruntime_onnx" if runtime == "onnx" else "pytorch_libtorch"
        (version / ("model.onnx" if runtime == "onnx" else "model.pt")).write_bytes(files[runtime])
        (root / name / "config.pbtxt").write_text(_config(name, platform, extra, threads))
    # the floor: Seawall's cheapest model (the python add_sub run inline on the event loop), frontend and core only
    (root / "add_sub_inline").symlink_to(servers.in_process_repository() / "add_sub_inline", target_is_directory=True)
    return root


def direct_callers(files: dict[str, bytes], threads: int) -> dict[str, Callable[[np.ndarray], Any]]:
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        torch.set_num_threads(threads)
    session = ort.InferenceSession(files["onnx"], sess_options=options, providers=["CPUExecutionProvider"])
    module = torch.jit.load(io.BytesIO(files["torch"]), map_location="cpu").eval()

    def run_torch(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return {"onnx": lambda x: session.run(["Y"], {"X": x}), "torch": run_torch}


def direct(call: Callable[[np.ndarray], Any], batch: int, concurrency: int, seconds: float) -> dict[str, float]:
    """`concurrency` threads calling `call` in a loop on one session/module: inferences/s and CPU µs/inference."""
    x = np.linspace(-1, 1, WIDTH * batch, dtype=np.float32).reshape(batch, WIDTH)
    for _ in range(20):
        call(x)
    counts = [0] * concurrency
    stop = time.perf_counter() + seconds

    def loop(index: int) -> None:
        while time.perf_counter() < stop:
            call(x)
            counts[index] += 1

    cpu, started = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    inferences = sum(counts) * batch
    return {
        "throughput": inferences / (time.perf_counter() - started),
        "cpu_us": (time.process_time() - cpu) / max(1, inferences) * 1e6,
    }


def served(
    server: servers.Server, mode: str, model: str, concurrency: int, seconds: float, rows: int = 1
) -> dict[str, float]:
    """Closed-loop load of `rows`-row requests: inferences (rows)/s, server CPU µs per inference, p50 latency."""
    url = server.grpc if mode == "grpc" else server.http
    workload = model if rows == 1 else f"{model}*{rows}"
    run_load(url, mode, workload, concurrency, 0.5, warmup=0.0)
    cpu = servers.tree_cpu_seconds(server.pid)
    result = run_load(url, mode, workload, concurrency, seconds, warmup=0.0)
    used = servers.tree_cpu_seconds(server.pid) - cpu
    return {
        "throughput": result.throughput * rows,
        "cpu_us": used / max(1, result.total_requests * rows) * 1e6,
        "p50_ms": result.p50_ms,
        "errors": float(result.errors),
    }


def main() -> None:
    """Run every cell, write the raw results and print the table (with the load average before and after)."""
    load_before = os.getloadavg()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--mode", default="http-binary", choices=["http-binary", "http-json", "grpc"])
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads of every session and module (0: the runtime's default)"
    )
    args = parser.parse_args()
    weights = _weights()
    files = {"onnx": onnx_model(weights), "torch": torch_model(weights)}
    callers = direct_callers(files, args.threads)
    x = np.ones((1, WIDTH), dtype=np.float32)
    np.testing.assert_allclose(callers["onnx"](x)[0], callers["torch"](x), rtol=1e-4, atol=1e-5)
    root = repository(Path(tempfile.mkdtemp(prefix="seawall-backend-overhead-")), files, args.threads)
    rows: list[dict[str, Any]] = []
    server = servers.start("seawall", repository=root)
    try:
        for concurrency in args.concurrency:
            floor = served(server, args.mode, "add_sub_inline", concurrency, args.seconds)
            rows.append({"runtime": "-", "how": "floor: python add_sub inline", "c": concurrency, **floor})
            print(f"backend-overhead: {json.dumps(rows[-1])}", flush=True)
            for runtime in ("onnx", "torch"):
                reference = direct(callers[runtime], 1, concurrency, args.seconds)
                rows.append({"runtime": runtime, "how": "direct", "c": concurrency, **reference})
                print(f"backend-overhead: {json.dumps(rows[-1])}", flush=True)
                for how, model in (("isolated", f"mlp_{runtime}"), ("in-process", f"mlp_{runtime}_inprocess")):
                    cell = served(server, args.mode, model, concurrency, args.seconds)
                    rows.append({"runtime": runtime, "how": how, "c": concurrency, **cell})
                    print(f"backend-overhead: {json.dumps(rows[-1])}", flush=True)
        top = max(args.concurrency)
        for runtime in ("onnx", "torch"):
            reference = direct(callers[runtime], MAX_BATCH, 1, args.seconds)
            rows.append({"runtime": runtime, "how": f"direct batch {MAX_BATCH}", "c": 1, **reference})
            print(f"backend-overhead: {json.dumps(rows[-1])}", flush=True)
            for how, suffix in (("isolated, dynamic batching", ""), ("in-process, dynamic batching", "_inprocess")):
                for rows_per_request, concurrency in ((MAX_BATCH, 1), (MAX_BATCH, 4), (1, top)):
                    model = f"mlp_{runtime}_batched{suffix}"
                    cell = served(server, args.mode, model, concurrency, args.seconds, rows_per_request)
                    label = f"{how}, {rows_per_request}-row requests"
                    rows.append({"runtime": runtime, "how": label, "c": concurrency, **cell})
                    print(f"backend-overhead: {json.dumps(rows[-1])}", flush=True)
    finally:
        server.stop()
    RAW.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y%m%d-%H%M%S")
    (RAW / f"backend-overhead-{run_id}.json").write_text(json.dumps({"settings": vars(args), "rows": rows}))
    _print_table(rows, args.mode, args.threads, (load_before, os.getloadavg()))


def _print_table(
    rows: list[dict[str, Any]], mode: str, threads: int, loads: tuple[tuple[float, ...], tuple[float, ...]]
) -> None:
    before, after = (" ".join(f"{value:.2f}" for value in load) for load in loads)
    print(
        f"\nMLP {LAYERS}x{WIDTH}, Seawall over {mode}, {threads or 'default'} intra-op thread(s) per session/module, "
        f"CPU per inference over the server's whole process tree; {os.cpu_count()} cores, load average {before} "
        f"before, {after} after\n"
    )
    print("| runtime | how | c | inferences/s | CPU µs/inf | overhead µs/inf (vs direct) | vs direct throughput |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if row["runtime"] == "-":
            print(f"| - | {row['how']} | {row['c']} | {row['throughput']:.0f} | {row['cpu_us']:.0f} | | |")
            continue
        base = next(
            r
            for r in rows
            if r["runtime"] == row["runtime"]
            and str(r["how"]).startswith("direct")
            and (r["c"] == row["c"] or "batching" in str(row["how"]))
            and ("batch" in str(r["how"])) == ("batching" in str(row["how"]))
        )
        is_direct = str(row["how"]).startswith("direct")
        overhead = "" if is_direct else f"{float(row['cpu_us']) - float(base['cpu_us']):.0f}"
        print(
            f"| {row['runtime']} | {row['how']} | {row['c']} | {float(row['throughput']):.0f} | "
            f"{float(row['cpu_us']):.0f} | {overhead} | "
            f"{'' if is_direct else format(float(row['throughput']) / float(base['throughput']), '.0%')} |"
        )


if __name__ == "__main__":
    main()
