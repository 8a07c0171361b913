"""`make bench-many-models`: many isolated Python models on one server, Seawall beside Triton.

- density: N copies of add_sub (one instance each) in one repository: start to ready, PSS of the whole process
  tree once settled, and PSS per additional model (against the same server with one copy);
- spread: requests round-robin over the N models at concurrency c, HTTP JSON, closed loop;
- budget (Seawall only; Triton has no such feature): `--model-control-mode=explicit --load-on-request
  --max-loaded-models=B`, requests over the N models drawn from a Zipf distribution: hit rate (requests that
  found their model loaded), latency of the requests that waited for a load, evictions per second.

    python -m bench.many_models [--models 100] [--budget 20] [--seconds 10] [--concurrency 32]
        [--stub-start fork spawn] [--no-budget]

Seawall is measured once per --python-stub-start variant (forked from the stub template, or fresh interpreters).

Raw results go to bench/results/raw/many-models-<run>.json, a table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench import servers

RAW = Path(__file__).resolve().parent / "results" / "raw"
_BODY = json.dumps(
    {
        "inputs": [
            {"name": "INPUT0", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
            {"name": "INPUT1", "shape": [4], "datatype": "FP32", "data": [1, 1, 1, 1]},
        ]
    }
).encode()


def make_repository(root: Path, count: int) -> list[str]:
    """`count` copies of bench/models/add_sub named add_sub_000, add_sub_001, ..."""
    names = [f"add_sub_{index:03d}" for index in range(count)]
    source = servers.MODELS / "add_sub"
    for name in names:
        shutil.copytree(source, root / name)
        config = root / name / "config.pbtxt"
        config.write_text(re.sub(r'^name: "[^"]*"', f'name: "{name}"', config.read_text(), flags=re.M))
    return names


def _request(host: str, model: str) -> bytes:
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(_BODY)}\r\n\r\n"
    )
    return head.encode() + _BODY


async def _read_reply(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    await reader.readexactly(length)
    return status


def drive(address: str, models: list[str], pick: object, concurrency: int, seconds: float) -> dict[str, object]:
    """Closed loops on keep-alive connections; `pick(rng)` chooses each request's model index."""
    host, port = address.rsplit(":", 1)
    payloads = [_request(address, model) for model in models]
    latencies: list[float] = []
    errors: dict[int, int] = {}

    async def loop(seed: int, until: float) -> None:
        rng = np.random.default_rng(seed)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.monotonic() < until:
                started = time.perf_counter()
                writer.write(payloads[pick(rng)])  # type: ignore[operator]
                status = await _read_reply(reader)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    errors[status] = errors.get(status, 0) + 1
        finally:
            writer.close()

    async def run() -> float:
        until = time.monotonic() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(loop(seed, until) for seed in range(concurrency)))
        return time.perf_counter() - started

    window = asyncio.run(run())
    ordered = sorted(latencies) or [0.0]
    return {
        "requests": len(latencies),
        "throughput": len(latencies) / window,
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1e3,
        "errors": errors,
        "latencies": latencies,
    }


def _settled_pss(server: servers.Server) -> int:
    time.sleep(3)  # let start-up garbage go and every stub settle
    return servers.tree_pss_bytes(server.pid)


def density(
    name: str, count: int, concurrency: int, seconds: float, args: tuple[str, ...] = (), label: str = ""
) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="seawall-many-") as scratch:
        one, many = Path(scratch) / "one", Path(scratch) / "many"
        one.mkdir()
        many.mkdir()
        make_repository(one, 1)
        models = make_repository(many, count)
        server = servers.start(name, timeout=900, repository=one, args=args)
        try:
            single = _settled_pss(server)
        finally:
            server.stop()
        server = servers.start(name, timeout=900, repository=many, args=args)
        try:
            ready_s = server.start_seconds
            total = _settled_pss(server)
            spread = drive(server.http, models, lambda rng: int(rng.integers(len(models))), concurrency, seconds)
        finally:
            server.stop()
    spread.pop("latencies")
    return {
        "server": label or name,
        "models": count,
        "ready_s": ready_s,
        "pss_mib": total / 2**20,
        "pss_one_mib": single / 2**20,
        "pss_per_model_mib": (total - single) / (count - 1) / 2**20,
        "spread": spread,
    }


def _counter(address: str, name: str) -> int:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        match = re.search(rf"^{name} (\d+)", reply.read().decode(), re.M)
    return int(match.group(1)) if match else 0


