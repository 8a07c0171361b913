"""The values an HTTP listener deals in: a request, a reply, the handler and head-check signatures, and the
reply's wire head.

Imports orjson and the standard library only; `server` re-exports these names for the frontends.
"""

from __future__ import annotations

import http
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson

_REASONS = {s.value: s.phrase.encode() for s in http.HTTPStatus}


#: Decides on a request's head alone (method, path, lower-case headers) whether it is refused: the reply, or None.
#: Called before any body byte is stored, for requests that have a body; a request that passed carries the check
#: (`HttpRequest.checked_by`), and a handler whose own check it is need not run it again.
HeadCheck = Callable[[str, str, Mapping[str, str]], "HttpResponse | None"]


@dataclass(slots=True)
class HttpRequest:
    """A complete request: `path` is the raw path without the query; header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    caller: str = ""  # "peer=<address>[ subject=<client certificate subject>]", for the audit log
    #: the head check (route, restriction, method) this request's head passed on its listener; None: not checked
    #: (no body, or a request made by a frontend): the handler checks it
    checked_by: HeadCheck | None = None

    def __init__(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        caller: str = "",
        checked_by: HeadCheck | None = None,
    ) -> None:  # written out (as HttpResponse's): compiled, where the dataclass's own is interpreted code
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.caller = caller
        self.checked_by = checked_by


def describe_caller(peer: object, certificate: object) -> str:
    """Who is calling, for the audit log: the peer address and, with mutual TLS, the certificate subject."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        text = f"peer={peer[0]}:{peer[1]}"
    else:
        text = f"peer={peer}" if peer else "peer=unknown"
    if isinstance(certificate, dict):
        subject = ",".join(f"{k}={v}" for rdn in certificate.get("subject", ()) for k, v in rdn)
        if subject:
            text += f" subject={subject}"
    return text


@dataclass(slots=True)
class HttpResponse:
    """A reply; `body` may be several buffers that are written without joining them."""

    status: int
    body: Sequence[bytes | memoryview] = ()
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def __init__(
        self,
        status: int,
        body: Sequence[bytes | memoryview] = (),
        content_type: str = "application/json",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = [] if headers is None else headers


@dataclass(slots=True)
class HttpStream(HttpResponse):
    """A reply whose body is produced while it is sent: each buffer `chunks` yields goes out as one chunk of a
    chunked body as soon as the client can take it (the connection awaits its drain before asking for the
    next), and the generator is closed when the client goes away. `body` stays empty."""

    chunks: AsyncGenerator[bytes, None] | None = None

    def __init__(
        self,
        status: int,
        content_type: str,
        chunks: AsyncGenerator[bytes, None],
        headers: list[tuple[str, str]] | None = None,
    ) -> None:  # written out: this mypyc cannot compile a subclass's generated one over HttpResponse's
        super().__init__(status, (), content_type, headers)
        self.chunks = chunks


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


def error_response(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    """The `{"error": message}` reply every failure uses."""
    return HttpResponse(status, (orjson.dumps({"error": message}),), "application/json", headers or [])


def render_head(response: HttpResponse, length: int | None, keep_alive: bool) -> bytes:
    """Status line and headers of `response` for a body of `length` bytes (None: a chunked body)."""
    reason = _REASONS.get(response.status, b"Unknown")
    lines = [b"HTTP/1.1 %d %s\r\n" % (response.status, reason)]
    if response.content_type:
        lines.append(b"Content-Type: %s\r\n" % response.content_type.encode("latin-1"))
    lines.append(b"Content-Length: %d\r\n" % length if length is not None else b"Transfer-Encoding: chunked\r\n")
    for name, value in response.headers:
        lines.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
    if not keep_alive:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)
