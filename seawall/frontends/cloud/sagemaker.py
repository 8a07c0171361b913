"""The SageMaker listener (`--allow-sagemaker`): /ping, /invocations and the multi-model (MME) routes.

Imports `core.server`, `errors`, `security`, `cloud`, `sagemaker_mme` and the HTTP server. Every route has an API
category and `--http-restricted-api` applies here exactly as on the HTTP listener (Triton 2.51 applied none).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from seawall.core.server import InferenceServer
from seawall.errors import AlreadyExistsError, InvalidArgumentError, ResourceExhaustedError
from seawall.frontends.cloud import routes as cloud
from seawall.frontends.cloud.routes import DELETE, GET, POST, CloudRoute
from seawall.frontends.cloud.sagemaker_mme import MultiModelTable
from seawall.frontends.http.body import BodyBudget
from seawall.frontends.http.json_body import load_json
from seawall.frontends.http.server import HttpRequest, HttpResponse, HttpServer, OverHttpServer, error_response
from seawall.options import Options
from seawall.security.policy import ApiPolicy, Keys

logger = logging.getLogger(__name__)

BINARY_PREFIX = "application/vnd.sagemaker-triton.binary+json;"
TARGET_MODEL = "x-amzn-sagemaker-target-model"
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


class SageMakerFrontend(OverHttpServer):
    """Serves the SageMaker inference API of `server` on `options.sagemaker`."""

    def __init__(
        self, server: InferenceServer, options: Options, keys: Keys | None = None, budget: BodyBudget | None = None
    ) -> None:
        self._server = server
        self._options = options.sagemaker
        self._limits = options.limits
        self._mme = MultiModelTable(server, options)
        endpoints = {route.handler: getattr(self, route.handler) for route in ROUTES}
        self.table = cloud.RouteTable(
            ROUTES, endpoints, ApiPolicy(keys if keys is not None else options.http.restricted)
        )
        self._http = HttpServer(
            self.handle,
            options.limits,
            self._options.address,
            self._options.port,
            head_check=self.table.check_head,
            budget=budget,
        )

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Restriction, then method, then the route; unknown paths are 400 with an empty body (Triton)."""
        return await self.table.dispatch(request, "sagemaker")

    # handlers ----------------------------------------------------------------------------------------
    async def _ping(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        healthy = self._server.is_live() if self._options.ping_mode == "live" else self._server.is_ready()
        return cloud.EMPTY_OK if healthy else cloud.EMPTY_BAD

    async def _invocations(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        model = self._options.default_model
        return await cloud.infer(self._server, request, model, self._limits, BINARY_PREFIX, self._http.budget.json_gate)

    # multi-model endpoint (MME) ---------------------------------------------------------------------------
    async def _list_models(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        return HttpResponse(200, (orjson.dumps({"models": self._mme.listing()}),), "application/json")

    async def _get_model(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        entry = self._mme.get(groups["hash"])
        if entry is None:
            return cloud.EMPTY_NOT_FOUND
        body = orjson.dumps({"modelName": groups["hash"], "modelUrl": entry.url})
        return HttpResponse(200, (body,), "application/json")

    async def _unload_model(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        unloaded = await self._mme.unload(groups["hash"], request.caller)
        return cloud.EMPTY_OK if unloaded else cloud.EMPTY_NOT_FOUND

    async def _invoke_model(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        # the model loaded for this hash, never another one named by X-Amzn-SageMaker-Target-Model
        entry = self._mme.get(groups["hash"])
        if entry is None:
            return cloud.EMPTY_NOT_FOUND
        gate = self._http.budget.json_gate
        return await cloud.infer(self._server, request, entry.model, self._limits, BINARY_PREFIX, gate)

    async def _load_model(self, request: HttpRequest, groups: dict[str, str]) -> HttpResponse:
        """Triton's answers: 200 empty, 409 for a name in use, 507 when memory (here: the model bound) runs
        out, 400 otherwise."""
        document: Any = load_json(request.body, self._limits.max_json_depth)
        if not isinstance(document, dict):
            raise InvalidArgumentError("expected a JSON object with 'model_name' and 'url'")
        target = request.headers.get(TARGET_MODEL)
        try:
            await self._mme.load(document.get("model_name"), target, document.get("url"), request.caller)
        except AlreadyExistsError as exc:
            return error_response(409, exc.message)
        except ResourceExhaustedError as exc:
            return error_response(507, exc.message)
        return cloud.EMPTY_OK