def budget(count: int, budget_models: int, concurrency: int, seconds: float, zipf: float) -> dict[str, object]:
    """Seawall with load on request under a budget; Zipf-distributed requests over the models."""
    with tempfile.TemporaryDirectory(prefix="seawall-many-") as scratch:
        models = make_repository(Path(scratch), count)
        args = (
            "--model-control-mode=explicit",
            "--allow-unrestricted-model-repository=true",
            "--load-on-request=true",
            f"--max-loaded-models={budget_models}",
        )
        server = servers.start("seawall", timeout=300, repository=Path(scratch), args=args)
        try:
            weights = 1.0 / np.arange(1, count + 1) ** zipf
            weights /= weights.sum()

            def pick(rng: np.random.Generator) -> int:
                return int(rng.choice(count, p=weights))

            metrics = server.http  # the metrics listener is bound at port 0: read its address from the log
            for line in server.lines:
                if "Seawall ready:" in line:
                    metrics = line.split("metrics=")[1].split()[0]
            loads0 = _counter(metrics, "seawall_model_loads_on_request")
            evictions0 = _counter(metrics, "seawall_model_evictions")
            result = drive(server.http, models, pick, concurrency, seconds)
            loads = _counter(metrics, "seawall_model_loads_on_request") - loads0
            evictions = _counter(metrics, "seawall_model_evictions") - evictions0
        finally:
            server.stop()
    latencies = sorted(result.pop("latencies"))  # type: ignore[arg-type]
    warm = statistics.median(latencies) if latencies else 0.0
    cold = [x for x in latencies if x > max(0.05, 10 * warm)]  # waited for a load (a warm add_sub: ~ms)
    return {
        "models": count,
        "budget": budget_models,
        "zipf": zipf,
        **result,
        "loads": loads,
        "hit_rate": 1 - loads / max(1, int(result["requests"])),  # type: ignore[call-overload]
        "cold_requests": len(cold),
        "cold_p50_ms": statistics.median(cold) * 1e3 if cold else None,
        "cold_p99_ms": cold[int(len(cold) * 0.99)] * 1e3 if cold else None,
        "evictions_per_s": evictions / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", nargs="+", default=["seawall", "triton"])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--stub-start", nargs="+", default=["fork", "spawn"], help="Seawall's --python-stub-start variants to measure"
    )
    parser.add_argument("--no-budget", action="store_true", help="skip the load-on-request section")
    args = parser.parse_args()
    run_id = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, object] = {"run": run_id, "settings": vars(args), "density": [], "budget": None}
    variants = [
        (name, (f"--python-stub-start={start}",), f"seawall ({start})") if name == "seawall" else (name, (), name)
        for name in args.servers
        for start in (args.stub_start if name == "seawall" else [""])
    ]
    for name, extra, label in variants:
        row = density(name, args.models, args.concurrency, args.seconds, extra, label)
        results["density"].append(row)  # type: ignore[attr-defined]
        print(f"bench-many-models: {json.dumps(row)}", flush=True)
    if "seawall" in args.servers and not args.no_budget:
        results["budget"] = budget(args.models, args.budget, min(args.concurrency, 8), args.seconds, args.zipf)
        print(f"bench-many-models: budget {json.dumps(results['budget'])}", flush=True)
    RAW.mkdir(parents=True, exist_ok=True)
    (RAW / f"many-models-{run_id}.json").write_text(json.dumps(results, indent=1))
    print(f"\nrun {run_id}: {args.models} copies of add_sub, one instance each\n")
    c = args.concurrency
    print(f"| server | ready s | PSS MiB | PSS per additional model MiB | req/s over all models (c={c}) | p99 ms |")
    print("|---|---|---|---|---|---|")
    for row in results["density"]:  # type: ignore[attr-defined]
        spread = row["spread"]
        print(
            f"| {row['server']} | {row['ready_s']:.1f} | {row['pss_mib']:.0f} | {row['pss_per_model_mib']:.1f} | "
            f"{spread['throughput']:.0f} | {spread['p99_ms']:.1f} |"
        )
    if results["budget"]:
        b = results["budget"]
        print(
            f"\nbudget {b['budget']} of {b['models']} models, Zipf s={b['zipf']}: {b['throughput']:.0f} req/s, "  # type: ignore[index]
            f"hit rate {b['hit_rate']:.3f}, {b['cold_requests']} requests waited for a load "  # type: ignore[index]
            f"(p50 {b['cold_p50_ms'] or 0:.0f} ms, p99 {b['cold_p99_ms'] or 0:.0f} ms), "  # type: ignore[index]
            f"{b['evictions_per_s']:.2f} evictions/s, errors {b['errors']}"  # type: ignore[index]
        )


if __name__ == "__main__":
    main()
