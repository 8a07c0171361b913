"""Native (C) closed-loop drivers with the same request bodies as bench.loadgen: wrk for HTTP/1.1, h2load for gRPC.

Both cost a few µs per request, so on a 2-core machine they leave more CPU to the server than Python clients.
wrk's Lua script posts the pre-encoded body; h2load posts a pre-encoded gRPC message (5-byte prefix +
ModelInferRequest). h2load only sees HTTP status, so gRPC errors (trailers-only replies, no DATA) are counted
from the response DATA bytes: every good reply carries `reply_bytes` of DATA, measured beforehand.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.loadgen import GRPC_PATH, Result, grpc_body, http_body, workload

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def is_available(mode: str) -> bool:
    """Whether the native driver of `mode` is installed."""
    return shutil.which("h2load" if mode == "grpc" else "wrk") is not None


def wrk_script(model: str, binary: bool, body_path: Path) -> str:
    """A wrk Lua script that POSTs the workload's body (read from `body_path`) with its headers."""
    headers, _ = http_body(workload(model), binary)
    lines = [
        f'local f = assert(io.open("{body_path}", "rb"))',
        'wrk.method = "POST"',
        'wrk.body = f:read("*a")',
        "f:close()",
    ]
    lines += [f'wrk.headers["{key}"] = "{value}"' for key, value in headers.items()]
    return "\n".join(lines) + "\n"


def _latency_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, mode: str, model: str, concurrency: int, seconds: float) -> Result:
    """Run wrk (threads: 1 per core, at most one per connection) against `url`; parse its summary."""
    load = workload(model)
    with tempfile.TemporaryDirectory(prefix="seawall-bench-") as tmp:
        body_path = Path(tmp) / "body"
        body_path.write_bytes(http_body(load, mode == "http-binary")[1])
        script = Path(tmp) / "post.lua"
        script.write_text(wrk_script(model, mode == "http-binary", body_path))
        argv = ["wrk", "-t", str(min(2, concurrency)), "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s"]
        argv += ["--latency"]
        argv += ["-s", str(script), f"http://{url}/v2/models/{load.model}/infer"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    return _parse_wrk(out)


def spread_script(paths: list[str], headers: dict[str, str], body_path: Path) -> str:
    """A wrk Lua script that POSTs the same body to a path drawn uniformly from `paths` for each request."""
    lines = [
        f'local f = assert(io.open("{body_path}", "rb"))',
        'wrk.method = "POST"',
        'wrk.body = f:read("*a")',
        "f:close()",
        "local paths = {" + ", ".join(f'"{path}"' for path in paths) + "}",
        "request = function() return wrk.format(nil, paths[math.random(#paths)]) end",
    ]
    lines += [f'wrk.headers["{key}"] = "{value}"' for key, value in headers.items()]
    return "\n".join(lines) + "\n"


def run_wrk_spread(url: str, models: list[str], body: bytes, concurrency: int, seconds: float) -> Result:
    """wrk with `concurrency` connections, each request to one of `models` drawn uniformly (HTTP JSON `body`)."""
    with tempfile.TemporaryDirectory(prefix="seawall-bench-") as tmp:
        body_path = Path(tmp) / "body"
        body_path.write_bytes(body)
        script = Path(tmp) / "spread.lua"
        paths = [f"/v2/models/{model}/infer" for model in models]
        script.write_text(spread_script(paths, {"Content-Type": "application/json"}, body_path))
        argv = ["wrk", "-t", str(min(2, concurrency)), "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s"]
        argv += ["--latency", "-s", str(script), f"http://{url}{paths[0]}"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    return _parse_wrk(out)


def _parse_wrk(out: str) -> Result:
    percentiles = {m.group(1): _latency_ms(m.group(2)) for m in re.finditer(r"^\s+(\d+)%\s+(\S+)$", out, re.M)}
    total_match = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if total_match is None or not percentiles:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    total = int(total_match.group(1))
    elapsed = float(total_match.group(2)) / (1e3 if total_match.group(3) == "ms" else 1)
    errors = sum(int(m) for m in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket:
        errors += sum(int(x) for x in socket.groups())
    # wrk prints 50/75/90/99; p90 and p99 are exact percentiles of its histogram.
    return Result("wrk", total / elapsed, percentiles["50"], percentiles["90"], percentiles["99"], total, errors, total)


def run_h2load(url: str, model: str, concurrency: int, seconds: float, reply_bytes: int) -> Result:
    """Run h2load with one stream per connection (a closed loop per connection); percentiles from its log."""
    with tempfile.TemporaryDirectory(prefix="seawall-bench-") as tmp:
        body = Path(tmp) / "body"
        body.write_bytes(grpc_body(workload(model)))
        log = Path(tmp) / "log"
        argv = [
            "h2load",
            "-c",
            str(concurrency),
            "-m",
            "1",
            "-t",
            str(min(2, concurrency)),
            "-D",
            str(max(1, round(seconds))),
        ]
        argv += ["-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers"]
        argv += [f"--log-file={log}", f"http://{url}{GRPC_PATH}"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
        durations = [int(line.split("\t")[2]) / 1e6 for line in log.read_text().splitlines() if line.count("\t") >= 2]
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    data = re.search(r"\(\d+\) headers.*?, [\d.]+[KMG]?B \((\d+)\) data", out)
    if counts is None or rate is None or data is None:
        raise RuntimeError(f"cannot parse h2load output:\n{out}")
    done, succeeded, failed = int(counts.group(3)), int(counts.group(4)), int(counts.group(5))
    if done == 0:
        raise RuntimeError(f"h2load completed no request:\n{out[-600:]}")
    good_replies = int(data.group(1)) // reply_bytes if reply_bytes else 0
    errors = failed + (done - succeeded - failed) + max(0, succeeded - good_replies)
    quantiles = statistics.quantiles(durations, n=100, method="inclusive") if len(durations) > 1 else [0.0] * 99
    ms = [q * 1e3 for q in quantiles]
    return Result("h2load", float(rate.group(1)), ms[49], ms[89], ms[98], done, errors, done)
