"""What the SageMaker and Vertex AI listeners share: the route table type, the restriction-first dispatcher,
the `...binary+json;json-header-size=N` content type, and the infer call.

Imports `core.server`, `errors`, `security.policy` and the HTTP codec/server. Every route of these
listeners has an API category, and `RouteTable.dispatch` checks it before anything else runs.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import seawall.core.offload as offload
from seawall.core.server import InferenceServer
from seawall.errors import Code, InvalidArgumentError, SeawallError
from seawall.frontends.http import codec as http_codec
from seawall.frontends.http import errors as http_errors
from seawall.frontends.http.server import HttpRequest, HttpResponse, error_response
from seawall.options import Limits
from seawall.security.policy import ApiPolicy

logger = logging.getLogger(__name__)

GET, POST, DELETE = frozenset({"GET"}), frozenset({"POST"}), frozenset({"DELETE"})
EMPTY_OK = HttpResponse(200, (), "")
EMPTY_BAD = HttpResponse(400, (), "")
EMPTY_NOT_FOUND = HttpResponse(404, (), "")
EMPTY_METHOD_NOT_ALLOWED = HttpResponse(405, (), "")
_HEADER_SIZE = "json-header-size="
#: Texts Triton's SageMaker listener takes for running out of memory (507), the ones a CPU server can see.
_OUT_OF_MEMORY = ("out of memory", "memoryerror", "outofmemory", "failed to allocate memory", "no space left on device")

Endpoint = Callable[[HttpRequest, "dict[str, str]"], Awaitable[HttpResponse]]


@dataclass(frozen=True, slots=True)
class CloudRoute:
    """One route: methods, full-match path pattern, API category (`options.API_CATEGORIES`), handler name."""

    methods: frozenset[str]
    pattern: str
    category: str
    handler: str


class RouteTable:
    """Matches a request to a route and runs it behind the restriction check, Triton's order:
    unknown path → 400 empty, then restriction (403), then method (405 empty), then the handler.
    """

    def __init__(self, routes: tuple[CloudRoute, ...], endpoints: Mapping[str, Endpoint], policy: ApiPolicy) -> None:
        self.routes = routes
        self._compiled = tuple((route, re.compile(route.pattern)) for route in routes)
        self._endpoints = endpoints
        self._policy = policy

    def find(self, method: str, path: str) -> tuple[CloudRoute, dict[str, str]] | None:
        """The route for `path` that accepts `method`, else the first route for `path` (for its category)."""
        first: tuple[CloudRoute, dict[str, str]] | None = None
        for route, pattern in self._compiled:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            found = (route, match.groupdict())
            if method in route.methods:
                return found
            first = first or found
        return first

    def check_head(self, method: str, path: str, headers: Mapping[str, str]) -> HttpResponse | None:
        """The refusal of a request by its head alone (`server.HeadCheck`), in the order of `dispatch`."""
        found = self.find(method, path)
        if found is None:
            return EMPTY_BAD
        try:
            self._policy.authorize(found[0].category, headers.get)
        except SeawallError as exc:
            return error_reply(exc)
        if method not in found[0].methods:
            return EMPTY_METHOD_NOT_ALLOWED
        return None

    async def dispatch(self, request: HttpRequest, listener: str) -> HttpResponse:
        found = self.find(request.method, request.path)
        if found is None:
            return EMPTY_BAD
        route, groups = found

        async def run() -> HttpResponse:
            self._policy.authorize(route.category, request.headers.get)
            if request.method not in route.methods:
                return EMPTY_METHOD_NOT_ALLOWED
            return await self._endpoints[route.handler](request, groups)

        where = "%s %s %r"
        return await answer(run, logger, where, listener, request.method, request.path)


async def answer(
    call: Callable[[], Awaitable[HttpResponse]], log: logging.Logger, context: str, *args: object
) -> HttpResponse:
    """The cloud listeners' error layer: `http.errors.answer` with `error_reply`. Their errors log at DEBUG
    (Triton's cloud listeners answer a client's mistake 507 too)."""
    return await http_errors.answer(call, error_reply, log, context, *args, warn_server_errors=False)


def error_reply(exc: SeawallError) -> HttpResponse:
    """Triton's cloud listeners answer every failure 400, or 507 when it looks like memory ran out;
    Seawall adds the restriction's 403 (the HTTP frontend's message), 501 for what it does not do yet, and the
    KServe listener's answers to its own limits: 429 with Retry-After (backpressure), 507 (no room to load)."""
    if exc.code is Code.PERMISSION_DENIED:
        return error_response(403, exc.message)
    if exc.code is Code.UNSUPPORTED:
        return error_response(501, exc.message)
    if exc.code in (Code.OVERLOADED, Code.INSUFFICIENT_CAPACITY):
        return http_errors.status_reply(exc)
    text = exc.message.lower()
    if any(marker in text for marker in _OUT_OF_MEMORY):
        return error_response(507, exc.message)
    return error_response(400, exc.message)


def binary_header_length(content_type: str | None, prefix: str, body_length: int) -> int | None:
    """N from `<prefix>json-header-size=N` (the JSON header's length in a JSON + binary body); None when
    the body is plain JSON.

    Raises:
        InvalidArgumentError: the parameter is not at the start of the Content-Type, or N is not a length
            inside the body.
    """
    text = (content_type or "").strip()
    lead = prefix + _HEADER_SIZE
    if not text.lower().startswith(lead):
        if _HEADER_SIZE in text.lower():
            raise InvalidArgumentError(f"the Content-Type must start with '{lead}<N>' for binary data")
        return None
    value = text[len(lead) :].split(";", 1)[0]
    return http_codec.parse_header_length(value, body_length)


def binary_content_type(prefix: str, header_length: int) -> str:
    return f"{prefix}{_HEADER_SIZE}{header_length}"


async def infer(
    server: InferenceServer,
    request: HttpRequest,
    model: str,
    limits: Limits,
    binary_prefix: str,
    json_gate: asyncio.Lock,
) -> HttpResponse:
    """Run a KServe v2 JSON (or JSON + binary) infer request on `model`'s latest version (a large JSON document
    under `json_gate`: see `BodyBudget.json_gate`).

    Raises:
        SeawallError: the body is malformed or the inference failed.
    """
    body = request.body
    length = binary_header_length(request.headers.get("content-type"), binary_prefix, len(body))
    if len(body) > offload.HEAVY_BODY_BYTES:
        decoded = await http_codec.decode_large(json_gate, body, length, model, "", limits)
    else:
        decoded = http_codec.decode_infer_request(body, length, model, "", limits)
    response = await server.infer(decoded.request)
    parts, header_length = await http_codec.encode_infer_reply(response, decoded)
    if header_length is None:
        return HttpResponse(200, parts, "application/json")
    return HttpResponse(200, parts, binary_content_type(binary_prefix, header_length))
