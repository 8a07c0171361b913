"""The error layer of the HTTP-style listeners: every request of the KServe v2 routes, SageMaker and Vertex AI is
answered through `answer`, which turns a SeawallError into the listener's error reply (`status_reply` here, the
cloud listeners' own in `cloud.routes`) and anything else into a logged 500; a refusal on the head goes through
the same reply function.

Imports `errors`, `frontends.status` and `message`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from seawall.errors import SeawallError
from seawall.frontends.http.message import HttpResponse, error_response
from seawall.frontends.status import http_headers, http_status

#: a listener's answer to a SeawallError
ErrorReply = Callable[[SeawallError], HttpResponse]

INTERNAL_ERROR = "internal error"


def status_reply(exc: SeawallError) -> HttpResponse:
    """The KServe v2 reply: the status (and headers) of the one Code → HTTP table, Triton's `{"error": ...}`
    body."""
    return error_response(http_status(exc.code), exc.message, http_headers(exc.code))


def failure_reply(
    exc: BaseException,
    reply: ErrorReply,
    log: logging.Logger,
    context: str,
    *args: object,
    warn_server_errors: bool = True,
) -> HttpResponse:
    """The reply to `exc`, raised while answering `context`. A SeawallError is logged as `<context>: <message>` (at
    WARNING when its reply is a 5xx and `warn_server_errors`, else DEBUG) and answered by `reply`; anything else is
    logged with its traceback as `internal error on <context>` and answered 500 without detail. `args` fill
    `context`'s %-placeholders."""
    if isinstance(exc, SeawallError):
        response = reply(exc)
        level = logging.WARNING if warn_server_errors and response.status >= 500 else logging.DEBUG
        log.log(level, f"{context}: %s", *args, exc.message)
        return response
    log.error(f"internal error on {context}", *args, exc_info=exc)
    return error_response(500, INTERNAL_ERROR)


async def answer(
    call: Callable[[], Awaitable[HttpResponse]],
    reply: ErrorReply,
    log: logging.Logger,
    context: str,
    *args: object,
    warn_server_errors: bool = True,
) -> HttpResponse:
    """`await call()`, or `failure_reply` to what it raised."""
    try:
        return await call()
    except Exception as exc:
        return failure_reply(exc, reply, log, context, *args, warn_server_errors=warn_server_errors)
