"""Fixtures that run the real Triton beside Seawall on the same model repository."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import EXAMPLES, TRITON, ServerProcess, start_seawall, start_triton


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "differential" in str(item.fspath):
            item.add_marker(pytest.mark.differential)


@pytest.fixture(scope="session")
def triton() -> Iterator[ServerProcess]:
    if not TRITON.exists():
        pytest.skip(f"the reference Triton is not available at {TRITON}")
    server = start_triton(EXAMPLES)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seawall_server() -> Iterator[ServerProcess]:
    server = start_seawall()
    yield server
    server.stop()
