"""The one error hierarchy of Seawall: Triton's closed set of codes, each a SeawallError subclass.

Imports nothing from Seawall. Frontends map `Code` to transport statuses in `frontends/status.py`.

    SeawallError
     ├── InvalidArgumentError   INVALID_ARG
     ├── NotFoundError          NOT_FOUND
     ├── UnavailableError       UNAVAILABLE
     ├── UnsupportedError       UNSUPPORTED
     ├── AlreadyExistsError     ALREADY_EXISTS
     ├── InternalError          INTERNAL
     ├── UnknownError           UNKNOWN
     ├── CancelledError         CANCELLED
     ├── PermissionDeniedError  restricted API without the right header
     ├── ResourceExhaustedError a request over a resource limit
     ├── CapacityError          a model load that does not fit under --max-loaded-models (nothing can be evicted)
     └── OverloadedError        a request refused because the server or the model's queue is full: retry later
"""

from __future__ import annotations

import enum
from typing import ClassVar


class Code(enum.Enum):
    """Triton's status codes, plus the three that restricted APIs, limits and backpressure need."""

    INVALID_ARG = "Invalid argument"
    NOT_FOUND = "Not found"
    UNAVAILABLE = "Unavailable"
    UNSUPPORTED = "Unsupported"
    ALREADY_EXISTS = "Already exists"
    INTERNAL = "Internal"
    UNKNOWN = "Unknown"
    CANCELLED = "Cancelled"
    PERMISSION_DENIED = "Permission denied"
    RESOURCE_EXHAUSTED = "Resource exhausted"
    INSUFFICIENT_CAPACITY = "Insufficient capacity"
    OVERLOADED = "Overloaded"


class SeawallError(Exception):
    """An error whose message is meant for the client; `code` decides the transport status."""

    code: ClassVar[Code] = Code.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidArgumentError(SeawallError):
    code = Code.INVALID_ARG


class NotFoundError(SeawallError):
    code = Code.NOT_FOUND


class UnavailableError(SeawallError):
    code = Code.UNAVAILABLE


class UnsupportedError(SeawallError):
    code = Code.UNSUPPORTED


class DecoupledModelError(UnsupportedError):
    """A unary inference call on a decoupled model; each frontend answers with Triton's own message for it."""


class AlreadyExistsError(SeawallError):
    code = Code.ALREADY_EXISTS


class InternalError(SeawallError):
    code = Code.INTERNAL


class UnknownError(SeawallError):
    code = Code.UNKNOWN


class CancelledError(SeawallError):
    code = Code.CANCELLED


class PermissionDeniedError(SeawallError):
    code = Code.PERMISSION_DENIED


class ResourceExhaustedError(SeawallError):
    code = Code.RESOURCE_EXHAUSTED


class CapacityError(SeawallError):
    """The server holds as many models as it may (`--max-loaded-models`) and none can be unloaded to make room
    (HTTP 507 Insufficient Storage, gRPC RESOURCE_EXHAUSTED): fail instead of evicting a busy model."""

    code = Code.INSUFFICIENT_CAPACITY


class OverloadedError(SeawallError):
    """Backpressure: too many requests in flight (`--max-inflight-requests`) or a full model queue
    (`max_queue_size`); the client should retry after `RETRY_AFTER_SECS` (HTTP 429 with Retry-After, gRPC
    RESOURCE_EXHAUSTED, where Triton answers 503/UNAVAILABLE)."""

    code = Code.OVERLOADED


#: what an OverloadedError tells the client to wait before retrying (HTTP Retry-After)
RETRY_AFTER_SECS = 1


_BY_CODE: dict[Code, type[SeawallError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        UnavailableError,
        UnsupportedError,
        AlreadyExistsError,
        InternalError,
        UnknownError,
        CancelledError,
        PermissionDeniedError,
        ResourceExhaustedError,
        CapacityError,
        OverloadedError,
    )
}


def error_for_code(code: Code, message: str) -> SeawallError:
    """Build the SeawallError subclass that carries `code`."""
    return _BY_CODE[code](message)
