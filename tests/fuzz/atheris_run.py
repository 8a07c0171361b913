"""Coverage-guided fuzzing of one parser with atheris (libFuzzer): `python -m tests.fuzz.atheris_run TARGET RUNS`.

Seawall's modules are imported instrumented; the run starts from the target's seeds (`targets.seeds`) and stops
after RUNS executions. A crash (an exception other than SeawallError) stops it with a non-zero status and leaves
the input in `.fuzz/crash-*` (SEAWALL_FUZZ_ARTIFACTS): turn it into a regression test, then fix the parser. The last
line printed is `fuzz <target>: <N> executions, <M> crashes`.
"""

from __future__ import annotations

import os
import shutil
import sys

import atheris

with atheris.instrument_imports(include=["seawall"]):
    from tests.fuzz import targets


def main(argv: list[str]) -> None:
    name, runs = argv[1], int(argv[2])
    target = targets.TARGETS[name]
    artifacts = os.environ.get("SEAWALL_FUZZ_ARTIFACTS", ".fuzz")
    corpus = os.path.join(artifacts, f"corpus-{name}")  # fresh on each run: the seeds only, so runs repeat
    shutil.rmtree(corpus, ignore_errors=True)
    os.makedirs(corpus)
    for index, seed in enumerate(targets.seeds()[name]):
        with open(os.path.join(corpus, f"seed{index}"), "wb") as file:
            file.write(seed)
    executions = 0

    def one_input(data: bytes) -> None:
        nonlocal executions
        executions += 1
        targets.refused(target, data)
        if executions == runs:
            print(f"fuzz {name}: {executions} executions, 0 crashes", flush=True)

    options = [f"-runs={runs}", "-max_len=4096", "-timeout=20", "-rss_limit_mb=2048", f"-artifact_prefix={artifacts}/"]
    atheris.Setup([argv[0], *options, corpus], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
