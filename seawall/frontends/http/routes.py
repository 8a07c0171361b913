"""The HTTP/REST frontend: KServe v2 + Triton routes over `server`, mapped onto the InferenceServer.

Imports `core.server`, `core.types`, `errors`, `security`, `status` and the HTTP codec/server.
The stack is [error mapping] → [security policy] → [method check] → [handler], as in Triton.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import orjson

import seawall.core.offload as offload
from seawall.core.server import InferenceServer, config_to_dict, require_valid_model_name
from seawall.core.types import DURATION_STATISTICS, Duration, ModelMetadata, ModelStatistics, TensorMetadata
from seawall.errors import DecoupledModelError, InvalidArgumentError, SeawallError, UnsupportedError
from seawall.frontends.http import codec as http_codec
from seawall.frontends.http import extensions, generate
from seawall.frontends.http.body import BodyBudget
from seawall.frontends.http.errors import failure_reply, status_reply
from seawall.frontends.http.server import (
    HeadCheck,
    HttpRequest,
    HttpResponse,
    HttpServer,
    OverHttpServer,
    error_response,
)
from seawall.options import Options
from seawall.security import tls
from seawall.security.policy import ApiPolicy, Keys

if TYPE_CHECKING:
    from seawall.core.served import ServedModel
    from seawall.core.types import InferRequest

logger = logging.getLogger(__name__)

_MODEL = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[0-9]+))?"
_GET, _POST, _GET_POST = frozenset({"GET"}), frozenset({"POST"}), frozenset({"GET", "POST"})


@dataclass(frozen=True, slots=True)
class Route:
    """One row of the route table: methods, full-match path pattern, API category, handler method name."""

    methods: frozenset[str]
    pattern: str
    category: str
    handler: str  # "" for a route Seawall does not implement yet: 501 naming `feature`
    feature: str = ""


_SHM = r"/v2/(?P<kind>system|cuda)sharedmemory(?:/region/(?P<region>[^/]+))?"
_REPOSITORY = r"/v2/repository(?:/(?P<repository>[^/]+))?"

#: Every HTTP route, in Triton's matching order (protocol.md §1.1); the first full match wins.
ROUTES: tuple[Route, ...] = (
    Route(_GET, r"/v2/models/stats", "statistics", "_model_statistics"),
    Route(_GET_POST, r"/v2/logging", "logging", "_logging"),
    Route(_GET, _MODEL, "metadata", "_model_metadata"),
    Route(_GET, _MODEL + r"/ready", "health", "_model_ready"),
    Route(_GET, _MODEL + r"/config", "model-config", "_model_config"),
    Route(_GET, _MODEL + r"/stats", "statistics", "_model_statistics"),
    Route(_POST, _MODEL + r"/infer", "inference", "_infer"),
    Route(_POST, _MODEL + r"/generate", "inference", "_generate"),
    Route(_POST, _MODEL + r"/generate_stream", "inference", "_generate_stream"),
    Route(_GET_POST, r"/v2/models/(?P<model>[^/]+)/trace/setting", "trace", "_trace_setting"),
    Route(_GET, r"/v2", "metadata", "_server_metadata"),
    Route(_GET, r"/v2/health/live", "health", "_health_live"),
    Route(_GET, r"/v2/health/ready", "health", "_health_ready"),
    Route(_GET, _SHM + r"/status", "shared-memory", "_shm_status"),
    Route(_POST, _SHM + r"/register", "shared-memory", "_shm_register"),
    Route(_POST, _SHM + r"/unregister", "shared-memory", "_shm_unregister"),
    Route(_POST, _REPOSITORY + r"/index", "model-repository", "_repository_index"),
    Route(_POST, _REPOSITORY + r"/models/(?P<model>[^/]+)/load", "model-repository", "_repository_load"),
    Route(_POST, _REPOSITORY + r"/models/(?P<model>[^/]+)/unload", "model-repository", "_repository_unload"),
    Route(_GET_POST, r"/v2/trace/setting", "trace", "_trace_setting"),
)

_COMPILED = tuple((route, re.compile(route.pattern)) for route in ROUTES)
_EMPTY_OK = HttpResponse(200, (), "text/plain")
_EMPTY_BAD = HttpResponse(400, (), "text/plain")
_EMPTY_JSON = HttpResponse(200, (), "application/json")  # load, unload, register, unregister
_NOT_FOUND = error_response(404, "Not Found")
_METHOD_NOT_ALLOWED = error_response(405, "Method Not Allowed")
_REPOSITORY_NAME = "'repository_name' specification is not supported"

_Endpoint = Callable[[HttpRequest, "Mapping[str, str]"], Awaitable[HttpResponse]]


def _json(document: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, (orjson.dumps(document),), "application/json")


def _tensor_metadata(tensors: tuple[TensorMetadata, ...]) -> list[dict[str, Any]]:
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in tensors]


def model_metadata_json(metadata: ModelMetadata) -> dict[str, Any]:
    return {
        "name": metadata.name,
        "versions": list(metadata.versions),
        "platform": metadata.platform,
        "inputs": _tensor_metadata(metadata.inputs),
        "outputs": _tensor_metadata(metadata.outputs),
    }


def _duration(value: Duration) -> dict[str, int]:
    return {"count": value.count, "ns": value.ns}


def statistics_json(stats: ModelStatistics) -> dict[str, Any]:
    """One entry of `model_stats` (protocol.md §3.5)."""
    return {
        "name": stats.name,
        "version": stats.version,
        "last_inference": stats.last_inference,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {name: _duration(getattr(stats, name)) for name in DURATION_STATISTICS},
        "response_stats": {},
        "batch_stats": [
            {
                "batch_size": b.batch_size,
                "compute_input": _duration(b.compute_input),
                "compute_infer": _duration(b.compute_infer),
                "compute_output": _duration(b.compute_output),
            }
            for b in stats.batch_stats
        ],
        "memory_usage": [],
    }


@functools.lru_cache(maxsize=1024)  # clients repeat their paths; a bounded cache cannot be flooded
def _route(path: str) -> tuple[Route, Mapping[str, str] | None]:
    """The route of `path` and its named groups (read-only), or (ROUTES[0], None) when nothing matches."""
    for route, pattern in _COMPILED:
        match = pattern.fullmatch(path)
        if match is not None:
            return route, MappingProxyType({k: v for k, v in match.groupdict().items() if v is not None})
    return ROUTES[0], None


class HttpFrontend(OverHttpServer):
    """Serves the KServe v2 / Triton HTTP API of `server` on `options.http`."""

    def __init__(
        self, server: InferenceServer, options: Options, keys: Keys | None = None, budget: BodyBudget | None = None
    ) -> None:
        self._server = server
        self._options = options
        self._limits = options.limits
        # `keys`: the live restrictions when key files rotate; else the start-up ones
        self._policy = ApiPolicy(keys if keys is not None else options.http.restricted)
        self._check_head: HeadCheck = self.check_head  # one bound method: `handle` knows the requests it passed
        self._endpoints: dict[str, _Endpoint] = {r.handler: getattr(self, r.handler) for r in ROUTES if r.handler}
        self._http = HttpServer(
            self.handle,
            options.limits,
            options.http.address,
            options.http.port,
            options.http.reuse_port,
            ssl_context=tls.listener_ssl_context(options.http.tls, "http"),
            head_check=self._check_head,
            budget=budget,
        )

    def check_head(self, method: str, path: str, headers: Mapping[str, str]) -> HttpResponse | None:
        """Route, restriction and method of a request's head: the refusal, or None (`HeadCheck`)."""
        route, groups = _route(path)
        if groups is None:
            return _NOT_FOUND
        try:
            self._policy.authorize(route.category, headers.get)
        except SeawallError as exc:
            logger.debug("%s %r: %s", method, path, exc.message)
            return status_reply(exc)
        if method not in route.methods:
            return _METHOD_NOT_ALLOWED
        return None

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Route, authorize, check the method, run the handler; every error becomes a JSON error reply."""
        route, groups = _route(request.path)
        if groups is None:
            return _NOT_FOUND

        try:  # inline, not through `answer`: a closure and a coroutine less on every request
            if request.checked_by is not self._check_head:  # else `check_head` passed it already, on its head
                self._policy.authorize(route.category, request.headers.get)
                if request.method not in route.methods:
                    return _METHOD_NOT_ALLOWED
            if not route.handler:
                raise UnsupportedError(f"{route.feature} is not supported yet")
            return await self._endpoints[route.handler](request, groups)
        except Exception as exc:
            model, version = groups.get("model", ""), groups.get("version", "")
            where = "%s %r (model %r version %r)"
            return failure_reply(exc, status_reply, logger, where, request.method, request.path, model, version)

    # handlers ----------------------------------------------------------------------------------------
    async def _health_live(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        return _EMPTY_OK if self._server.is_live() else _EMPTY_BAD

    async def _health_ready(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        return _EMPTY_OK if self._server.is_ready() else _EMPTY_BAD

    async def _server_metadata(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        meta = self._server.server_metadata()
        return _json({"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)})

    async def _model_metadata(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        metadata = self._server.model_metadata(groups["model"], groups.get("version", ""))
        return _json(model_metadata_json(metadata))

    async def _model_ready(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        if await self._server.model_ready_checked(groups["model"], groups.get("version", "")):
            return _EMPTY_OK
        return error_response(400, "Model version not ready")

    async def _model_config(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        config = self._server.model_config(groups["model"], groups.get("version", ""))
        return _json(config_to_dict(config))

    async def _model_statistics(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        stats = self._server.model_statistics(groups.get("model", ""), groups.get("version", ""))
        return _json({"model_stats": [statistics_json(s) for s in stats]})

    async def _infer(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        model, version = groups["model"], groups.get("version", "")
        require_valid_model_name(model)  # as every other route: the name is judged before the body
        body = request.body
        length = http_codec.parse_header_length(request.headers.get("inference-header-content-length"), len(body))
        server = self._server
        # light work inline, not through `offload.run` and `resolve`: a coroutine less each on every request
        if len(body) > offload.HEAVY_BODY_BYTES:
            served, decoded = await self._decode_heavy(body, length, model, version)
        elif length == 0 or (length is None and not body):
            # resolve, then decode with the model's raw-input layout
            served = server.model(model, version) if server.resolves_at_once else await server.resolve(model, version)
            decoded = http_codec.decode_raw_request(body, model, version, served.raw_input, served.limits)
        else:
            decoded = http_codec.decode_infer_request(body, length, model, version, self._limits)
            served = server.model(model, version) if server.resolves_at_once else await server.resolve(model, version)
        try:
            response = await served.infer(decoded.request)
        except DecoupledModelError:
            raise UnsupportedError("HTTP end point doesn't support models with decoupled transaction policy") from None
        if offload.is_heavy(response.outputs):
            parts, header_length = await http_codec.encode_infer_reply(response, decoded)
        else:
            parts, header_length = http_codec.encode_reply(response, decoded)
        if header_length is None:
            return HttpResponse(200, parts, "application/json")
        return HttpResponse(
            200, parts, "application/octet-stream", [("Inference-Header-Content-Length", str(header_length))]
        )

    async def _decode_heavy(
        self, body: bytes, length: int | None, model: str, version: str
    ) -> tuple[ServedModel, http_codec.DecodedInfer]:
        """`_infer`'s resolve and decode of a body too large to decode on the event loop."""
        if length == 0 or (length is None and not body):
            served = await self._server.resolve(model, version)
            raw = served.raw_input
            decoded = await offload.run(True, http_codec.decode_raw_request, body, model, version, raw, served.limits)
            return served, decoded
        decoded = await http_codec.decode_large(self._http.budget.json_gate, body, length, model, version, self._limits)
        return await self._server.resolve(model, version), decoded

    # generate extension ------------------------------------------------------------------------------
    async def _generate(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        served, decoded = await self._generate_request(request, groups)
        return await generate.generate_reply(served.stream(decoded))

    async def _generate_stream(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        served, decoded = await self._generate_request(request, groups)
        context = f"POST {request.path!r} (model {served.name!r} version {served.version})"
        return await generate.generate_stream_reply(served.stream(decoded), context)

    async def _generate_request(
        self, request: HttpRequest, groups: Mapping[str, str]
    ) -> tuple[ServedModel, InferRequest]:
        """The served model (resolved first: an unknown model wins over a bad body, as in Triton) and the request
        its input metadata maps the body to."""
        model, version = groups["model"], groups.get("version", "")
        served = await self._server.resolve(model, version)
        spec = served.spec
        batch = (-1,) if spec.max_batch_size > 0 else ()
        inputs = {i.name: TensorMetadata(i.name, i.datatype, batch + i.dims) for i in spec.inputs.values()}
        args = (request.body, inputs, model, version, self._limits)
        if len(request.body) > offload.HEAVY_BODY_BYTES:  # one JSON document: see BodyBudget.json_gate
            return served, await offload.run_alone(self._http.budget.json_gate, generate.decode_generate_request, *args)
        return served, generate.decode_generate_request(*args)

    # model repository extension ---------------------------------------------------------------------
    async def _repository_index(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        if "repository" in groups:  # Triton ignores the name here; answering for another repository would lie
            raise UnsupportedError(_REPOSITORY_NAME)
        ready = extensions.index_ready(request.body, self._limits)
        return _json(extensions.index_json(self._server.repository_index(ready)))

    async def _repository_load(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        if "repository" in groups:
            raise UnsupportedError(_REPOSITORY_NAME)
        load = extensions.load_request(request.body, self._limits)
        await self._server.load_model(groups["model"], load.config, load.files, caller=request.caller)
        return _EMPTY_JSON

    async def _repository_unload(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        if "repository" in groups:
            raise UnsupportedError(_REPOSITORY_NAME)
        dependents = extensions.unload_dependents(request.body, self._limits)
        await self._server.unload_model(groups["model"], dependents, caller=request.caller)
        return _EMPTY_JSON

    # shared memory extension ------------------------------------------------------------------------
    async def _shm_status(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        region = groups.get("region", "")
        if groups["kind"] == "cuda":
            return _json(extensions.shm_status_json(self._server.cuda_shared_memory_status(region)))
        return _json(extensions.shm_status_json(self._server.system_shared_memory_status(region)))

    async def _shm_register(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        kind, region = groups["kind"], groups.get("region", "")
        if not region:
            raise InvalidArgumentError(f"'region name' is necessary to register {kind} shared memory region")
        if kind == "cuda":
            self._server.register_cuda_shared_memory(region, caller=request.caller)
            return _EMPTY_JSON
        body = extensions.shm_registration(request.body, self._limits)
        self._server.register_system_shared_memory(region, body.key, body.offset, body.byte_size, caller=request.caller)
        return _EMPTY_JSON

    async def _shm_unregister(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        if groups["kind"] == "system":
            self._server.unregister_system_shared_memory(groups.get("region", ""), caller=request.caller)
        return _EMPTY_JSON  # no CUDA region can exist: unregistering one is a no-op, as in Triton

    # trace and logging extensions -------------------------------------------------------------------
    async def _trace_setting(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        model = groups.get("model", "")
        if request.method == "GET":
            return _json(extensions.trace_json(self._server.get_trace_settings(model)))
        changes = extensions.trace_changes(request.body, self._limits)
        return _json(extensions.trace_json(self._server.update_trace_settings(changes, model, caller=request.caller)))

    async def _logging(self, request: HttpRequest, groups: Mapping[str, str]) -> HttpResponse:
        if request.method == "GET":
            return _json(self._server.log_settings_dict())
        changes = extensions.log_changes(request.body, self._limits)
        return _json(self._server.update_log_settings(changes, caller=request.caller))
