"""`make test`'s short share of `make fuzz`: every atheris target for a few hundred executions, and schemathesis
against a real server for a few seconds. `make fuzz` runs the same with large budgets."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fuzz import targets
from tests.harness import ROOT

RUNS = 200


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_atheris_target_runs_without_a_crash(name: str) -> None:
    pytest.importorskip("atheris")
    done = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.atheris_run", name, str(RUNS)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"fuzz {name}: {RUNS} executions, 0 crashes" in done.stdout


def test_schemathesis_finds_no_server_error() -> None:
    pytest.importorskip("schemathesis")
    from tests.fuzz import schemathesis_run

    cases, failures, output = schemathesis_run.run(max_examples=5, seconds=10)
    assert failures == 0, output[-6000:]
    assert cases > 0, output[-3000:]
