"""`make bench-many-models`: many isolated Python models on one server, Seawall beside Triton.

- density: N copies of add_sub (one instance each) in one repository: start to ready, PSS of the whole process
  tree once settled, and PSS per additional model (against the same server with one copy);
- spread: each request to one of the N models drawn uniformly, concurrency c, HTTP JSON, closed loops, with two
  clients: bench.loadgen (two uvloop processes) and wrk (a Lua script draws the path);
- budget (Seawall only; Triton has no such feature): `--model-control-mode=explicit --load-on-request
  --max-loaded-models=B`, requests over the N models drawn from a Zipf distribution. A warm-up window (the cold
  start: every model misses until the budget is full) is run and reported apart; the measured window that
  follows gives the hit rate (1 - (loads on request + failed requests) / requests, loads from the server's
  counters; a 507 is a miss), latency of the requests that waited for a load (those during which the server
  logged their model loaded: its log's timestamps against the client's wall clock), evictions per second.
- each spread cell also runs against the same server with one model (the base), and reports the CPU of the
  server's process tree per request, which the machine's other load disturbs less than req/s;
- interleaved spread (`--rounds`, default 3): the spread cell again with every server up at once on one
  repository, each client driving each server in turn in every round (order alternating), so that the machine's
  other load falls on all alike; medians over the rounds and per-round ratios to Triton.

    python -m bench.many_models [--models 100] [--budget 20] [--seconds 10] [--concurrency 32]
        [--stub-start fork spawn] [--rounds 3] [--no-budget]

Seawall is measured once per --python-stub-start variant (forked from the stub template, or fresh interpreters).

Raw results go to bench/results/raw/many-models-<run>.json, a table to stdout, and the same table with the load
average and commit is appended to bench/results/many-models.md (one section per run).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench import loadgen, native, servers

RAW = Path(__file__).resolve().parent / "results" / "raw"
REPORT = Path(__file__).resolve().parent / "results" / "many-models.md"
_BODY = loadgen.http_body(loadgen.workload("add_sub"), binary=False)[1]  # the same bytes as bench.loadgen's


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
    calls: list[tuple[str, float, float, int]] = []  # model, wall-clock start and end, status
    errors: dict[int, int] = {}

    async def loop(seed: int, until: float) -> None:
        rng = np.random.default_rng(seed)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.monotonic() < until:
                index = pick(rng)  # type: ignore[operator]
                started, wall = time.perf_counter(), time.time()
                writer.write(payloads[index])
                status = await _read_reply(reader)
                latencies.append(time.perf_counter() - started)
                calls.append((models[index], wall, time.time(), status))
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
        "calls": calls,
    }


def loadavg() -> float:
    """The machine's 1-minute load average."""
    return os.getloadavg()[0]


def warm_up(address: str, models: list[str]) -> None:
    """One request to each model in turn (a stub's first request is slower: not what the spread cell measures).

    Raises:
        RuntimeError: a model does not answer 200.
    """
    for model in models:
        request = urllib.request.Request(f"http://{address}/v2/models/{model}/infer", data=_BODY, method="POST")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as reply:
            if reply.status != 200:
                raise RuntimeError(f"warm-up of {model}: HTTP {reply.status}")


def _clients(
    address: str, models: list[str], concurrency: int, seconds: float
) -> dict[str, Callable[[], loadgen.Result]]:
    """The load clients, by name: bench.loadgen, and wrk when installed (a Lua script draws each request's path)."""
    runs: dict[str, Callable[[], loadgen.Result]] = {
        "loadgen": lambda: loadgen.run_load(
            address, "http-json", "add_sub", concurrency, seconds, warmup=1.0, models=tuple(models)
        )
    }
    if native.is_available("http-json"):
        runs["wrk"] = lambda: native.run_wrk_spread(address, models, _BODY, concurrency, seconds)
    return runs


def _measure(server: servers.Server, client: str, run: Callable[[], loadgen.Result]) -> dict[str, object]:
    """One client's window against `server`, with the CPU of the server's process tree per request (warm-up
    included), which the machine's other load changes less than req/s. A client that fails is recorded with its
    error (the other cells still run)."""
    try:
        cpu = servers.tree_cpu_seconds(server.pid)
        result = run()
        cpu = servers.tree_cpu_seconds(server.pid) - cpu
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"bench-many-models: {client} failed: {exc!r}", flush=True)
        return {"error": repr(exc), "loadavg": loadavg()}
    return {
        **dataclasses.asdict(result),
        "cpu_us_per_request": cpu / max(1, result.total_requests) * 1e6,
        "loadavg": loadavg(),
    }


