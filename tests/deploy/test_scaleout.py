"""The scale-out story rehearsed end to end (tests/deploy/scaleout.py): nginx in front of three Seawall processes,
one SIGKILLed and one rolled under steady HTTP and gRPC load; the clients see no failed request."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.deploy import scaleout


@pytest.mark.skipif(scaleout.NGINX is None, reason="nginx is not installed (.ci/run installs nginx-light)")
def test_a_crash_and_a_roll_behind_the_gateway_fail_no_request(figure: Callable[[str], None]) -> None:
    result = scaleout.rehearse(steady_s=1.5, http_clients=2, grpc_clients=1)
    figure(result.line())
    assert result.failures == [], f"{result.failures[:5]}\n{result.evidence}"
    # load really flowed over both protocols, and the gateway really followed readiness (down and up twice)
    assert result.requests["http"] > 50 and result.requests["grpc"] > 20, result.line()
    assert result.reloads >= 4, result.line()
