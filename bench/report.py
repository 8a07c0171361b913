"""Turn raw results files (bench/results/raw/<run>.json) into bench/results/report.md and its PNG plots.

python -m bench.report [RAW.json ...]     # the newest raw file by default; several: targets across runs
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
RAW = RESULTS / "raw"
SERVERS = ("seawall", "triton", "mlserver")
MIB = 1024 * 1024

#: Seawall-only workloads: add_sub with SEAWALL_IN_PROCESS "true" (worker thread) and "inline" (event loop)
IN_PROCESS = {"add_sub_inprocess": "worker thread", "add_sub_inline": "inline"}
#: the BLS pipeline and the same pipeline as an ensemble (their cost ratio is a target)
BLS_PAIR = ("bls_add_sub", "ensemble_add_sub")

#: the concurrencies of issue 15's throughput targets
TARGET_CONCS = (8, 32, 64)

Cells = dict[tuple[str, str, int, str], list[dict[str, Any]]]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _spread(values: list[float], digits: int = 0) -> str:
    """median [min–max] of the repetitions."""
    if not values:
        return "–"
    med = _median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def _group(cells: list[dict[str, Any]]) -> Cells:
    grouped: Cells = defaultdict(list)
    for cell in cells:
        grouped[cell["workload"], cell["mode"], cell["concurrency"], cell["server"]].append(cell)
    # Triton has no in-process Python models: Seawall's in-process add_sub is compared with Triton's add_sub
    for (workload, mode, conc, server), runs in list(grouped.items()):
        for alias in IN_PROCESS:
            if workload == "add_sub" and server == "triton" and (alias, mode, conc, "seawall") in grouped:
                grouped[alias, mode, conc, "triton"] = runs
    return grouped


def _stat(grouped: Cells, key: tuple[str, str, int, str], field: str) -> float:
    return _median([c[field] for c in grouped.get(key, []) if c[field] is not None])


def _ratio(grouped: Cells, workload: str, mode: str, conc: int, other: str) -> float:
    mine = _stat(grouped, (workload, mode, conc, "seawall"), "throughput")
    theirs = _stat(grouped, (workload, mode, conc, other), "throughput")
    return mine / theirs if theirs == theirs and theirs > 0 else float("nan")


def _fmt_ratio(value: float) -> str:
    return "n/a" if value != value else f"{value:.2f}"


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "not met")


def targets(data: dict[str, Any], grouped: Cells) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) rows; ratios from medians of the same run."""
    rows: list[tuple[str, str, bool | None]] = []

    def ratio_row(label: str, workload: str, mode: str, conc: int, other: str, floor: float) -> None:
        value = _ratio(grouped, workload, mode, conc, other)
        rows.append((label, _fmt_ratio(value), None if value != value else value >= floor))

    def cells_row(label: str, workload: str, mode: str, concs: tuple[int, ...], floor: float) -> None:
        """One row for several concurrencies: met when every measured one reaches `floor`."""
        values = [(c, _ratio(grouped, workload, mode, c, "triton")) for c in concs]
        values = [(c, v) for c, v in values if v == v]
        measured = " / ".join(f"c={c} {v:.2f}" for c, v in values) or "n/a"
        rows.append((label, measured, None if not values else all(v >= floor for _, v in values)))

    for workload, floor in (("add_sub", 1.0), *((w, 1.5) for w in IN_PROCESS), ("identity", 1.0), ("matmul", 1.0)):
        how = f" in-process ({IN_PROCESS[workload]})" if workload in IN_PROCESS else ""
        name = "identity 1 MiB" if workload == "identity" else ("add_sub" if how else workload)
        for mode in ("http-json", "http-binary", "grpc"):
            if any(k[:2] == (workload, mode) for k in grouped):
                cells_row(f"{name}{how} {mode}: Seawall/Triton ≥ {floor}", workload, mode, TARGET_CONCS, floor)
    for mode in ("http-json", "http-binary", "grpc"):
        ratio_row(f"pipeline (ensemble) c=32 {mode}: Seawall/Triton ≥ 1.0", "pipeline", mode, 32, "triton", 1.0)
    for mode in ("http-json", "grpc"):
        ratio_row(
            f"sequence (concurrent sequences) c=32 {mode}: Seawall/Triton ≥ 1.0", "sequence", mode, 32, "triton", 1.0
        )
    for mode in ("http-binary", "grpc"):
        ratio_row(f"BLS add_sub c=32 {mode}: Seawall/Triton ≥ 1.0", "bls_add_sub", mode, 32, "triton", 1.0)
    rows += _bls_rows(grouped)
    keys = sorted({k[:3] for k in grouped})
    ml = [(k, _ratio(grouped, *k, "mlserver")) for k in keys]
    ml = [(k, v) for k, v in ml if v == v]
    worst = min(ml, key=lambda item: item[1]) if ml else None
    met_ml = sum(v >= 5 for _, v in ml)
    rows.append(
        (
            "Seawall/MLServer ≥ 5 in every cell",
            f"{met_ml}/{len(ml)} cells; worst {worst[1]:.2f} ({' '.join(map(str, worst[0]))})" if worst else "n/a",
            None if not ml else met_ml == len(ml),
        )
    )
    p99 = []
    for workload, mode, conc in keys:
        if conc == 1:
            mine = _stat(grouped, (workload, mode, 1, "seawall"), "p99_ms")
            theirs = _stat(grouped, (workload, mode, 1, "triton"), "p99_ms")
            if mine == mine and theirs == theirs:
                p99.append((f"{workload} {mode}", mine, theirs))
    bad = [f"{n} {m:.2f} vs {t:.2f} ms" for n, m, t in p99 if m > t]
    rows.append(
        (
            "p99 at c=1 ≤ Triton's (every workload and mode)",
            f"{len(p99) - len(bad)}/{len(p99)} cells" + (f"; worse: {'; '.join(bad)}" if bad else ""),
            None if not p99 else not bad,
        )
    )
    cpu = []
    for key in (k for k in keys if k[2] >= 8):
        mine = _stat(grouped, (*key, "seawall"), "server_cpu_us_per_inference")
        theirs = _stat(grouped, (*key, "triton"), "server_cpu_us_per_inference")
        if mine == mine and theirs == theirs:
            cpu.append(mine <= theirs)
    rows.append(
        (
            "server CPU per inference ≤ Triton's (every cell at c ≥ 8)",
            f"{sum(cpu)}/{len(cpu)} cells",
            None if not cpu else all(cpu),
        )
    )
    idle = data.get("idle_pss", {})
    if "seawall" in idle and "triton" in idle:
        s, t = idle["seawall"] / MIB, idle["triton"] / MIB
        rows.append(("idle PSS ≤ Triton's", f"{s:.0f} MiB vs {t:.0f} MiB", s <= t))
    starts = [s["seconds"] for s in data.get("starts", []) if s["server"] == "seawall"]
    if starts:
        rows.append(
            ("start to ready ≤ 1.5 s", f"{_median(starts):.2f} s (median of {len(starts)})", _median(starts) <= 1.5)
        )
    return rows


