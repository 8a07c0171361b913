"""The one listener table: every listener once, the names Triton prints, and BindError naming its listener."""

from __future__ import annotations

import errno

from seawall.listeners import GRPC, LISTENERS, START_ORDER, BindError, enabled
from seawall.options import Options


def test_every_listener_is_listed_once_and_started_once() -> None:
    assert len({listener.key for listener in LISTENERS}) == len(LISTENERS) == 5
    assert sorted(START_ORDER, key=LISTENERS.index) == list(LISTENERS)
    assert [listener.display for listener in START_ORDER] == [
        "GRPCInferenceService",
        "HTTPService",
        "Metrics Service",
        "Sagemaker HTTPService",
        "Vertex AI HTTPService",
    ]


def test_enabled_follows_the_allow_options() -> None:
    options = Options()
    assert [listener.key for listener in enabled(options)] == ["http", "grpc", "metrics"]  # cloud listeners off
    assert [listener.key for listener in enabled(options, START_ORDER)] == ["grpc", "http", "metrics"]


def test_a_bind_error_names_its_listener_and_keeps_the_cause() -> None:
    cause = OSError(errno.EADDRINUSE, "address already in use")
    error = BindError(GRPC, "127.0.0.1", 8001, cause)
    assert isinstance(error, OSError)
    assert (error.listener, error.address, error.port, error.cause) == (GRPC, "127.0.0.1", 8001, cause)
    assert (error.errno, error.strerror, str(error)) == (errno.EADDRINUSE, "address already in use", str(cause))