def spread(server: servers.Server, models: list[str], concurrency: int, seconds: float) -> dict[str, object]:
    """Throughput with requests drawn uniformly over `models`, once per client."""
    warm_up(server.http, models)
    runs = _clients(server.http, models, concurrency, seconds)
    return {client: _measure(server, client, run) for client, run in runs.items()}


def interleaved(
    variants: list[tuple[str, tuple[str, ...], str]], count: int, concurrency: int, seconds: float, rounds: int
) -> dict[str, dict[str, list[dict[str, object]]]]:
    """The spread cell again with every server up at once on the same repository: in each round every client
    drives every server in turn, the order reversed every other round, so that the machine's other load falls
    on all of them alike. Returns label -> client -> one result per round."""
    results: dict[str, dict[str, list[dict[str, object]]]] = {}
    with tempfile.TemporaryDirectory(prefix="seawall-many-") as scratch:
        models = make_repository(Path(scratch), count)
        started: list[tuple[str, servers.Server, dict[str, Callable[[], loadgen.Result]]]] = []
        try:
            for name, extra, label in variants:
                server = servers.start(name, timeout=900, repository=Path(scratch), args=extra)
                started.append((label, server, _clients(server.http, models, concurrency, seconds)))
                warm_up(server.http, models)
                results[label] = {}
            for index in range(rounds):
                for client in started[0][2]:
                    for label, server, runs in started if index % 2 == 0 else started[::-1]:
                        results[label].setdefault(client, []).append(_measure(server, client, runs[client]))
        finally:
            for _, server, _ in started:
                server.stop()
    return results


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
        first = make_repository(one, 1)
        models = make_repository(many, count)
        server = servers.start(name, timeout=900, repository=one, args=args)
        try:
            single = _settled_pss(server)
            one_model = spread(server, first, concurrency, seconds)  # the base: the same load on one model
        finally:
            server.stop()
        load_at_start = loadavg()
        server = servers.start(name, timeout=900, repository=many, args=args)
        try:
            ready_s = server.start_seconds
            total = _settled_pss(server)
            clients = spread(server, models, concurrency, seconds)
        finally:
            server.stop()
    return {
        "server": label or name,
        "models": count,
        "ready_s": ready_s,
        "loadavg_at_start": load_at_start,
        "pss_mib": total / 2**20,
        "pss_one_mib": single / 2**20,
        "pss_per_model_mib": (total - single) / (count - 1) / 2**20,
        "spread": clients,
        "one_model": one_model,
    }


def _counter(address: str, name: str) -> int:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        match = re.search(rf"^{name} (\d+)", reply.read().decode(), re.M)
    return int(match.group(1)) if match else 0


_LOADED = re.compile(r"^I\d{4} (\d\d:\d\d:\d\d\.\d+) .*\] successfully loaded '([^']+)' version")


def load_times(lines: list[str]) -> dict[str, list[float]]:
    """When each model finished loading (wall clock, from the server log's timestamps: local time, today)."""
    today = datetime.date.today()
    loaded: dict[str, list[float]] = {}
    for line in lines:
        match = _LOADED.match(line)
        if match:
            moment = datetime.datetime.combine(today, datetime.time.fromisoformat(match.group(1)))
            loaded.setdefault(match.group(2), []).append(moment.timestamp())
    return loaded


def _waited(calls: list[tuple[str, float, float, int]], loaded: dict[str, list[float]]) -> list[float]:
    """Latencies (s) of the successful requests during which their model finished loading: they waited for it."""
    return sorted(
        end - start
        for model, start, end, status in calls
        if status == 200 and any(start < moment <= end for moment in loaded.get(model, ()))
    )


def _window(
    server: servers.Server, metrics: str, models: list[str], pick: object, concurrency: int, seconds: float
) -> dict[str, object]:
    """One closed-loop window of `drive` with the server's load and eviction counters read around it."""
    loads0 = _counter(metrics, "seawall_model_loads_on_request")
    evictions0 = _counter(metrics, "seawall_model_evictions")
    result = drive(server.http, models, pick, concurrency, seconds)
    loads = _counter(metrics, "seawall_model_loads_on_request") - loads0
    evictions = _counter(metrics, "seawall_model_evictions") - evictions0
    result.pop("latencies")
    calls: list[tuple[str, float, float, int]] = result.pop("calls")  # type: ignore[assignment]
    deadline = time.monotonic() + 10  # the log lines of the last loads may still be in the pipe
    while sum(map(len, load_times(server.lines).values())) < loads0 + loads and time.monotonic() < deadline:
        time.sleep(0.05)
    cold = _waited(calls, load_times(server.lines))
    failed = sum(result["errors"].values())  # type: ignore[attr-defined]
    return {
        **result,
        "loads": loads,
        "evictions": evictions,
        # a hit found its model loaded; a miss loaded it, or failed (507: nothing evictable to make room)
        "hit_rate": 1 - (loads + failed) / max(1, int(result["requests"])),  # type: ignore[call-overload]
        "cold_requests": len(cold),
        "cold_p50_ms": statistics.median(cold) * 1e3 if cold else None,
        "cold_p99_ms": cold[int(len(cold) * 0.99)] * 1e3 if cold else None,
        "evictions_per_s": evictions / seconds,
        "loadavg": loadavg(),
    }