def _cell_table(grouped: Cells, workload: str, modes: list[str], concs: list[int]) -> list[str]:
    lines = [
        "| mode | c | Seawall req/s | Triton req/s | MLServer req/s | S/T | S/M "
        "| p99 ms S / T / M | CPU µs/inf S / T / M | errors S/T/M | other load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        for conc in concs:
            keys = [(workload, mode, conc, s) for s in SERVERS]
            if not any(k in grouped for k in keys):
                continue
            thr = [_spread([c["throughput"] for c in grouped.get(k, [])]) for k in keys]
            p99 = " / ".join(_fmt(_stat(grouped, k, "p99_ms"), 2) for k in keys)
            cpu = " / ".join(_fmt(_stat(grouped, k, "server_cpu_us_per_inference"), 0) for k in keys)
            errs = "/".join(str(sum(c["errors"] for c in grouped.get(k, []))) if k in grouped else "–" for k in keys)
            st = _fmt_ratio(_ratio(grouped, workload, mode, conc, "triton"))
            sm = _fmt_ratio(_ratio(grouped, workload, mode, conc, "mlserver"))
            other = _median([c["other_cores"] for k in keys for c in grouped.get(k, [])])
            lines.append(
                f"| {mode} | {conc} | {thr[0]} | {thr[1]} | {thr[2]} | {st} | {sm} | {p99} | {cpu} | {errs} "
                f"| {other:.2f} |"
            )
    return lines


def _fmt(value: float, digits: int) -> str:
    return "–" if value != value else f"{value:.{digits}f}"


def plot(grouped: Cells, out: Path) -> list[str]:
    """One PNG per workload and mode: throughput vs concurrency, and p50/p90/p99 vs concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for workload, mode in sorted({k[:2] for k in grouped}):
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for server, color in zip(SERVERS, ("tab:blue", "tab:orange", "tab:green"), strict=True):
            concs = sorted(k[2] for k in grouped if k[:2] == (workload, mode) and k[3] == server)
            if not concs:
                continue
            thr = [_stat(grouped, (workload, mode, c, server), "throughput") for c in concs]
            low = [min(x["throughput"] for x in grouped[workload, mode, c, server]) for c in concs]
            high = [max(x["throughput"] for x in grouped[workload, mode, c, server]) for c in concs]
            left.plot(concs, thr, "o-", color=color, label=server)
            left.fill_between(concs, low, high, color=color, alpha=0.2)
            for field, style in (("p50_ms", ":"), ("p90_ms", "--"), ("p99_ms", "-")):
                values = [_stat(grouped, (workload, mode, c, server), field) for c in concs]
                right.plot(concs, values, style, marker="o", color=color, label=f"{server} {field[:3]}")
        left.set(title=f"{workload} {mode}: throughput", xlabel="concurrency", ylabel="inferences/s", xscale="log")
        right.set(
            title="latency (median of repetitions)", xlabel="concurrency", ylabel="ms", xscale="log", yscale="log"
        )
        for axis in (left, right):
            axis.set_xticks([1, 8, 32, 64], labels=["1", "8", "32", "64"])
            axis.grid(alpha=0.3)
        left.legend()
        right.legend(fontsize=7, ncol=3)
        fig.tight_layout()
        name = f"{workload}-{mode}.png"
        fig.savefig(out / name, dpi=80)
        plt.close(fig)
        names.append(name)
    return names


def _client_section(data: dict[str, Any]) -> list[str]:
    checks = data.get("client_check", [])
    if not checks:
        return ["(no client check in this run)"]
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for cell in checks:
        grouped[cell["server"], cell["mode"], cell["driver"]].append(cell)
    lines = [
        "| server | mode | client | req/s | p99 ms | client cores | server cores |",
        "|---|---|---|---|---|---|---|",
    ]
    for (server, mode, driver), cells in sorted(grouped.items()):
        if driver in ("wrk", "h2load"):
            python = [
                c["throughput"]
                for (s, m, d), cs in grouped.items()
                if (s, m) == (server, mode) and d != driver
                for c in cs
            ]
            ratio = _median([c["throughput"] for c in cells]) / _median(python) if python else float("nan")
            driver = f"{driver} ({_fmt_ratio(ratio)}× the Python client)"
        lines.append(
            f"| {server} | {mode} | {driver} | {_spread([c['throughput'] for c in cells])} | "
            f"{_median([c['p99_ms'] for c in cells]):.2f} | {_median([c['client_cores'] for c in cells]):.2f} | "
            f"{_median([c['server_cores'] for c in cells]):.2f} |"
        )
    return lines


def write(raws: list[Path] | None = None, out: Path = RESULTS, plots: bool = True) -> Path:
    """Render the report into `out` and return its path. The first of `raws` (default: the newest file in
    bench/results/raw) gives the tables and plots; with several (other clients, other runs), a target is met only
    where it is met in every one of them."""
    if not raws:
        files = sorted(RAW.glob("[0-9]*.json"))
        if not files:
            raise SystemExit("bench: no raw results; run `make bench` first")
        raws = [files[-1]]
    runs = [json.loads(raw.read_text()) for raw in raws]
    data = runs[0]
    grouped = _group(data["cells"])
    out.mkdir(parents=True, exist_ok=True)
    pngs = []
    if plots:  # needs the bench extra's matplotlib
        for old in out.glob("*.png"):
            old.unlink()
        pngs = plot(grouped, out)
    lines = render(data, grouped, pngs, raws[0].name)
    if len(runs) > 1:
        at = lines.index("## Targets")
        lines[at:at] = _across_runs(runs, raws)
    out.joinpath("report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def _across_runs(runs: list[dict[str, Any]], raws: list[Path]) -> list[str]:
    """The targets of every run side by side: a target holds only if it is met in each run, with each client."""
    tables = [targets(run, _group(run["cells"])) for run in runs]
    heads = [f"`{run['run']}` ({', '.join(sorted({c['driver'] for c in run['cells']}))})" for run in runs]
    lines = [
        "## Targets in every run",
        "",
        f"{len(runs)} runs, each with its own load client(s) and start time: "
        + ", ".join(f"`bench/results/raw/{raw.name}`" for raw in raws)
        + ". A target holds only where every run meets it.",
        "",
        "| target | " + " | ".join(heads) + " | holds |",
        "|---|" + "---|" * len(runs) + "---|",
    ]
    for label, *_ in tables[0]:
        found = [next(((m, ok) for lab, m, ok in table if lab == label), ("n/a", None)) for table in tables]
        verdicts = [ok for _, ok in found]
        holds = None if None in verdicts else all(verdicts)
        lines.append(f"| {label} | " + " | ".join(f"{m} ({_mark(ok)})" for m, ok in found) + f" | {_mark(holds)} |")
    return [*lines, "", "The tables below are those of the first run.", ""]


def render(data: dict[str, Any], grouped: Cells, pngs: list[str], raw_name: str) -> list[str]:
    settings = data["settings"]
    cells = data["cells"]
    drivers = sorted({f"{c['mode']}: {c['driver']}" for c in cells})
    other = [c["other_cores"] for c in cells]
    load = data.get("loadavg", [])
    lines = [
        "# Seawall benchmark: Seawall vs Triton vs MLServer",
        "",
        f"Run `{data['run']}` ({'quick' if data['quick'] else 'full'}), raw results `bench/results/raw/{raw_name}`. "
        "Regenerate this report with `python -m bench.run --report-only`; measure again with `make bench`.",
        "",
        f"Machine: {data['machine']['cpus']} CPUs, {data['machine']['platform']}, loopback only. "
        "Servers, load generator and anything else running share the same cores.",
        "",
    ]
    git = data.get("git")
    if git:
        dirty = git.get("dirty", [])
        lines += [
            f"Seawall measured: commit `{git['commit']}`"
            + (
                f" plus uncommitted changes in {len(dirty)} file(s) of `seawall/` (work in progress)." if dirty else "."
            ),
            "",
        ]
    if settings.get("shared"):
        lines += [f"**Note: {settings['shared']}**", ""]
    if other:
        lines += [
            f"CPU used by other processes on the machine during the cells (not server, not client): median "
            f"{_median(other):.2f} cores, max {max(other):.2f} cores of {data['machine']['cpus']}; "
            f"1-min load average {min(load):.1f}–{max(load):.1f}."
            if load
            else "",
            "",
        ]
    lines += [
        "Method: the three servers run side by side and serve the same workloads (Triton Python-backend models in "
        "`bench/models`, unchanged on Seawall; equivalent MLServer runtimes in `bench/mlserver`, MLServer 1.7.1 with "
        "its default settings in its own venv; Seawall with the `seawall` command's defaults). "
        "Each cell (workload, mode, concurrency) is measured for every "
        "server in turn (A B C, A B C, ...), "
        f"{settings['reps']} repetition(s) for add_sub and {min(settings['reps'], settings['slow_reps'])} for "
        f"the other workloads, {settings['seconds']} s each; tables show the median and [min–max] over repetitions. "
        "Ratios are of medians measured in this run. 'other load' is the CPU (in cores) used during the cell by "
        "processes that are neither the server nor the client (other users of the machine). "
        "Closed loop: each connection sends the next request when the "
        "reply has arrived. Load drivers: " + ", ".join(drivers) + ". Server CPU is utime+stime of the server's "
        "whole process tree (Python stubs, MLServer workers) from /proc before/after each cell, divided by the "
        "requests completed; PSS is the sum over the tree.",
        "",
        "## Targets",
        "",
        "| target | measured | status |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {value} | {_mark(ok)} |" for label, value, ok in targets(data, grouped)]
    lines += ["", "## Headline: throughput ratios at the target cells", ""]
    lines += _headline(grouped)
    concs = sorted({k[2] for k in grouped})
    for workload in ("add_sub", *IN_PROCESS, "identity", "matmul", "pipeline", *BLS_PAIR, "bls_64mib", "sequence"):
        modes = [m for m in ("http-json", "http-binary", "grpc") if any(k[:2] == (workload, m) for k in grouped)]
        if not modes:
            continue
        lines += ["", f"## {workload}", ""]
        if workload in IN_PROCESS:
            lines += [
                f"Seawall serves add_sub in process ({IN_PROCESS[workload]}: SEAWALL_IN_PROCESS set on a copy of "
                "add_sub); "
                "Triton has no in-process Python models, so its column repeats its add_sub cells of this run.",
                "",
            ]
        lines += _cell_table(grouped, workload, modes, concs)
        lines += [""] + [f"![{workload} {m}]({workload}-{m}.png)" for m in modes if f"{workload}-{m}.png" in pngs]
    lines += ["", "## Start, memory", "", "| server | start to ready s | idle PSS MiB | peak PSS under load MiB |"]
    lines += ["|---|---|---|---|"]
    for server in SERVERS:
        starts = [s["seconds"] for s in data.get("starts", []) if s["server"] == server]
        idle = data.get("idle_pss", {}).get(server)
        peak = max((c["peak_pss_bytes"] for c in cells if c["server"] == server), default=0)
        idle_text = f"{idle / MIB:.0f}" if idle else "–"
        lines.append(f"| {server} | {_spread(starts, 2)} | {idle_text} | {peak / MIB:.0f} |")
    lines += [
        "",
        "Start to ready: from spawning the process to the first 200 from `/v2/health/ready` (all models loaded). "
        "Idle PSS: after one request per workload and mode, 2 s idle.",
        "",
        "## Not measured",
        "",
    ]
    unsupported = data.get("unsupported", [])
    lines += [f"- {u['server']} {u['workload']} {u['mode']}: {u['reason']}" for u in unsupported] or ["- none"]
    if any(u["server"] == "mlserver" and u["mode"] == "http-binary" for u in unsupported):
        lines += [
            "",
            "MLServer 1.7.1's REST API has no binary tensor data extension (it decodes the body as JSON text), so it "
            "has no HTTP binary cells, and Seawall/MLServer exists only for HTTP JSON and gRPC.",
        ]
    lines += [
        "",
        "## Failures during the run",
        "",
    ]
    failures = data.get("failures", [])
    deaths = data.get("deaths", [])
    lines += [
        f"- {f['server']} {f['workload']} {f['mode']} c={f['concurrency']}: {f['reason'].splitlines()[0][:200]}"
        for f in failures
    ]
    for death in deaths:
        tail = " / ".join(line.strip()[:120] for line in death["log"][-3:])
        cell = " ".join(str(death[k]) for k in ("workload", "mode") if k in death)
        if "concurrency" in death:
            cell += f" c={death['concurrency']} rep {death['rep']}"
        after = "started again and measured on" if cell else "its later cells were skipped (no restart in this run)"
        lines.append(
            f"- {death['server']} exited with {death['exit']} ({cell or 'cell not recorded'}); {after}. "
            f"Log tail: {tail}"
        )
    if not failures and not deaths:
        lines.append("- none")
    lines += [
        "",
        "## Is the client the bottleneck?",
        "",
        "add_sub, c=32, the same server: the Python load generator (`bench/loadgen.py`, 2 processes, uvloop; "
        "HTTP/1.1 on raw streams, gRPC on a minimal HTTP/2 client of its own) against the native drivers (`wrk` "
        "with a Lua script posting the same body; `h2load` posting the same pre-encoded gRPC message). 'cores' are CPU "
        "seconds per wall second.",
        "",
    ]
    lines += _client_section(data)
    lines += [
        "",
        "On 2 cores every client competes with the server for CPU: there is no spare core, so no client is free. "
        "The cheapest client leaves the server the most room, so the matrix uses the native drivers when installed "
        "(see 'Load drivers' above); they need a fraction of the Python client's CPU per request. Where the native "
        "driver gets more throughput than the Python one on the same server, the Python client was part of the "
        "bottleneck; the matrix numbers are from the native drivers, and the remaining client cost is the "
        "'client cores' column.",
    ]
    return lines


def _bls_rows(grouped: Cells) -> list[tuple[str, str, bool | None]]:
    """BLS against the same pipeline as an ensemble (bls_add_sub / ensemble_add_sub, server CPU per inference and
    throughput, Triton's ratio beside Seawall's), and the cost of one BLS call of 64 MiB (bls_64mib, c=1)."""
    rows: list[tuple[str, str, bool | None]] = []
    for mode in ("http-json", "http-binary", "grpc"):
        for conc in (1, 32):
            cost = {}
            for server in ("seawall", "triton"):
                cpu = [_stat(grouped, (w, mode, conc, server), "server_cpu_us_per_inference") for w in BLS_PAIR]
                thr = [_stat(grouped, (w, mode, conc, server), "throughput") for w in BLS_PAIR]
                cost[server] = (cpu[0] / cpu[1] if cpu[1] > 0 else float("nan"), thr[1] / thr[0] if thr[0] else 0.0)
            (cpu_mine, thr_mine), (cpu_theirs, thr_theirs) = cost["seawall"], cost["triton"]
            if cpu_mine != cpu_mine:
                continue
            rows.append(
                (
                    f"BLS / ensemble (add_sub) c={conc} {mode}: Seawall server CPU per inference ≤ 1.5×",
                    f"Seawall {cpu_mine:.2f}× CPU, {thr_mine:.2f}× by req/s; "
                    f"Triton {_fmt_ratio(cpu_theirs)}× CPU, {_fmt_ratio(thr_theirs)}× by req/s",
                    cpu_mine <= 1.5,
                )
            )
    for mode in ("http-binary",):
        mine = _stat(grouped, ("bls_64mib", mode, 1, "seawall"), "p50_ms")
        theirs = _stat(grouped, ("bls_64mib", mode, 1, "triton"), "p50_ms")
        if mine == mine:
            cpu = [
                _stat(grouped, ("bls_64mib", mode, 1, s), "server_cpu_us_per_inference") for s in ("seawall", "triton")
            ]
            rows.append(
                (
                    "BLS call of a 64 MiB tensor (and back), c=1: p50 ≤ Triton's",
                    f"Seawall {mine:.1f} ms ({cpu[0] / 1000:.1f} ms CPU), Triton {_fmt(theirs, 1)} ms "
                    f"({_fmt(cpu[1] / 1000, 1)} ms CPU)",
                    None if theirs != theirs else mine <= theirs,
                )
            )
    return rows


def _headline(grouped: Cells) -> list[str]:
    lines = [
        "| cell | Seawall req/s | Triton req/s | MLServer req/s | Seawall/Triton | Seawall/MLServer |",
        "|---|---|---|---|---|---|",
    ]
    picks = [("add_sub", m, 32) for m in ("http-json", "http-binary", "grpc")]
    picks += [(w, m, 32) for w in IN_PROCESS for m in ("http-json", "http-binary")]
    picks += [("identity", m, 32) for m in ("http-binary", "grpc")]
    picks += [("matmul", m, 64) for m in ("http-json", "http-binary", "grpc")]
    picks += [("pipeline", m, 32) for m in ("http-json", "http-binary", "grpc")]
    picks += [("sequence", m, 32) for m in ("http-json", "grpc")]
    for workload, mode, conc in picks:
        keys = [(workload, mode, conc, s) for s in SERVERS]
        if not any(k in grouped for k in keys):
            continue
        thr = [_fmt(_stat(grouped, k, "throughput"), 0) for k in keys]
        st = _fmt_ratio(_ratio(grouped, workload, mode, conc, "triton"))
        sm = _fmt_ratio(_ratio(grouped, workload, mode, conc, "mlserver"))
        lines.append(f"| {workload} {mode} c={conc} | {thr[0]} | {thr[1]} | {thr[2]} | {st} | {sm} |")
    return lines


if __name__ == "__main__":
    print(write([Path(arg) for arg in sys.argv[1:]] or None))
