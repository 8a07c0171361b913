"""The only table from Seawall error codes to HTTP statuses and gRPC status codes.

Imports `errors` and grpc. Every frontend maps errors through `http_status` / `grpc_status`.
"""

from __future__ import annotations

import grpc

from seawall.errors import RETRY_AFTER_SECS, Code

_HTTP: dict[Code, int] = {
    Code.INVALID_ARG: 400,
    Code.NOT_FOUND: 404,
    Code.UNAVAILABLE: 503,
    Code.UNSUPPORTED: 501,
    Code.ALREADY_EXISTS: 400,
    Code.INTERNAL: 500,
    Code.UNKNOWN: 400,
    Code.CANCELLED: 400,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 413,
    Code.INSUFFICIENT_CAPACITY: 507,  # no room for one more model (--max-loaded-models), nothing evictable
    Code.OVERLOADED: 429,  # Triton answers a full queue 503; 429 with Retry-After says "back off" (differences.md)
}

_GRPC: dict[Code, grpc.StatusCode] = {
    Code.INVALID_ARG: grpc.StatusCode.INVALID_ARGUMENT,
    Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,
    Code.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Code.INTERNAL: grpc.StatusCode.INTERNAL,
    Code.UNKNOWN: grpc.StatusCode.UNKNOWN,
    Code.CANCELLED: grpc.StatusCode.CANCELLED,
    # Triton answers a restricted protocol with UNAVAILABLE; clients retry on it, so keep it.
    Code.PERMISSION_DENIED: grpc.StatusCode.UNAVAILABLE,
    Code.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.INSUFFICIENT_CAPACITY: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def http_status(code: Code) -> int:
    return _HTTP[code]


def grpc_status(code: Code) -> grpc.StatusCode:
    return _GRPC[code]


def http_headers(code: Code) -> list[tuple[str, str]]:
    """The headers an HTTP error reply of `code` carries: Retry-After for backpressure, else none."""
    return [("Retry-After", str(RETRY_AFTER_SECS))] if code is Code.OVERLOADED else []
