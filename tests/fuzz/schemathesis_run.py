"""Schemathesis end to end: a real Seawall process (explicit model control, on a copy of examples/models) fuzzed
through every operation of docs/openapi.yaml. `python -m tests.fuzz.schemathesis_run [MAX_EXAMPLES] [SECONDS]`.

Fails (exit 1) on any 5xx the schema does not document, a response that breaks the schema, a server that dies or
logs a traceback. The last line printed is `schemathesis: <N> test cases, <M> failures`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.harness import EXAMPLES, ROOT, http_call, start_seawall

SCHEMA = ROOT / "docs" / "openapi.yaml"
CHECKS = "no_undocumented_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def run(max_examples: int, seconds: int, seed: int = 14) -> tuple[int, int, str]:
    """(test cases run, failures, schemathesis's output) of one run against a fresh server."""
    with tempfile.TemporaryDirectory(prefix="seawall-schemathesis-") as tmp:
        repository = Path(tmp) / "models"
        shutil.copytree(EXAMPLES, repository)
        server = start_seawall(
            "--model-control-mode=explicit",
            "--load-model=*",
            "--allow-unrestricted-model-repository=true",
            "--allow-client-shm=true",  # the shared memory routes for real (registering needs an existing key)
            repository=repository,
        )
        try:
            argv = [
                str(Path(sys.executable).parent / "st"),
                "run",
                str(SCHEMA),
                f"--url=http://{server.http}",
                f"--checks={CHECKS}",
                f"--max-examples={max_examples}",
                f"--max-time={seconds}",
                f"--seed={seed}",
                "--workers=1",
                "--request-timeout=30",
                "--suppress-health-check=all",
                "--warnings=off",
                f"--report-dir={tmp}/report",
            ]
            env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": "tests.fuzz.schemathesis_hooks"}
            done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 600, env=env, cwd=ROOT)
            output = done.stdout + done.stderr
            alive = http_call(server.http, "GET", "/v2/health/live")[0] == 200
        finally:
            server.stop()
        log = server.log()
    cases = sum(int(n) for n in re.findall(r"(\d+) generated", output)) or _count(output)
    failures = 0 if done.returncode == 0 else max(1, len(re.findall(r"^_+ .* _+$", output, re.M)))
    if not alive:
        failures += 1
        output += "\nthe server is not live after the run"
    if "Traceback" in log:
        failures += 1
        output += "\nthe server logged a traceback:\n" + log[-4000:]
    return cases, failures, output


def _count(output: str) -> int:
    match = re.search(r"Test cases:\s*(\d+)", output)
    return int(match.group(1)) if match else 0


def main(argv: list[str]) -> int:
    max_examples = int(argv[1]) if len(argv) > 1 else 200
    seconds = int(argv[2]) if len(argv) > 2 else 600
    cases, failures, output = run(max_examples, seconds)
    print(output)
    print(f"schemathesis: {cases} test cases, {failures} failures", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