def budget(
    count: int, budget_models: int, concurrency: int, seconds: float, zipf: float, warmup: float
) -> dict[str, object]:
    """Seawall with load on request under a budget; Zipf-distributed requests over the models: a warm-up window
    (the cold start, reported apart), then the measured window."""
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
            cold_start = _window(server, metrics, models, pick, concurrency, warmup)
            measured = _window(server, metrics, models, pick, concurrency, seconds)
        finally:
            server.stop()
    return {"models": count, "budget": budget_models, "zipf": zipf, **measured, "warmup": cold_start}


def _commit() -> str:
    argv = ["git", "-C", str(servers.ROOT), "describe", "--always", "--dirty"]
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()


def render(results: dict[str, Any]) -> list[str]:
    """The run as Markdown: density and spread per server, Seawall/Triton ratios, the budget cell."""
    settings = results["settings"]
    rows: list[dict[str, Any]] = results["density"]
    c = settings["concurrency"]
    lines = [
        f"## run {results['run']} (commit {results['commit']}, load average {results['loadavg']:.1f} at start)",
        "",
        f"{settings['models']} copies of add_sub, one instance each; 2 cores, shared.",
        "",
        f"| server | load avg | ready s | PSS MiB | PSS per additional model MiB | req/s loadgen (c={c}) | p99 ms | "
        f"req/s wrk (c={c}) | p99 ms | CPU µs/req loadgen, wrk | one model: req/s loadgen, wrk; CPU µs/req |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = []
        for client in ("loadgen", "wrk"):
            result = row["spread"].get(client) or {"error": "not run"}
            failed = "error" in result
            cells += ["failed", "-"] if failed else [f"{result['throughput']:.0f}", f"{result['p99_ms']:.1f}"]
        one = row.get("one_model", {})
        base = [f"{one.get(client, {}).get('throughput', float('nan')):.0f}" for client in ("loadgen", "wrk")]
        base_cpu = [
            f"{one.get(client, {}).get('cpu_us_per_request', float('nan')):.0f}" for client in ("loadgen", "wrk")
        ]
        cpu = [
            f"{row['spread'].get(client, {}).get('cpu_us_per_request', float('nan')):.0f}"
            for client in ("loadgen", "wrk")
        ]
        lines.append(
            f"| {row['server']} | {row['loadavg_at_start']:.1f} | {row['ready_s']:.1f} | {row['pss_mib']:.0f} | "
            f"{row['pss_per_model_mib']:.2f} | " + " | ".join(cells) + f" | {', '.join(cpu)} | "
            f"{', '.join(base)}; {', '.join(base_cpu)} |"
        )
    triton = next((row for row in rows if row["server"] == "triton"), None)
    for row in rows:
        if triton is None or row is triton:
            continue
        ratios = [
            f"{client} {row['spread'][client]['throughput'] / triton['spread'][client]['throughput']:.2f}x"
            for client in ("loadgen", "wrk")
            if "throughput" in row["spread"].get(client, {}) and triton["spread"].get(client, {}).get("throughput")
        ]
        cpu_ratios = [
            f"{client} {row['spread'][client]['cpu_us_per_request'] / triton['spread'][client]['cpu_us_per_request']:.2f}x"  # noqa: E501
            for client in ("loadgen", "wrk")
            if "cpu_us_per_request" in row["spread"].get(client, {})
            and triton["spread"].get(client, {}).get("cpu_us_per_request")
        ]
        lines += [
            "",
            f"{row['server']}/triton: ready {triton['ready_s'] / row['ready_s']:.1f}x faster, "
            f"PSS per model {triton['pss_per_model_mib'] / row['pss_per_model_mib']:.1f}x less, "
            f"throughput {', '.join(ratios)}; CPU per request {', '.join(cpu_ratios)} (Seawall/Triton)",
        ]
    lines += _render_interleaved(results.get("interleaved") or {}, settings.get("rounds", 0))
    b = results["budget"]
    if b:
        w = b["warmup"]
        lines += [
            "",
            f"Budget {b['budget']} of {b['models']} models, Zipf s={b['zipf']}, c={b['concurrency']}: "
            f"warm-up {settings['budget_warmup']:.0f} s (cold start, not counted): hit rate {w['hit_rate']:.3f}, "
            f"{w['loads']} loads; measured {settings['seconds']:.0f} s after it (load average {b['loadavg']:.1f}): "
            f"{b['throughput']:.0f} req/s, hit rate {b['hit_rate']:.3f}, {b['cold_requests']} requests waited for "
            f"a load (p50 {b['cold_p50_ms'] or 0:.0f} ms, p99 {b['cold_p99_ms'] or 0:.0f} ms), "
            f"{b['evictions_per_s']:.2f} evictions/s, errors {b['errors']}",
        ]
    return lines


def _median_range(values: list[float], form: str) -> str:
    return f"{statistics.median(values):{form}} [{min(values):{form}}–{max(values):{form}}]"


def _render_interleaved(cells: dict[str, dict[str, list[dict[str, Any]]]], rounds: int) -> list[str]:
    """The interleaved spread cell: medians [min–max] per server and client, and each server's per-round
    throughput ratios to Triton (the two windows of a round are adjacent in time)."""
    if not cells:
        return []
    lines = [
        "",
        f"Spread again with every server up at once, {rounds} rounds, each client driving each server in turn "
        "(order alternating); medians [min–max]:",
        "",
        "| server | client | req/s | p99 ms | CPU µs/req |",
        "|---|---|---|---|---|",
    ]
    for label, clients in cells.items():
        for client, windows in clients.items():
            done = [window for window in windows if "throughput" in window]
            if not done:
                lines.append(f"| {label} | {client} | failed | - | - |")
                continue
            lines.append(
                f"| {label} | {client} | {_median_range([w['throughput'] for w in done], '.0f')} | "
                f"{_median_range([w['p99_ms'] for w in done], '.1f')} | "
                f"{_median_range([w['cpu_us_per_request'] for w in done], '.0f')} |"
            )
    triton = cells.get("triton", {})
    for label, clients in cells.items():
        if not triton or label == "triton":
            continue
        parts = []
        for client, windows in clients.items():
            pairs = zip(windows, triton.get(client, []), strict=False)
            ratios = [a["throughput"] / b["throughput"] for a, b in pairs if "throughput" in a and "throughput" in b]
            if ratios:
                each = ", ".join(f"{ratio:.2f}" for ratio in ratios)
                parts.append(f"{client} {statistics.median(ratios):.2f}x (rounds {each})")
        lines += ["", f"{label}/triton throughput, median of the per-round ratios: {'; '.join(parts)}"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", nargs="+", default=["seawall", "triton"])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--budget-warmup", type=float, default=10.0, help="seconds of cold start before measuring")
    parser.add_argument(
        "--stub-start", nargs="+", default=["fork", "spawn"], help="Seawall's --python-stub-start variants to measure"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the interleaved spread cell (every server up at once; 0: skip)"
    )
    parser.add_argument("--no-budget", action="store_true", help="skip the load-on-request section")
    parser.add_argument("--no-report", action="store_true", help=f"do not append the run to {REPORT.name}")
    args = parser.parse_args()
    run_id = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, object] = {
        "run": run_id,
        "commit": _commit(),
        "loadavg": loadavg(),
        "settings": vars(args),
        "density": [],
        "interleaved": None,
        "budget": None,
    }
    variants: list[tuple[str, tuple[str, ...], str]] = [
        (name, (f"--python-stub-start={start}",), f"seawall ({start})") if name == "seawall" else (name, (), name)
        for name in args.servers
        for start in (args.stub_start if name == "seawall" else [""])
    ]
    for name, extra, label in variants:
        row = density(name, args.models, args.concurrency, args.seconds, extra, label)
        results["density"].append(row)  # type: ignore[attr-defined]
        print(f"bench-many-models: {json.dumps(row)}", flush=True)
    if args.rounds > 0 and len(variants) > 1:
        results["interleaved"] = interleaved(variants, args.models, args.concurrency, args.seconds, args.rounds)
        print(f"bench-many-models: interleaved {json.dumps(results['interleaved'])}", flush=True)
    if "seawall" in args.servers and not args.no_budget:
        concurrency = min(args.concurrency, 8)
        results["budget"] = {
            "concurrency": concurrency,
            **budget(args.models, args.budget, concurrency, args.seconds, args.zipf, args.budget_warmup),
        }
        print(f"bench-many-models: budget {json.dumps(results['budget'])}", flush=True)
    RAW.mkdir(parents=True, exist_ok=True)
    (RAW / f"many-models-{run_id}.json").write_text(json.dumps(results, indent=1))
    lines = render(results)
    print("\n" + "\n".join(lines))
    if not args.no_report:
        if not REPORT.exists():
            REPORT.write_text(f"# Many models on one server (make bench-many-models)\n\n{__doc__}\n")
        with REPORT.open("a") as report:
            report.write("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
