"""The Vertex AI listener (`--allow-vertex-ai`): the health and predict routes of AIP_HEALTH_ROUTE /
AIP_PREDICT_ROUTE, and the `X-Vertex-Ai-Triton-Redirect` header that re-dispatches to the HTTP routes.

Imports `core.server`, `errors`, `security`, `cloud` and the HTTP frontend. A redirected request is
checked against the category of its *target* route (CVE-2026-24206/24207: 2.51 checked nothing), and
repository load/unload and shared-memory register/unregister are never reachable through it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from seawall.core.server import InferenceServer
from seawall.errors import InvalidArgumentError, PermissionDeniedError, SeawallError
from seawall.frontends.cloud import routes as cloud
from seawall.frontends.cloud.routes import GET, POST, CloudRoute
from seawall.frontends.http import routes as http_frontend
from seawall.frontends.http.body import BodyBudget
from seawall.frontends.http.server import HttpRequest, HttpResponse, HttpServer, OverHttpServer
from seawall.options import Options, VertexOptions
from seawall.security.policy import ApiPolicy, Keys

logger = logging.getLogger(__name__)

BINARY_PREFIX = "application/vnd.vertex-ai-triton.binary+json;"
REDIRECT_HEADER = "x-vertex-ai-triton-redirect"
#: HTTP categories a redirect cannot reach at all (Triton 2.51: logging, trace and generate answer 400).
UNREACHABLE_CATEGORIES = frozenset({"logging", "trace"})
_GENERATE = re.compile(r".*/generate(?:_stream)?")
#: Redirect targets refused with 403 whatever headers the request carries (upstream Triton's fix).
REFUSED: tuple[CloudRoute, ...] = (
    CloudRoute(POST, r"/v2/repository(?:/[^/]+)?/models/[^/]+/(?:load|unload)", "model-repository", ""),
    CloudRoute(POST, r"/v2/(?:system|cuda)sharedmemory(?:/region/[^/]+)?/(?:register|unregister)", "shared-memory", ""),
)
_REFUSED = tuple((route, re.compile(route.pattern)) for route in REFUSED)
_HTTP_ROUTES = tuple((route, re.compile(route.pattern)) for route in http_frontend.ROUTES)


def routes(options: VertexOptions) -> tuple[CloudRoute, ...]:
    """The listener's own routes. The predict route with the redirect header takes its target's category."""
    return (
        CloudRoute(GET, re.escape(options.health_route), "health", "_health"),
        CloudRoute(POST, re.escape(options.predict_route), "inference", "_predict"),
    )


@dataclass(frozen=True, slots=True)
class RedirectTarget:
    """Where a redirect header leads: the HTTP route, the category checked, the method it runs with."""

    path: str
    category: str
    method: str
    is_refused: bool


def redirect_target(header: str) -> RedirectTarget | None:
    """Resolve the header's path (no leading slash, no query, no `.`/`..`/empty segments).

    None for a path that is malformed, unknown, or unreachable through the redirect.
    """
    if not header or header.startswith("/") or any(c in header for c in "?#\\%\x00") or not header.isprintable():
        return None
    if any(segment in ("", ".", "..") for segment in header.split("/")):
        return None
    path = "/" + header
    for route, pattern in _REFUSED:
        if pattern.fullmatch(path):
            return RedirectTarget(path, route.category, "POST", True)
    for http_route, pattern in _HTTP_ROUTES:
        if pattern.fullmatch(path):
            if http_route.category in UNREACHABLE_CATEGORIES or _GENERATE.fullmatch(path):
                return None
            method = "POST" if "POST" in http_route.methods else "GET"
            return RedirectTarget(path, http_route.category, method, False)
    return None


class VertexFrontend(OverHttpServer):
    """Serves the Vertex AI prediction API of `server` on `options.vertex`."""

    def __init__(
        self, server: InferenceServer, options: Options, keys: Keys | None = None, budget: BodyBudget | None = None
    ) -> None:
        self._server = server
        self._options = options.vertex
        self._limits = options.limits
        # the HTTP listener's restrictions, unchanged (and rotated with them)
        self._policy = ApiPolicy(keys if keys is not None else options.http.restricted)
        self._http_routes = http_frontend.HttpFrontend(server, options, keys, budget)  # its handler only; never started
        own = routes(self._options)
        self.table = cloud.RouteTable(own, {r.handler: getattr(self, r.handler) for r in own}, self._policy)
        self._model = self._options.default_model  # resolved in start()
        self._http = HttpServer(
            self.handle,
            options.limits,
            self._options.address,
            self._options.port,
            head_check=self.check_head,
            budget=budget,
        )

    async def start(self) -> tuple[str, int]:
        """Pick the default model, then bind the listener; returns the bound (host, port).

        Raises:
            InvalidArgumentError: no default model and not exactly one model, or the default is not ready.
            OSError: the address cannot be bound.
        """
        self._model = self._default_model()
        return await super().start()

    def _default_model(self) -> str:
        if self._options.default_model:
            if not self._server.model_ready(self._options.default_model):
                raise InvalidArgumentError(
                    f"Expect the default model '{self._options.default_model}' to be loaded for Vertex AI"
                )
            return self._options.default_model
        names = {entry.name for entry in self._server.repository_index()}
        if len(names) != 1:
            raise InvalidArgumentError(
                "Expect the model repository to contain only a single model if default model is not specified "
                "(--vertex-ai-default-model)"
            )
        return names.pop()

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """The redirect on the predict route, else the health and predict routes; unknown paths 400 empty."""
        header = request.headers.get(REDIRECT_HEADER)
        if header is None or request.path != self._options.predict_route:
            return await self.table.dispatch(request, "vertex")
        return await cloud.answer(
            lambda: self._redirect(request, header.strip()), logger, "a Vertex AI redirect %r", header
        )

    def check_head(self, method: str, path: str, headers: Mapping[str, str]) -> HttpResponse | None:
        """The refusal of a request by its head alone (`server.HeadCheck`); a redirect is checked against
        its target, as `handle` does."""
        header = headers.get(REDIRECT_HEADER)
        if header is None or path != self._options.predict_route:
            return self.table.check_head(method, path, headers)
        try:
            target = self._admit_redirect(method, header.strip(), headers)
        except SeawallError as exc:
            return cloud.error_reply(exc)
        return target if isinstance(target, HttpResponse) else None

    def _admit_redirect(self, method: str, header: str, headers: Mapping[str, str]) -> RedirectTarget | HttpResponse:
        """The redirect's target, or the empty reply refusing it.

        Raises:
            PermissionDeniedError: the target is restricted and the key is missing, or it is never reachable.
        """
        target = redirect_target(header)
        if target is None:
            return cloud.EMPTY_BAD
        self._policy.authorize(target.category, headers.get)
        if target.is_refused:
            raise PermissionDeniedError("This API is not available through the Vertex AI redirect")
        if method != "POST":
            return cloud.EMPTY_METHOD_NOT_ALLOWED
        return target

    async def _redirect(self, request: HttpRequest, header: str) -> HttpResponse:
        target = self._admit_redirect(request.method, header, request.headers)
        if isinstance(target, HttpResponse):
            return target
        headers = {k: v for k, v in request.headers.items() if k != REDIRECT_HEADER}
        length = cloud.binary_header_length(headers.get("content-type"), BINARY_PREFIX, len(request.body))
        if length is not None:
            headers["inference-header-content-length"] = str(length)
            headers["content-type"] = "application/octet-stream"
        forwarded = HttpRequest(target.method, target.path, headers, request.body)
        response = await self._http_routes.handle(forwarded)  # checks the same policy again
        for name, value in response.headers:
            if name.lower() == "inference-header-content-length":
                kept = [(n, v) for n, v in response.headers if n.lower() != "inference-header-content-length"]
                content_type = cloud.binary_content_type(BINARY_PREFIX, int(value))
                return HttpResponse(response.status, response.body, content_type, kept)
        return response

    # handlers ----------------------------------------------------------------------------------------
    async def _health(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        return cloud.EMPTY_OK if self._server.is_ready() else cloud.EMPTY_BAD

    async def _predict(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        gate = self._http.budget.json_gate
        return await cloud.infer(self._server, request, self._model, self._limits, BINARY_PREFIX, gate)
