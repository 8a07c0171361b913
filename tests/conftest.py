"""`figure("...")`: a fault test's measured figure (a duration, a count, a slope), kept with its result and
printed by `make reliability` (the `tests.reliability.report` plugin) on the test's one line."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    def record(text: str) -> None:
        request.node.user_properties.append(("figure", text))

    return record
