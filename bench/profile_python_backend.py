"""Python-backend data path benchmark, in process (no HTTP): latency, throughput and CPU per inference.

Opens the bundled repository through `seawall.open_server`, runs add_sub sequentially and with N concurrent
tasks on uvloop, and reports µs per inference, inferences/s and CPU µs per inference (server process plus
its stub processes, read from /proc). `--in-process`, `--dynamic-batching` and `--instances N` run a copy of the
model with that configuration.

    .venv/bin/python bench/profile_python_backend.py --seconds 3 --concurrency 1 16 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import uvloop

import seawall
from bench.servers import cpu_seconds
from seawall import InferRequest, Options, RepositoryOptions, Tensor

ROOT = Path(__file__).resolve().parent.parent


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found + [grandchild for child in found for grandchild in _children(child)]  # forked stubs: the template's


def _cpu_split() -> tuple[float, float]:
    """(server process, stub processes) CPU seconds so far."""
    me = os.getpid()
    stubs = 0.0
    for child in _children(me):
        try:
            stubs += cpu_seconds(child)
        except OSError:
            pass
    return cpu_seconds(me), stubs


def _repository(args: argparse.Namespace, workdir: str) -> str:
    if not args.in_process and not args.dynamic_batching and args.instances == 1:
        return str(ROOT / "examples" / "models")
    target = Path(workdir) / "add_sub"
    shutil.copytree(ROOT / "examples" / "models" / "add_sub", target)
    config = (target / "config.pbtxt").read_text()
    if args.dynamic_batching:
        config = config.replace("max_batch_size: 0", "max_batch_size: 64")
        config += f"\ndynamic_batching {{ max_queue_delay_microseconds: {args.queue_delay_us} }}\n"
    if args.instances != 1:
        config = config.replace("{ kind: KIND_CPU }", f"{{ kind: KIND_CPU count: {args.instances} }}")
    if args.in_process:
        config += '\nparameters { key: "SEAWALL_IN_PROCESS" value { string_value: "true" } }\n'
    (target / "config.pbtxt").write_text(config)
    return workdir


def _request(batched: bool) -> InferRequest:
    shape = (1, 4) if batched else (4,)
    a = np.arange(4, dtype=np.float32).reshape(shape)
    b = np.ones(shape, dtype=np.float32)
    return InferRequest("add_sub", [Tensor.from_numpy("INPUT0", a), Tensor.from_numpy("INPUT1", b)])


async def _run(server: seawall.InferenceServer, concurrency: int, seconds: float, batched: bool) -> tuple[int, float]:
    stop = time.perf_counter() + seconds
    count = 0

    async def client() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await server.infer(_request(batched))
            count += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return count, time.perf_counter() - start


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        options = Options(repository=RepositoryOptions(paths=(_repository(args, workdir),)))
        async with seawall.open_server(options) as server:
            await _run(server, 4, 0.5, args.dynamic_batching)  # warm up
            for concurrency in args.concurrency:
                host0, stubs0 = _cpu_split()
                count, elapsed = await _run(server, concurrency, args.seconds, args.dynamic_batching)
                host1, stubs1 = _cpu_split()
                host_us = (host1 - host0) / count * 1e6
                stub_us = (stubs1 - stubs0) / count * 1e6
                latency_us = elapsed / count * 1e6 * concurrency
                print(
                    f"concurrency {concurrency:3d}: {count / elapsed:8.0f} infer/s  {latency_us:7.1f} µs latency"
                    f"  CPU/infer {host_us + stub_us:6.1f} µs (server {host_us:.1f}, stubs {stub_us:.1f})"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 32])
    parser.add_argument("--in-process", action="store_true", help="run model.py in the server process")
    parser.add_argument("--dynamic-batching", action="store_true", help="max_batch_size 64 + dynamic_batching")
    parser.add_argument("--instances", type=int, default=1, help="instance_group count")
    parser.add_argument("--queue-delay-us", type=int, default=0, help="max_queue_delay_microseconds")
    args = parser.parse_args()
    uvloop.run(_main(args))


if __name__ == "__main__":
    main()
