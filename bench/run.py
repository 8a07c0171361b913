"""`make bench`: run Seawall, Triton and MLServer on the same workloads, interleaved, and write the report.

    python -m bench.run            # full run (>= 5 repetitions of the small-request cells), ~15 minutes
    python -m bench.run --quick    # 1 repetition, short cells: checks the suite end to end in a few minutes
    python -m bench.run --report-only   # regenerate bench/results/report.md and PNGs from raw results
    python -m bench.run --workloads identity --no-report   # a few cells: raw results only, the report stays

Raw results go to bench/results/raw/<run>.json (gitignored), the report and plots to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import resource
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import native, report, servers
from bench.loadgen import GRPC_PATH, MODES, Result, http_body, open_grpc, run_load, workload

RAW = Path(__file__).resolve().parent / "results" / "raw"
WORKLOAD_MODES = {
    "add_sub": MODES,
    "add_sub_inprocess": ("http-json", "http-binary"),  # Seawall only: SEAWALL_IN_PROCESS "true"
    "add_sub_inline": ("http-json", "http-binary"),  # Seawall only: SEAWALL_IN_PROCESS "inline"
    "identity": ("http-binary", "grpc"),  # 1 MiB of JSON numbers is not a meaningful cell
    "matmul": MODES,
    "bls_add_sub": MODES,  # add_sub called through BLS from a python model
    "ensemble_add_sub": MODES,  # the same pipeline as bls_add_sub, as an ensemble (the report sets them side by side)
    "bls_64mib": ("http-binary",),  # one BLS call of a 64 MiB tensor per request (at c=1 only: its cost)
    "pipeline": MODES,  # an ensemble of three Python models (MLServer has none: not measured there)
    "sequence": ("http-json", "grpc"),  # a sequence model, each closed loop one sequence after another
}
CONCURRENCY = (1, 8, 32, 64)
#: workloads measured at fewer concurrencies than --concurrency asks (a 64 MiB call per request: c=1 is its cost)
WORKLOAD_CONCURRENCY = {"bls_64mib": (1,)}


def probe(server: servers.Server, model: str, mode: str) -> tuple[bool, int, str]:
    """Send one request; (ok, reply bytes, reason). Unsupported modes (e.g. MLServer binary HTTP) fail here."""
    load = workload(model)
    if mode == "grpc":

        async def call() -> tuple[bool, int]:
            from bench.loadgen import grpc_body

            host, port = server.grpc.rsplit(":", 1)
            connection = await open_grpc(host, int(port), grpc_body(load))
            try:
                ok = await asyncio.wait_for(connection.call(), 30)
                return ok, connection.received
            finally:
                connection.close()

        ok, size = asyncio.run(call())
        return ok, size, "" if ok else f"gRPC {GRPC_PATH} failed"
    headers, body = http_body(load, mode == "http-binary")
    host, port = server.http.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", f"/v2/models/{load.model}/infer", body, headers)
        reply = connection.getresponse()
        data = reply.read()
    finally:
        connection.close()
    if reply.status != 200:
        last = data.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return False, 0, f"HTTP {reply.status}: {last[0][:160]}"
    if mode == "http-binary" and "Inference-Header-Content-Length" not in reply.headers:
        return False, 0, "binary tensor extension not supported (JSON reply)"
    return True, len(data), ""


def _machine_busy_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cell(
    server: servers.Server, model: str, mode: str, concurrency: int, args: argparse.Namespace, reply: int
) -> dict[str, Any]:
    """One measurement: load, server CPU (whole tree) before/after, peak PSS, client CPU."""
    # wrk and h2load send one fixed request: sequences (ids, start and end flags) need the python driver
    use_native = args.driver == "native" and native.is_available(mode) and not workload(model).sequence_length
    use_native = use_native and model not in WORKLOAD_CONCURRENCY  # a few long requests: wrk's summary may lack p90
    url = server.grpc if mode == "grpc" else server.http
    marks: dict[str, float] = {}

    def mark_start() -> None:
        marks["cpu"], marks["t"] = servers.tree_cpu_seconds(server.pid), time.perf_counter()
        marks["client"], marks["busy"] = _children_cpu(), _machine_busy_seconds()

    with servers.PssSampler(server.pid, 1.0) as pss:
        if use_native:
            mark_start()
            if mode == "grpc":
                result: Result = native.run_h2load(url, model, concurrency, args.seconds, reply)
            else:
                result = native.run_wrk(url, mode, model, concurrency, args.seconds)
        else:
            result = run_load(url, mode, model, concurrency, args.seconds, args.processes, args.warmup, mark_start)
        cpu = servers.tree_cpu_seconds(server.pid) - marks["cpu"]
        wall = time.perf_counter() - marks["t"]
        client = _children_cpu() - marks["client"]
        busy = _machine_busy_seconds() - marks["busy"]
    record = asdict(result)
    record.update(
        server=server.name,
        workload=model,
        mode=mode,
        concurrency=concurrency,
        server_cpu_s=cpu,
        server_cpu_us_per_inference=cpu / result.total_requests * 1e6 if result.total_requests else None,
        server_cores=cpu / wall,
        client_cores=client / wall,
        other_cores=max(0.0, busy - cpu - client) / wall,  # everything else on the machine (other users)
        peak_pss_bytes=pss.peak,
    )
    return record


def _git_state() -> dict[str, Any]:
    """The Seawall code measured: commit, and files changed in the working tree (uncommitted work)."""
    root = servers.ROOT

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=root, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": git("status", "--short", "seawall").splitlines()}


def _loadavg() -> float:
    return os.getloadavg()[0]


def measure(args: argparse.Namespace) -> Path:
    RAW.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y%m%d-%H%M%S")
    out = RAW / f"{run_id}.json"
    data: dict[str, Any] = {
        "run": run_id,
        "quick": args.quick,
        "settings": {k: v for k, v in vars(args).items() if k != "func"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "git": _git_state(),
        "starts": [],
        "idle_pss": {},
        "unsupported": [],
        "failures": [],
        "deaths": [],
        "cells": [],
        "client_check": [],
        "loadavg": [],
    }

    def save() -> None:
        out.write_text(json.dumps(data, indent=1))

    # Start-to-ready, interleaved A B C; the last start of each server stays up for the load cells.
    running: dict[str, servers.Server] = {}
    for rep in range(args.start_reps):
        for name in args.servers:
            server = servers.start(name)
            data["starts"].append({"server": name, "rep": rep, "seconds": server.start_seconds})
            print(f"bench: {name} ready in {server.start_seconds:.2f}s", flush=True)
            if rep + 1 < args.start_reps:
                server.stop()
            else:
                running[name] = server
    try:
        replies: dict[tuple[str, str, str], int] = {}
        for name, server in running.items():
            for model in args.workloads:
                for mode in WORKLOAD_MODES[model]:
                    if mode not in args.modes:
                        continue
                    ok, size, reason = probe(server, model, mode)
                    if ok:
                        replies[name, model, mode] = size
                    else:
                        data["unsupported"].append({"server": name, "workload": model, "mode": mode, "reason": reason})
                        print(f"bench: {name} {model} {mode}: not measured ({reason})", flush=True)
        time.sleep(2)  # idle after one request per workload and mode (models loaded, warmed)
        for name, server in running.items():
            data["idle_pss"][name] = servers.tree_pss_bytes(server.pid)
        save()
        for rep in range(args.reps):
            for model in args.workloads:
                reps = args.reps if model == "add_sub" else min(args.reps, args.slow_reps)
                if rep >= reps:
                    continue
                for mode in (m for m in WORKLOAD_MODES[model] if m in args.modes):
                    for concurrency in (c for c in args.concurrency if c in WORKLOAD_CONCURRENCY.get(model, (c,))):
                        for name in list(running):  # A B C, A B C, ...
                            if (name, model, mode) not in replies or not is_alive(running, name, data):
                                continue
                            server = running[name]
                            data["loadavg"].append(_loadavg())
                            where = {"server": name, "workload": model, "mode": mode, "concurrency": concurrency}
                            cell = guarded(
                                data,
                                where,
                                run_cell,
                                server,
                                model,
                                mode,
                                concurrency,
                                args,
                                replies[name, model, mode],
                            )
                            if cell is None:
                                continue
                            cell["rep"] = rep
                            data["cells"].append(cell)
                            print(
                                f"bench: rep {rep} {model:8} {mode:11} c={concurrency:<2} {name:8} "
                                f"{cell['throughput']:8.0f}/s p99 {cell['p99_ms']:7.2f} ms errors {cell['errors']}",
                                flush=True,
                            )
                        save()
        client_check(args, running, replies, data)
        save()
    finally:
        for server in running.values():
            server.stop()
    return out


def is_alive(running: dict[str, servers.Server], name: str, data: dict[str, Any]) -> bool:
    """Whether `name` can take the next cell. A server that has exited is recorded (exit code, log tail, the
    cell it died in or after) and started again, up to 3 times, so one crash does not end its series."""
    server = running[name]
    if server.process.poll() is None:
        return True
    last = next((c for c in reversed(data["cells"]) if c["server"] == name), None)
    where = {k: last[k] for k in ("workload", "mode", "concurrency", "rep")} if last else {}
    data["deaths"].append({"server": name, "exit": server.process.returncode, "log": server.lines[-10:], **where})
    restarts = sum(d["server"] == name for d in data["deaths"])
    print(f"bench: {name} exited ({server.process.returncode}) during or after {where}", flush=True)
    if restarts > 3:
        return False
    try:
        running[name] = servers.start(name)
    except RuntimeError as exc:
        print(f"bench: {name} could not restart: {exc}", flush=True)
        return False
    return True


def guarded(data: dict[str, Any], where: dict[str, Any], function: Any, *argv: Any) -> dict[str, Any] | None:
    """Run one cell; a failing driver is recorded under 'failures' instead of ending the run."""
    try:
        return function(*argv)  # type: ignore[no-any-return]
    except (subprocess.SubprocessError, RuntimeError, OSError, ValueError, KeyError) as exc:
        data["failures"].append({**where, "reason": str(exc)[:400]})
        print(f"bench: failed {where}: {str(exc)[:200]}", flush=True)
        return None


def client_check(
    args: argparse.Namespace,
    running: dict[str, servers.Server],
    replies: dict[tuple[str, str, str], int],
    data: dict[str, Any],
) -> None:
    """The client is not the bottleneck: the same cell with the Python load generator and with wrk/h2load."""
    for name in ("seawall", "triton"):
        if name not in running:
            continue
        for mode in ("http-json", "grpc"):
            if (name, "add_sub", mode) not in replies or not native.is_available(mode):
                continue
            for rep in range(args.check_reps):
                for driver in ("python", "native"):
                    check = argparse.Namespace(**{**vars(args), "driver": driver})
                    if not is_alive(running, name, data):
                        return
                    where = {"server": name, "workload": "add_sub", "mode": mode, "concurrency": 32, "check": driver}
                    cell = guarded(
                        data, where, run_cell, running[name], "add_sub", mode, 32, check, replies[name, "add_sub", mode]
                    )
                    if cell is None:
                        continue
                    cell["rep"] = rep
                    data["client_check"].append(cell)
                    print(
                        f"bench: client check {name} {mode} {cell['driver']:14} {cell['throughput']:8.0f}/s", flush=True
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repetition, 1.5 s cells (CI-like)")
    parser.add_argument("--report-only", action="store_true", help="only regenerate the report from raw results")
    parser.add_argument(
        "--raw", type=Path, nargs="+", help="raw results for the report (default: the newest); several: other runs"
    )
    parser.add_argument("--servers", nargs="+", default=list(servers.SERVERS), choices=servers.SERVERS)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOAD_MODES), choices=list(WORKLOAD_MODES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--concurrency", nargs="+", type=int, default=list(CONCURRENCY))
    parser.add_argument("--driver", choices=("native", "python"), default="native", help="wrk/h2load, or bench.loadgen")
    parser.add_argument("--reps", type=int, help="repetitions of the add_sub cells (default 5, quick 1)")
    parser.add_argument("--slow-reps", type=int, help="repetitions of the other workloads (default 3, quick 1)")
    parser.add_argument("--seconds", type=int, help="measurement per cell, whole seconds (default 2, quick 1)")
    parser.add_argument("--warmup", type=float, default=0.3, help="warm-up per cell, Python driver only")
    parser.add_argument("--processes", type=int, default=2, help="client processes of the Python driver")
    parser.add_argument("--start-reps", type=int, help="start-to-ready measurements per server (default 3, quick 1)")
    parser.add_argument("--check-reps", type=int, help="client-check repetitions (default 3, quick 1)")
    parser.add_argument("--shared", default="", help="a note for the report, e.g. that the machine was shared")
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="keep only the raw results: bench/results/report.md and its plots stay as they are (a run of a few cells)",
    )
    args = parser.parse_args()
    quick = args.quick
    for key, full, short in (
        ("reps", 5, 1),
        ("slow_reps", 3, 1),
        ("seconds", 2, 1),
        ("start_reps", 3, 1),
        ("check_reps", 3, 1),
    ):
        if getattr(args, key) is None:
            setattr(args, key, short if quick else full)
    raws = args.raw or []
    if not args.report_only:
        raw = measure(args)
        print(f"bench: raw results in {raw}", flush=True)
        raws = [raw, *raws]
        if args.no_report:
            return
    path = report.write(raws)
    print(f"bench: report in {path}", flush=True)


if __name__ == "__main__":
    main()
