"""The scale-out story rehearsed end to end (tests/deploy/scaleout.py): nginx in front of three Seawall processes,
one SIGKILLed and one rolled under steady HTTP and gRPC load; the clients see no failed request. A backend whose
port another process took before its first start moves to other ports instead of failing the rehearsal."""

from __future__ import annotations

import socket
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


def test_a_backend_whose_port_was_taken_before_it_first_started_takes_other_ports() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        backend = scaleout.Backend(http_port=port)
        backend.start()
        try:
            assert backend.http_port != port and backend.ready()
            assert len(backend.started) == 1
        finally:
            assert backend.process is not None
            backend.process.stop()
