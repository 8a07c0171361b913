"""What one load run costs each process of a running server's tree: CPU, context switches and read/write calls
per request (from /proc before and after one `bench.loadgen` run). Linux only.

    python -m bench.process_cost <server pid> --url 127.0.0.1:8001 --mode grpc --model bls_add_sub --concurrency 32

Everything after the pid goes to bench.loadgen. Context switches are voluntary + involuntary over all threads;
read/write calls are `/proc/<pid>/io`'s syscr/syscw, which count read()/write() and not send()/recv().
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.servers import cpu_seconds, tree_pids

Snapshot = dict[int, tuple[float, int, int, int, str]]


def _switches(pid: int) -> int:
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        for line in Path(f"/proc/{pid}/task/{task}/status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def snapshot(root: int) -> Snapshot:
    """Per process: CPU seconds, context switches, read calls, write calls, command line."""
    found: Snapshot = {}
    for pid in tree_pids(root):
        try:
            io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found[pid] = (cpu_seconds(pid), _switches(pid), int(io["syscr"]), int(io["syscw"]), command)
        except OSError:  # the process is gone
            pass
    return found


def main() -> None:
    root, loadgen = int(sys.argv[1]), sys.argv[2:]
    before = snapshot(root)
    run = subprocess.run([sys.executable, "-m", "bench.loadgen", *loadgen], capture_output=True, text=True, check=True)
    after = snapshot(root)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    count = max(1, result["requests"])
    total = 0.0
    for pid, (cpu, switches, reads, writes, command) in after.items():
        if pid not in before or cpu == before[pid][0]:
            continue
        was = before[pid]
        micros = (cpu - was[0]) * 1e6 / count
        total += micros
        print(
            f"{pid:7d} {micros:7.1f} us/req  ctxsw {(switches - was[1]) / count:5.2f}  "
            f"reads {(reads - was[2]) / count:5.2f}  writes {(writes - was[3]) / count:5.2f}  {command[:90]}"
        )
    rate, p99 = result["throughput"], result["p99_ms"]
    print(f"total {total:.1f} us/req; {rate:.0f} req/s, p99 {p99:.2f} ms ({result['driver']})")


if __name__ == "__main__":
    main()
