"""The reading side of one HTTP/1.1 connection: the httptools callbacks that build one request at a time while
enforcing `Limits` (header and trailer bytes, the declared length, the encoding), refuse a request on its head
(route, restriction) before its body is stored, and hand each complete request to the connection.

Imports httptools, `options` and the listener's own modules (`message`, `body`); `connection.HttpProtocol` is the
only user: it mixes `RequestReader` in and provides the hooks at the end of the class (the connection's state
machine: phases, the queue of requests, refusals).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import httptools

from seawall.frontends.http.body import BodyReader, Refusal
from seawall.frontends.http.message import HeadCheck, HttpRequest, HttpResponse, error_response
from seawall.options import Limits

if TYPE_CHECKING:
    from seawall.frontends.http.connection import Listener

logger = logging.getLogger(__name__)


class _StopParsing(Exception):
    """Raised from a parser callback once the request is refused: nothing after its head is parsed."""


def _refusal_response(refusal: Refusal) -> HttpResponse:
    return error_response(refusal.status, refusal.message, refusal.headers)


class RequestReader:
    """The parser's callbacks and `data_received`, over the connection's state (set by `HttpProtocol.__init__`)."""

    # the connection's state this side reads and updates
    _listener: Listener
    _limits: Limits
    _parser: httptools.HttpRequestParser | None
    _transport: asyncio.Transport | None
    _caller: str
    _closing: bool
    _received: int  # bytes received on this connection
    _in_head: bool  # between requests or inside a request's head
    _in_message: bool  # between on_message_begin and on_message_complete
    _head_bytes: int  # bytes received while in the head; httptools buffers them unbounded
    _quiet_bytes: int  # bytes received in the body section without a parser event (trailers, extensions)
    # the request being read
    _url: bytes
    _path: str
    _headers: dict[str, str]
    _header_bytes: int
    _trailer_bytes: int
    _body: BodyReader | None
    _checked: HeadCheck | None  # the listener's head check, once it passed this request's head

    def _reset_message(self) -> None:
        self._url = b""
        self._path = ""
        self._headers = {}
        self._header_bytes = 0
        self._trailer_bytes = 0
        self._body = None
        self._checked = None

    # asyncio.Protocol (the reading side) --------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        parser = self._parser
        if self._closing or parser is None:
            return  # discarding a refused request's body
        if self._in_head:
            self._head_bytes += len(data)
        else:
            self._quiet_bytes += len(data)
        try:
            parser.feed_data(data)
            if self._in_head and self._head_bytes > self._limits.max_header_bytes + 8192:
                raise Refusal(431, f"request headers exceed {self._limits.max_header_bytes} bytes")
            if self._quiet_bytes > self._limits.max_header_bytes + 8192:
                raise Refusal(431, f"request trailers exceed {self._limits.max_header_bytes} bytes")
        except Refusal as refusal:
            self._refuse(_refusal_response(refusal))
        except httptools.HttpParserUpgrade:
            self._closing = True  # answer what was queued, then close; upgrades are not supported
            self._next()
        except httptools.HttpParserError as exc:
            # httptools wraps exceptions raised in callbacks; the refusal is the context
            cause = exc.__context__
            if isinstance(cause, Refusal):
                self._refuse(_refusal_response(cause))
            elif isinstance(cause, _StopParsing) or self._closing:
                pass
            else:
                if cause is not None:
                    logger.error("error while reading a request: %r", cause)
                self._refuse(error_response(400, "malformed HTTP request"))

    # httptools callbacks --------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reset_message()
        self._in_message = True
        self._head_started()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            # a trailer field (chunked body): never joins the header section, which was authorized already
            self._quiet_bytes = 0
            self._trailer_bytes += len(name) + len(value) + 4
            if self._trailer_bytes > self._limits.max_header_bytes:
                raise Refusal(431, f"request trailers exceed {self._limits.max_header_bytes} bytes")
            return
        self._count_header_bytes(len(name) + len(value) + 4)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        # repeated headers are joined as RFC 9110 allows for list-valued fields
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def _count_header_bytes(self, count: int) -> None:
        self._header_bytes += count
        if self._header_bytes > self._limits.max_header_bytes:
            raise Refusal(431, f"request headers exceed {self._limits.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._quiet_bytes = 0
        path = self._url.split(b"?", 1)[0].split(b"#", 1)[0]
        try:
            self._path = path.decode()
        except UnicodeDecodeError:
            self._path = "/\x00"  # routes nowhere: 404
        headers = self._headers
        length = headers.get("content-length")
        declared = int(length) if length is not None and length.isdigit() else 0
        if declared > self._limits.max_request_bytes:
            raise Refusal(413, f"request body exceeds the limit of {self._limits.max_request_bytes} bytes")
        has_body = declared > 0 or "transfer-encoding" in headers
        check = self._listener.head_check
        if has_body and check is not None and self._parser is not None:
            # route and restriction decide on the head alone: a refused body is never stored
            refused = check(self._parser.get_method().decode("latin-1"), self._path, headers)
            if refused is not None:
                self._refuse(refused)
                raise _StopParsing
            self._checked = check
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise Refusal(501, "Unsupported compression type", [("Accept-Encoding", "gzip, deflate")])
        self._body = BodyReader(self._limits, encoding, self._listener.budget, declared)
        if has_body:
            self._body_started()
        if headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_chunk_header(self) -> None:
        self._quiet_bytes = 0
        if self._body is not None:
            self._body.chunk()

    def on_chunk_complete(self) -> None:
        self._quiet_bytes = 0

    def on_body(self, data: bytes) -> None:
        self._quiet_bytes = 0
        if self._body is not None:
            self._body.feed(data)

    def on_message_complete(self) -> None:
        if self._closing or self._parser is None:
            return  # refused on its head
        reader = self._body
        body = reader.body() if reader is not None else b""
        charge = reader.charged if reader is not None else 0
        self._body = None
        method = self._parser.get_method().decode("latin-1")
        request = HttpRequest(method, self._path, self._headers, body, self._caller, self._checked)
        self._in_head = True
        self._in_message = False
        self._head_bytes = 0
        self._request_read(request, self._parser.should_keep_alive(), charge)

    # what the connection does with what is read (HttpProtocol implements these) ---------------------------
    def _head_started(self) -> None:
        raise NotImplementedError

    def _body_started(self) -> None:
        raise NotImplementedError

    def _request_read(self, request: HttpRequest, keep_alive: bool, charge: int) -> None:
        raise NotImplementedError

    def _refuse(self, response: HttpResponse, linger: bool = True) -> None:
        raise NotImplementedError

    def _next(self) -> None:
        raise NotImplementedError
