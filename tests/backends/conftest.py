"""The fixture every Python-backend test of this package shares: a backend with default options, stopped after."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from seawall.backends.python.host import PythonBackend
from seawall.options import BackendOptions


@pytest.fixture
async def backend() -> AsyncIterator[PythonBackend]:
    backend = PythonBackend(BackendOptions())
    yield backend
    await backend.stop()
