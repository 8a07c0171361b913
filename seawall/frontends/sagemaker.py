"""The SageMaker listener (`--allow-sagemaker`): /ping, /invocations and the multi-model (MME) routes.

Imports `core.server`, `errors`, `security`, `cloud` and the HTTP server. Every route has an API category
and `--http-restricted-api` applies here exactly as on the HTTP listener (Triton 2.51 applied none).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from seawall.core.server import InferenceServer
from seawall.errors import InvalidArgumentError, UnsupportedError
from seawall.frontends import cloud, http_codec
from seawall.frontends.cloud import DELETE, GET, POST, CloudRoute
from seawall.frontends.http_server import HttpRequest, HttpResponse, HttpServer
from seawall.options import Options
from seawall.security.policy import ApiPolicy

logger = logging.getLogger(__name__)

BINARY_PREFIX = "application/vnd.sagemaker-triton.binary+json;"
#: File systems an MME `url` may never point into, even under a misconfigured model root (CVE-2026-24209).
FORBIDDEN_ROOTS = ("/dev", "/proc", "/sys", "/run", "/etc", "/boot")
_HASH = r"(?P<hash>[^/]+)"

#: Every SageMaker route. Reading the MME table is `model-repository`, like `v2/repository/index`:
#: it lists what is loaded and where it came from on the server's disk.
ROUTES: tuple[CloudRoute, ...] = (
    CloudRoute(GET, r"/ping", "health", "_ping"),
    CloudRoute(POST, r"/invocations", "inference", "_invocations"),
    CloudRoute(GET, r"/models", "model-repository", "_list_models"),
    CloudRoute(POST, r"/models", "model-repository", "_load_model"),
    CloudRoute(GET, rf"/models/{_HASH}", "model-repository", "_get_model"),
    CloudRoute(DELETE, rf"/models/{_HASH}", "model-repository", "_unload_model"),
    CloudRoute(POST, rf"/models/{_HASH}/invoke", "inference", "_invoke_model"),
)


def _is_within(path: str, root: str) -> bool:
    return path != root and os.path.commonpath([path, root]) == root


def confine_model_url(url: object, model_root: str) -> str:
    """The real path of an MME `url`, which must be an existing directory strictly inside `model_root`
    after every symlink is resolved; `..` components, relative paths and system trees are refused.

    Raises:
        InvalidArgumentError: the url is not a string, escapes the root, or is not a directory. The
            message never echoes the path.
    """
    refusal = InvalidArgumentError("'url' must name a model directory under the SageMaker model root")
    if not isinstance(url, str) or not url or "\x00" in url or not os.path.isabs(url):
        raise refusal
    if ".." in url.split("/"):
        raise refusal
    root = os.path.realpath(model_root)
    resolved = os.path.realpath(url)
    for forbidden in FORBIDDEN_ROOTS:
        if any(p == forbidden or p.startswith(forbidden + "/") for p in (os.path.normpath(url), resolved)):
            raise refusal
    if not _is_within(resolved, root) or not os.path.isdir(resolved):
        raise refusal
    return resolved


class SageMakerFrontend:
    """Serves the SageMaker inference API of `server` on `options.sagemaker`."""

    def __init__(self, server: InferenceServer, options: Options) -> None:
        self._server = server
        self._options = options.sagemaker
        self._limits = options.limits
        endpoints = {route.handler: getattr(self, route.handler) for route in ROUTES}
        self.table = cloud.RouteTable(ROUTES, endpoints, ApiPolicy(options.http.restricted))
        self._http = HttpServer(self.handle, options.limits, self._options.address, self._options.port)

    async def start(self) -> tuple[str, int]:
        """Bind the listener; returns the bound (host, port).

        Raises:
            OSError: the address cannot be bound.
        """
        return await self._http.start()

    async def stop(self) -> None:
        """Stop listening and finish in-flight requests; idempotent."""
        await self._http.stop()

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Restriction, then method, then the route; unknown paths are 400 with an empty body (Triton)."""
        return await self.table.dispatch(request, "sagemaker")

    # handlers ----------------------------------------------------------------------------------------
    async def _ping(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        healthy = self._server.is_live() if self._options.ping_mode == "live" else self._server.is_ready()
        return cloud.EMPTY_OK if healthy else cloud.EMPTY_BAD

    async def _invocations(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        return await cloud.infer(self._server, request, self._options.default_model, self._limits, BINARY_PREFIX)

    async def _list_models(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        # nothing can be loaded through POST /models yet, so the MME table is always empty
        return HttpResponse(200, (b'{"models":[]}',), "application/json")

    async def _get_model(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        return cloud.EMPTY_NOT_FOUND

    async def _unload_model(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        return cloud.EMPTY_NOT_FOUND

    async def _invoke_model(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        return cloud.EMPTY_NOT_FOUND

    async def _load_model(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        document: Any = http_codec.load_json(request.body, self._limits.max_json_depth)
        if not isinstance(document, dict):
            raise InvalidArgumentError("expected a JSON object with 'model_name' and 'url'")
        name = document.get("model_name")
        if not isinstance(name, str) or not name or "/" in name:
            raise InvalidArgumentError("'model_name' must be a non-empty string without '/'")
        confine_model_url(document.get("url"), self._options.model_root)
        # The core can load models only from the repositories it started with; registering a new
        # repository directory at run time (what MME load is) needs a core API that does not exist yet.
        raise UnsupportedError("SageMaker multi-model loading is not supported yet")
