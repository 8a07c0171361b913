"""Triton 2.51 and Seawall serving one model with custom metrics (tests/models/custom_metrics: a counter, two
gauges, a histogram): the same exposition lines per family. Triton orders the series of a family by a hash
(Seawall: by labels), so samples compare as sets; HELP and TYPE compare as lines. Where Triton is weak, Seawall
differs on purpose (see docs/differences.md): an `nv_` name, a family name reused with another kind (which
aborts the whole Triton server), a newline in a description (Triton writes it raw into the exposition)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import TEST_MODELS, ServerProcess, triton_and_seawall

FAMILIES = ("probe_requests", "probe_gauge", "probe_latency")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    root: Path = tmp_path_factory.mktemp("differential_metrics")
    with triton_and_seawall(root, TEST_MODELS / "custom_metrics") as pair:
        yield pair


def _family(server: ServerProcess, name: str) -> tuple[list[str], set[str]]:
    with urllib.request.urlopen(f"http://{server.metrics}/metrics", timeout=30) as reply:
        lines = reply.read().decode().splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"# HELP {name} ")))
    end = start + 2
    while end < len(lines) and not lines[end].startswith("#"):
        end += 1
    return lines[start : start + 2], set(lines[start + 2 : end])


@pytest.mark.parametrize("name", FAMILIES)
def test_custom_families_print_the_same_lines(pair: tuple[ServerProcess, ServerProcess], name: str) -> None:
    triton, seawall = pair
    assert _family(seawall, name) == _family(triton, name)
